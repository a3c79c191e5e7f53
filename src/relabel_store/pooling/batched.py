"""LabelPooling for a whole batch in torch: :class:`BatchPooler` and :func:`stack_boxes`.

The same numbers as :func:`relabel_store.pooling.pool` (whose docstring states the RoIAlign rules
both follow), for a batch on any device: the RoIAlign weights of every sample at once, the logits
of the whole batch from one ``scatter_add``. Needs torch (``pip install 'relabel-store[torch]'``);
reading a store and pooling one record with :func:`~relabel_store.pooling.pool` do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, ConfigurationError, InvalidBoxError
from relabel_store.pooling import CropBox, PoolingSpec
from relabel_store.pooling._roialign import box_problem, original_label_error, sampling_window
from relabel_store.pooling.affine import CLIP_TOLERANCE, canonical_batch
from relabel_store.pooling.core import Region, _compat_region_error

with requires_extra("torch", "batched pooling (BatchPooler)"):
    import torch

__all__ = ["BatchPooler", "stack_boxes", "stack_regions"]


def stack_boxes(boxes: Sequence[CropBox]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate crop boxes into ``(boxes (B, 4) float64, flipped (B,) bool)`` for BatchPooler.

    float64 keeps the coordinates exactly as the CropBoxes hold them, so the batch result
    matches :func:`pool` bit for bit in its RoIAlign decisions.
    """
    coords = torch.tensor([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=torch.float64)
    flipped = torch.tensor([b.flipped for b in boxes], dtype=torch.bool)
    return coords.reshape(len(boxes), 4), flipped


_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def stack_regions(regions: Sequence[CropBox | Region], clips: int | None = None) -> torch.Tensor:
    """Collate regions (and crop boxes, as the regions they are) for
    :meth:`BatchPooler.forward`'s ``regions``: (B, 3, 3) float64 matrices, or (B, 1 + K, 3, 3)
    when some region has clips (matrix first, then K clips, padded with identities, which clip
    nothing). ``clips`` fixes K (at least the most clips of any region)."""
    found = [r if isinstance(r, Region) else Region.from_box(r) for r in regions]
    most = max((len(r.clips) for r in found), default=0)
    if clips is None and most == 0:
        rows = [r.matrix for r in found]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 3, 3)
    count = most if clips is None else clips
    if count < most:
        raise ConfigurationError(f"stack_regions(clips={clips}): a region has {most} clips")
    stacked = [[r.matrix, *r.clips, *[_IDENTITY] * (count - len(r.clips))] for r in found]
    return torch.tensor(stacked, dtype=torch.float64).reshape(len(found), 1 + count, 3, 3)


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
        *,
        regions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Targets (B, C), or (B, oh, ow, C) for a larger output grid.

        ``indices``/``values``: (B, H, W, K) top-k ids (any integer dtype) and logits.
        ``boxes``: (B, 4) normalised (x0, y0, x1, y1), float64 preferred (see
        :func:`stack_boxes`); None means the whole image. ``flipped``: (B,) bool, None for no
        flips. ``labels``: (B,) original labels (-1 unknown), needed when
        ``spec.original_weight > 0``. ``regions``: (B, 3, 3) :class:`Region` matrices (see
        :func:`stack_regions`) in place of ``boxes``/``flipped``, for rotated, sheared or
        projective crops; they are read on the host (a copy of B x 9 numbers) to lay out the
        sampling grids. Rows without rotation or shear are pooled as the boxes they are.
        """
        if indices.dim() != 4 or indices.shape != values.shape:
            raise ConfigurationError(
                "indices and values must both have shape (B, H, W, K), got "
                f"{tuple(indices.shape)} and {tuple(values.shape)}"
            )
        batch, height, width, k = indices.shape
        device = values.device
        spec = self.spec
        oh, ow = spec.grid
        # float64 box arithmetic, like pool(); MPS has no float64.
        box_dtype = torch.float32 if device.type == "mps" else torch.float64

        warped = None  # the regions' matrices on the host, when some rows are not boxes
        if regions is not None:
            if boxes is not None or flipped is not None:
                raise ConfigurationError(
                    "give either boxes (and flipped) or regions to BatchPooler, not both"
                )
            if regions.dim() == 4:
                _check_shape("regions", regions, (batch, regions.shape[1], 3, 3))
            else:
                _check_shape("regions", regions, (batch, 3, 3))
            if not spec.is_global:
                stacked = regions.detach().to("cpu", torch.float64).numpy()
                if stacked.ndim == 3:
                    stacked = stacked[:, None]
                host, clips = stacked[:, 0], stacked[:, 1:]
                check_regions(host)  # on the host copy: no device sync, so always
                if not np.isfinite(clips).all():
                    raise InvalidBoxError("region clips must be finite")
                unclipped = (clips == np.array(_IDENTITY).reshape(3, 3)).all(axis=(1, 2, 3))
                aligned = _aligned(host, oh) if unclipped.all() else None
                if aligned is None:  # rotated, sheared, projective or upside-down rows
                    if spec.compat is not None:
                        raise _compat_region_error(spec.compat)
                    warped = stacked
                else:
                    boxes, flipped = (t.to(device) for t in aligned)
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
        if warped is not None:
            cells = _region_cells(warped, height, width, oh, ow, device)
            weights = cells.repeat_interleave(k, dim=2) if k > 1 else cells
            return self._targets(weights, indices, values, labels)
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
        return self._targets(weights, indices, values, labels)

    def _targets(
        self,
        weights: torch.Tensor,
        indices: torch.Tensor,
        values: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """Targets from the float32 weight of every stored entry in every bin,
        (B, bins, H*W*K): one ``scatter_add`` of weighted logits, softmax, label mixing."""
        batch, bins, entries = weights.shape
        device, num_classes, spec = values.device, self.num_classes, self.spec
        oh, ow = spec.grid
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


def check_regions(matrices: np.ndarray) -> None:
    """Refuse (B, 3, 3) region matrices that :class:`Region` would refuse, naming the row."""
    m = np.asarray(matrices, dtype=np.float64)
    finite: np.ndarray = np.asarray(np.isfinite(m).all(axis=(1, 2)))
    corners = m[:, 2, 0, None] * np.array([0, 1, 0, 1]) + m[:, 2, 1, None] * np.array([0, 0, 1, 1])
    corners += m[:, 2, 2, None]
    one_side: np.ndarray = (corners > 0).all(axis=1) | (corners < 0).all(axis=1)
    with np.errstate(all="ignore"):
        scale = np.maximum(np.abs(m).max(axis=(1, 2)), 1.0)
        regular: np.ndarray = (
            np.abs(np.linalg.det(np.where(finite[:, None, None], m, 0.0))) >= 1e-12 * scale**3
        )
    bad = np.flatnonzero(~(finite & one_side & regular))
    if len(bad):
        row = int(bad[0])
        try:
            Region(tuple(m[row].ravel().tolist()))
        except InvalidBoxError as exc:
            raise InvalidBoxError(f"invalid region in row {row}: {exc}") from None
        raise InvalidBoxError(f"invalid region in row {row}: {m[row].tolist()}")


def _aligned(matrices: np.ndarray, oh: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(boxes (B, 4) float64, flipped (B,))`` when every region is an axis-aligned box
    (mirrored vertically only where that cannot show: 1-row grids), else None."""
    m = matrices
    a, b, c, d, e, f = (m[:, i // 3, i % 3] for i in range(6))
    box_like = (b == 0.0) & (d == 0.0) & (m[:, 2, 0] == 0.0) & (m[:, 2, 1] == 0.0)
    if not box_like.all() or (oh > 1 and (e < 0.0).any()):
        return None
    x0, x1 = np.where(a < 0, c + a, c), np.where(a < 0, c, c + a)
    y0, y1 = np.where(e < 0, f + e, f), np.where(e < 0, f, f + e)
    boxes = torch.from_numpy(np.stack([x0, y0, x1, y1], axis=1))
    return boxes, torch.from_numpy(a < 0)


def _region_cells(
    stacked: np.ndarray, height: int, width: int, oh: int, ow: int, device: torch.device
) -> torch.Tensor:
    """(B, oh*ow, H*W) float32 weight of every map cell in every bin, for any regions.

    Axis-aligned rows get RoIAlign's own box weights (:func:`_axis_weights_torch`, mirrored as
    their matrix says); the others the sampling grid of :mod:`relabel_store.pooling.affine`,
    padded to the batch's largest counts and masked. float64 coordinates (float32 on MPS).
    """
    batch = len(stacked)
    dtype = torch.float32 if device.type == "mps" else torch.float64
    out = torch.zeros(batch, oh, ow, height, width, dtype=torch.float32, device=device)
    m, clips = stacked[:, 0], stacked[:, 1:]
    unclipped = (clips == np.array(_IDENTITY).reshape(3, 3)).all(axis=(1, 2, 3))
    box_like = (m[:, 0, 1] == 0.0) & (m[:, 1, 0] == 0.0) & (m[:, 2, 0] == 0.0) & (m[:, 2, 1] == 0.0)
    box_like &= unclipped
    rows = np.flatnonzero(box_like)
    if len(rows):
        a, c, e, f = m[rows, 0, 0], m[rows, 0, 2], m[rows, 1, 1], m[rows, 1, 2]
        x0, x1 = np.where(a < 0, c + a, c), np.where(a < 0, c, c + a)
        y0, y1 = np.where(e < 0, f + e, f), np.where(e < 0, f, f + e)
        tensor = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device, dtype)  # noqa: E731
        wy = _axis_weights_torch(tensor(y0), tensor(y1), oh, height, None)
        wx = _axis_weights_torch(tensor(x0), tensor(x1), ow, width, None)
        hflip = torch.from_numpy(a < 0).to(device)[:, None, None]
        vflip = torch.from_numpy(e < 0).to(device)[:, None, None]
        wx = torch.where(hflip, wx.flip(1), wx)
        wy = torch.where(vflip, wy.flip(1), wy)
        index = torch.from_numpy(rows).to(device)
        out[index] = wy[:, :, None, :, None] * wx[:, None, :, None, :]
    rows = np.flatnonzero(~box_like)
    if len(rows):
        index = torch.from_numpy(rows).to(device)
        out[index] = _warped_cells(m[rows], clips[rows], height, width, oh, ow, device, dtype)
    return out.reshape(batch, oh * ow, height * width)


def _warped_cells(
    matrices: np.ndarray,
    clips: np.ndarray,
    height: int,
    width: int,
    oh: int,
    ow: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(n, oh, ow, H, W) float32 cell weights of rotated, sheared or projective regions."""
    mc_np, flip_u, flip_v, gx_np, gy_np, to_output = canonical_batch(
        matrices, height, width, oh, ow
    )
    n = len(mc_np)
    big_x, big_y = int(gx_np.max()), int(gy_np.max())
    mc = torch.from_numpy(mc_np).to(device, dtype)
    gx = torch.from_numpy(gx_np).to(device, dtype)
    gy = torch.from_numpy(gy_np).to(device, dtype)
    # Output positions: (n, ow, Gx) along x, (n, oh, Gy) along y; points beyond a row's count
    # are masked.
    ax = torch.arange(big_x, device=device, dtype=dtype)
    ay = torch.arange(big_y, device=device, dtype=dtype)
    jx = torch.arange(ow, device=device, dtype=dtype)
    iy = torch.arange(oh, device=device, dtype=dtype)
    u = (jx[None, :, None] + (ax[None, None, :] + 0.5) / gx[:, None, None]) / ow
    v = (iy[None, :, None] + (ay[None, None, :] + 0.5) / gy[:, None, None]) / oh
    used = (ax[None, None, :] < gx[:, None, None])[:, None, None, :, :] & (
        ay[None, None, :] < gy[:, None, None]
    )[:, :, :, None, None]  # (n, oh, Gy, ow, Gx)
    u5 = u[:, None, None, :, :]
    v5 = v[:, :, :, None, None]

    def coord(row: int) -> torch.Tensor:
        k = mc[:, row]
        return k[:, 0, None, None, None, None] * u5 + (
            k[:, 1, None, None, None, None] * v5 + k[:, 2, None, None, None, None]
        )

    xs, ys = coord(0), coord(1)
    projective = (mc[:, 2, 0] != 0) | (mc[:, 2, 1] != 0)
    if bool(projective.any()):
        ws = torch.where(projective[:, None, None, None, None], coord(2), 1.0)
        xs, ys = xs / ws, ys / ws
    inside = used & (xs >= -1.0) & (xs <= width) & (ys >= -1.0) & (ys <= height)
    if clips.shape[1]:  # (n, K, 3, 3): in canonical output coordinates
        canon = torch.from_numpy(clips @ to_output[:, None]).to(device, dtype)
        for k in range(canon.shape[1]):
            c = canon[:, k, :, :, None, None, None, None]
            w = c[:, 2, 0] * u5 + c[:, 2, 1] * v5 + c[:, 2, 2]
            for row in (0, 1):
                s = c[:, row, 0] * u5 + c[:, row, 1] * v5 + c[:, row, 2]
                inside = inside & (s >= -CLIP_TOLERANCE * w) & (s <= (1.0 + CLIP_TOLERANCE) * w)
    xs = xs.clamp(0.0, width - 1.0)
    ys = ys.clamp(0.0, height - 1.0)
    x_lo, y_lo = xs.floor(), ys.floor()
    fx, fy = xs - x_lo, ys - y_lo
    x_hi = (x_lo + 1.0).clamp_max(width - 1.0)
    y_hi = (y_lo + 1.0).clamp_max(height - 1.0)
    share = inside.to(dtype) / (gx * gy)[:, None, None, None, None]
    bins = (iy[:, None, None, None] * ow + jx[None, None, :, None]).expand(oh, big_y, ow, big_x)
    base = bins[None] * (height * width)
    corners = [(y_lo, x_lo), (y_lo, x_hi), (y_hi, x_lo), (y_hi, x_hi)]
    weights = [(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]
    index = torch.cat([(base + (cy * width + cx)).reshape(n, -1) for cy, cx in corners], dim=1).to(
        torch.int64
    )
    src = torch.cat([(share * w).reshape(n, -1) for w in weights], dim=1)
    cells = torch.zeros(n, oh * ow * height * width, dtype=dtype, device=device)
    cells.scatter_add_(1, index, src)
    cells = cells.reshape(n, oh, ow, height, width).to(torch.float32)
    flip_v_t = torch.from_numpy(flip_v).to(device)[:, None, None, None, None]
    flip_u_t = torch.from_numpy(flip_u).to(device)[:, None, None, None, None]
    cells = torch.where(flip_v_t, cells.flip(1), cells)
    return torch.where(flip_u_t, cells.flip(2), cells)


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
