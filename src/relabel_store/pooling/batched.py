"""LabelPooling for a whole batch in torch: :class:`BatchPooler` and :func:`stack_boxes`.

The same numbers as :func:`relabel_store.pooling.pool` (whose docstring states the RoIAlign rules
both follow), for a batch on any device: the RoIAlign weights of every sample at once, the logits
of the whole batch from one ``scatter_add``. Needs torch (``pip install 'relabel-store[torch]'``);
reading a store and pooling one record with :func:`~relabel_store.pooling.pool` do not.
"""

from __future__ import annotations

from collections.abc import Sequence

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, ConfigurationError, InvalidBoxError
from relabel_store.pooling import CropBox, PoolingSpec
from relabel_store.pooling._roialign import box_problem, original_label_error, sampling_window

with requires_extra("torch", "batched pooling (BatchPooler)"):
    import torch

__all__ = ["BatchPooler", "stack_boxes"]


def stack_boxes(boxes: Sequence[CropBox]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate crop boxes into ``(boxes (B, 4) float64, flipped (B,) bool)`` for BatchPooler.

    float64 keeps the coordinates exactly as the CropBoxes hold them, so the batch result
    matches :func:`pool` bit for bit in its RoIAlign decisions.
    """
    coords = torch.tensor([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=torch.float64)
    flipped = torch.tensor([b.flipped for b in boxes], dtype=torch.bool)
    return coords.reshape(len(boxes), 4), flipped


def _axis_weights_torch(
    lo: torch.Tensor, hi: torch.Tensor, n_out: int, size: int, max_grid: int | None
) -> torch.Tensor:
    """(B, n_out, size) float32 RoIAlign weights along one axis for a batch of intervals.

    ``lo``/``hi`` are normalised (B,) coordinates. Every bin lists the same number of sampling
    points: the window of its ``ceil(bin_size)`` points that can fall within [-1, size]
    (:func:`~relabel_store.pooling._roialign.sampling_window`; all of them for boxes up to about twice the map), points beyond
    its own count masked out. ``max_grid`` is an upper bound on the sampling counts, or None
    to take the batch maximum (reads one number back from the device).
    """
    f32 = torch.float32
    start = (lo * size - 0.5).to(f32)
    end = (hi * size - 0.5).to(f32)
    length = (end - start).clamp_min(1.0)
    bin_size = length / n_out
    grid = torch.ceil(bin_size)  # (B,) float
    if max_grid is None:
        max_grid = max(int(grid.max()), 1) if grid.numel() else 1
    count = min(max_grid, sampling_window(size))
    device = lo.device
    firsts = start[:, None] + torch.arange(n_out, device=device, dtype=f32) * bin_size[:, None]
    # First point of each bin's window (see _window); 0 whenever all points fit.
    step = (bin_size / grid)[:, None]
    first_g = torch.floor((-1.0 - firsts) / step - 0.5) - 2.0
    first_g = torch.minimum(first_g.clamp_min(0.0), (grid - count).clamp_min(0.0)[:, None])
    steps = first_g[:, :, None] + torch.arange(count, device=device, dtype=f32)  # (B, n_out, G)
    offsets = ((steps + 0.5) * bin_size[:, None, None]) / grid[:, None, None]
    points = firsts[:, :, None] + offsets
    inside = (points >= -1.0) & (points <= size) & (steps < grid[:, None, None])
    cells = torch.arange(size, device=device, dtype=f32)
    hat = (1.0 - (points.clamp(0.0, size - 1.0)[..., None] - cells).abs()).clamp_min_(0.0)
    hat = hat * inside[..., None]
    return hat.sum(dim=2) / grid[:, None, None]


class BatchPooler(torch.nn.Module):
    """LabelPooling for a whole batch in torch: same numbers as :func:`pool`, any device.

    The RoIAlign weights of every sample are computed at once, and the logits of the whole
    batch come from one ``scatter_add``. Results are float32 on the inputs' device. With
    ``validate=True`` (default) every call runs :meth:`check`, which reads a few numbers back
    from the device; ``validate=False`` skips it (call :meth:`check` yourself where the inputs
    still are on the CPU, as :class:`~relabel_store.loaders.LabelPooler` does), and then boxes
    must satisfy :class:`CropBox`'s rules and labels the spec's.
    """

    def __init__(
        self, num_classes: int, spec: PoolingSpec | None = None, *, validate: bool = True
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ArgumentTypeError(f"num_classes must be an int, got {num_classes!r}")
        if num_classes < 1:
            raise ConfigurationError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.spec = spec if spec is not None else PoolingSpec()
        self.validate = validate

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, spec={self.spec}"

    def forward(
        self,
        indices: torch.Tensor,
        values: torch.Tensor,
        boxes: torch.Tensor | None = None,
        flipped: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Targets (B, C), or (B, oh, ow, C) for a larger output grid.

        ``indices``/``values``: (B, H, W, K) top-k ids (any integer dtype) and logits.
        ``boxes``: (B, 4) normalised (x0, y0, x1, y1), float64 preferred (see
        :func:`stack_boxes`); None means the whole image. ``flipped``: (B,) bool, None for no
        flips. ``labels``: (B,) original labels (-1 unknown), needed when
        ``spec.original_weight > 0``.
        """
        if indices.dim() != 4 or indices.shape != values.shape:
            raise ConfigurationError(
                "indices and values must both have shape (B, H, W, K), got "
                f"{tuple(indices.shape)} and {tuple(values.shape)}"
            )
        batch, height, width, k = indices.shape
        device = values.device
        num_classes, spec = self.num_classes, self.spec
        oh, ow = spec.grid
        # float64 box arithmetic, like pool(); MPS has no float64.
        box_dtype = torch.float32 if device.type == "mps" else torch.float64

        if boxes is not None and not spec.is_global:
            _check_shape("boxes", boxes, (batch, 4))
        if spec.original_weight > 0.0:
            if labels is None:
                raise ConfigurationError(
                    f"original_weight={spec.original_weight} needs labels of shape ({batch},)"
                )
            _check_shape("labels", labels, (batch,))
        if self.validate:
            self.check(boxes, labels)
        if spec.is_global or boxes is None:
            boxes = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=box_dtype, device=device)
            boxes = boxes.expand(batch, 4)
        else:
            boxes = boxes.to(device=device, dtype=box_dtype)
        if spec.compat is not None and not spec.is_global:
            if flipped is not None:
                _check_shape("flipped", flipped, (batch,))
            boxes, indices, values = _official_batch(
                boxes, flipped, indices, values, spec.compat, height, width
            )
            flipped = None  # the official codes never mirror the target, at most the map

        # On CPU the exact sampling-grid maximum is free; elsewhere the window bound avoids a
        # device sync.
        on_cpu = device.type == "cpu"
        wy = _axis_weights_torch(
            boxes[:, 1], boxes[:, 3], oh, height, None if on_cpu else sampling_window(height)
        )
        wx = _axis_weights_torch(
            boxes[:, 0], boxes[:, 2], ow, width, None if on_cpu else sampling_window(width)
        )
        if ow > 1 and flipped is not None and not spec.is_global:
            _check_shape("flipped", flipped, (batch,))
            wx = torch.where(
                flipped.to(device=device, dtype=torch.bool)[:, None, None], wx.flip(1), wx
            )

        bins = oh * ow
        entries = height * width * k
        # Weight of every stored entry, (B, bins, H*W*K): x weights repeated k times first, so
        # that every product below runs over long contiguous rows.
        wxk = wx.repeat_interleave(k, dim=2) if k > 1 else wx  # (B, ow, W*K)
        weights = (wy[:, :, None, :, None] * wxk[:, None, :, None, :]).reshape(batch, bins, entries)
        # In place: on CPU every large temporary costs more than the arithmetic on it.
        src = weights.mul_(values.reshape(batch, 1, entries)).reshape(batch * bins, entries)
        index = indices.reshape(batch, 1, entries).to(torch.int64)
        index = index.expand(batch, bins, entries).reshape(batch * bins, entries)
        logits = torch.zeros(batch * bins, num_classes, dtype=torch.float32, device=device)
        logits.scatter_add_(1, index, src)

        if spec.is_single:
            target = torch.zeros_like(logits)
            target.scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)
        else:
            target = torch.softmax(logits, dim=1)
        target = target.reshape(batch, bins, num_classes)

        weight = spec.original_weight
        if weight > 0.0:
            assert labels is not None  # checked above
            labels = labels.to(device=device, dtype=torch.int64)
            target.mul_(1.0 - weight)
            target.scatter_add_(
                2,
                labels[:, None, None].expand(batch, bins, 1),
                torch.full((batch, bins, 1), weight, dtype=torch.float32, device=device),
            )
        if bins == 1:
            return target.reshape(batch, num_classes)
        return target.reshape(batch, oh, ow, num_classes)

    def check(self, boxes: torch.Tensor | None, labels: torch.Tensor | None = None) -> None:
        """Refuse what :meth:`forward` cannot pool right: a box (B, 4) that :class:`CropBox`
        would refuse (:class:`~relabel_store.errors.InvalidBoxError`), and, when the spec mixes
        in the original label, a label outside ``[0, num_classes)``
        (:class:`~relabel_store.errors.ConfigurationError`). Boxes the spec ignores (global
        variants, None) are not checked. Reads the verdict back from the tensors' device."""
        if boxes is not None and not self.spec.is_global:
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ConfigurationError(f"boxes must have shape (B, 4), got {tuple(boxes.shape)}")
            x0, y0, x1, y1 = boxes.unbind(1)
            ok = torch.isfinite(boxes).all(dim=1) & (x1 > x0) & (y1 > y0)
            if not bool(ok.all()):
                row = int(torch.nonzero(~ok)[0, 0])
                x0v, y0v, x1v, y1v = (float(v) for v in boxes[row].tolist())
                problem = box_problem(x0v, y0v, x1v, y1v) or "invalid"
                raise InvalidBoxError(
                    f"invalid crop box in row {row} (x0={x0v!r}, y0={y0v!r}, x1={x1v!r}, "
                    f"y1={y1v!r}): {problem}"
                )
        weight = self.spec.original_weight
        if weight > 0.0 and labels is not None:
            bad = (labels < 0) | (labels >= self.num_classes)
            if bool(bad.any()):
                row = int(torch.nonzero(bad)[0, 0])
                raise original_label_error(weight, self.num_classes, int(labels[row]), row)


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ConfigurationError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")


# --------------------------------------------------------------------------------------------
# Reproducing the official codes (PoolingSpec.compat): relabel_store.pooling._official_box
# explains the recipe; this is the same for a batch.
# --------------------------------------------------------------------------------------------


def _official_batch(
    boxes: torch.Tensor,
    flipped: torch.Tensor | None,
    indices: torch.Tensor,
    values: torch.Tensor,
    compat: str,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_official_box` for a batch: boxes (B, 4) to pool, and the (mirrored) maps."""
    x0, y0, x1, y1 = boxes.unbind(1)
    flip = None
    if compat == "tokenlabeling" and flipped is not None:
        flip = flipped.to(device=boxes.device, dtype=torch.bool)
        x0, x1 = torch.where(flip, 1.0 - x1, x0), torch.where(flip, 1.0 - x0, x1)
        mirror = flip[:, None, None, None]
        indices = torch.where(mirror, indices.flip(2), indices)
        values = torch.where(mirror, values.flip(2), values)
    f32 = torch.float32
    if compat == "official":
        corners = [c.to(f32) for c in (y0, x0, y1, x1)]
    else:
        top, left = y0.to(f32), x0.to(f32)
        corners = [top, left, top + (y1 - y0).to(f32), left + (x1 - x0).to(f32)]
    top, left, bottom, right = (c * width - 0.5 for c in corners)
    sizes = (width, height, width, height)
    out = torch.stack(
        [
            (c.to(boxes.dtype) + 0.5) / s
            for c, s in zip((top, left, bottom, right), sizes, strict=True)
        ],
        dim=1,
    )
    return out, indices, values
