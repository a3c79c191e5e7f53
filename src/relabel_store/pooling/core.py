"""LabelPooling: turn a stored top-k label map into a soft target for one crop.

ReLabel (Yun et al., CVPR 2021) stores, per training image, the top-k classes and logits of a
dense H x W label map. At training time the official code densifies the map into a C x H x W
tensor, RoIAligns it onto the crop box (``torchvision.ops.roi_align``, ``aligned=False``,
``sampling_ratio=-1``, box ``(x0*W - 0.5, y0*H - 0.5, x1*W - 0.5, y1*H - 0.5)``) and takes a
softmax over all C classes. This module reproduces that result exactly, without ever building
the dense map:

RoIAlign is linear in the map, and its bilinear sampling weights factor into a y part and an x
part (the out-of-range rule, the border clamping and the adaptive sampling grid all act on one
axis at a time). So the pooled logit of class ``c`` is ``sum_{y,x,k} wy[y] * wx[x] * V[y,x,k]``
over the cells whose ``I[y,x,k] == c``: two short weight vectors, one product with the stored
values, one scatter-add into a C-vector, one softmax.

RoIAlign rules replicated here (torchvision's CPU kernel, in float32 like the reference):

- the box is cast to float32; its size is ``max(x1 - x0, 1)`` cells (``aligned=False``);
- each output bin is split into ``ceil(bin_size)`` sampling points per axis, at the centres of
  equal sub-bins; the bin value is the mean over the sampling points;
- a sampling point outside ``[-1, size]`` contributes zero (but still counts in the mean);
  inside it, a point below 0 is clamped to 0 and one beyond ``size - 1`` to ``size - 1``; then
  bilinear interpolation between the two neighbouring cells.

Any finite, non-empty box is pooled that way, also one partly or wholly outside the image (a
crop of a zoomed-out canvas, ``RandomZoomOut``): a box with no image in it pools to all-zero
logits, a uniform target, as RoIAlign gives. Only the sampling points that can fall within
``[-1, size]`` are ever computed (at most ``2 * size + 6`` per bin and axis), so the cost does
not grow with the box.

Two implementations give the same numbers: :func:`pool` here (numpy, one sample, for DataLoader
workers; this module needs numpy only) and :class:`~relabel_store.pooling.batched.BatchPooler`
(torch, a whole batch on any device, one ``scatter_add``) in :mod:`relabel_store.pooling.batched`.
``from relabel_store.pooling import BatchPooler`` still works: it imports torch then.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from relabel_store.errors import ConfigurationError, InvalidBoxError
from relabel_store.pooling._roialign import box_problem, original_label_error, sampling_window
from relabel_store.pooling.affine import region_weights

__all__ = [
    "COMPATS",
    "VARIANTS",
    "Compat",
    "CropBox",
    "PoolingSpec",
    "Region",
    "Variant",
    "pool",
]

Variant = Literal["localized-multi", "global-multi", "localized-single", "global-single"]
"""The paper's ablation: pool the crop box or the whole image; keep the softmax or one-hot it."""

VARIANTS: tuple[str, ...] = get_args(Variant)

Compat = Literal["official", "tokenlabeling"]
"""Reproduce a published recipe, box transposition included (see :class:`PoolingSpec`)."""

COMPATS: tuple[str, ...] = get_args(Compat)

# --------------------------------------------------------------------------------------------
# Crop boxes and the pooling spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CropBox:
    """A crop window in normalised coordinates of the whole original image, plus its flip.

    ``(x0, y0)`` is the top-left and ``(x1, y1)`` the bottom-right corner, x to the right and
    y down, 0..1 over the original image. Boxes partly or wholly outside the image (crops of a
    padded or zoomed-out canvas) are pooled as RoIAlign pools them; empty, inverted and
    non-finite boxes raise :class:`~relabel_store.errors.InvalidBoxError`. ``flipped`` says
    the crop was mirrored horizontally after cropping; it mirrors token-level targets (output
    grids wider than 1).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    flipped: bool = False

    def __post_init__(self) -> None:
        coords = []
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if isinstance(value, str | bytes | bool):
                raise InvalidBoxError(f"CropBox.{name} must be a number, got {value!r}")
            try:
                coords.append(float(value))
            except (TypeError, ValueError):
                raise InvalidBoxError(f"CropBox.{name} must be a number, got {value!r}") from None
        problem = box_problem(*coords)
        if problem is not None:
            raise InvalidBoxError(
                f"invalid crop box (x0={coords[0]!r}, y0={coords[1]!r}, x1={coords[2]!r}, "
                f"y1={coords[3]!r}): {problem}"
            )
        for name, value in zip(("x0", "y0", "x1", "y1"), coords, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "flipped", bool(self.flipped))

    @classmethod
    def from_pixels(
        cls,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        image_size: tuple[int, int],
        flipped: bool = False,
    ) -> CropBox:
        """A box from pixel corners in the original image; ``image_size`` is (height, width)."""
        try:
            height, width = (float(s) for s in image_size)
        except (TypeError, ValueError):
            raise InvalidBoxError(
                f"image_size must be (height, width), got {image_size!r}"
            ) from None
        if not (math.isfinite(height) and math.isfinite(width) and height > 0 and width > 0):
            raise InvalidBoxError(
                f"image_size must be two positive numbers (height, width), got {image_size!r}"
            )
        return cls(x0 / width, y0 / height, x1 / width, y1 / height, flipped)

    @classmethod
    def full(cls, flipped: bool = False) -> CropBox:
        """The whole image (no crop)."""
        return cls(0.0, 0.0, 1.0, 1.0, flipped)


@dataclass(frozen=True, slots=True)
class Region:
    """What an output image shows of the original image, for any affine or projective geometry.

    ``matrix`` (9 floats, a row-major 3 x 3 matrix) maps normalised output coordinates
    ``(u, v, 1)`` (0..1 over the output image, x right, y down) to homogeneous normalised
    coordinates of the whole original image: the point shown at ``(u, v)`` is
    ``(s / w, t / w)`` with ``(s, t, w) = matrix @ (u, v, 1)``. An affine region has the last
    row ``(0, 0, 1)``. A :class:`CropBox` is the region ``s = x0 + (x1 - x0) * u`` (``1 - u``
    when flipped), ``t = y0 + (y1 - y0) * v``.

    :func:`pool` and :class:`~relabel_store.pooling.batched.BatchPooler` take a Region wherever
    they take a CropBox. A region whose matrix has no rotation or shear (zero off-diagonal
    terms, last row ``(0, 0, 1)``) is pooled as the box it is (:meth:`as_box`), exactly as
    RoIAlign pools it; any other is sampled on RoIAlign's grid laid out in output space
    (:mod:`relabel_store.pooling.affine` states the rules). Singular or non-finite matrices,
    and projective ones that send part of the output to infinity, raise
    :class:`~relabel_store.errors.InvalidBoxError`.

    ``clips`` (optional, each 9 floats) are the canvases of intermediate steps: a matrix from
    normalised output coordinates to normalised coordinates of an intermediate image. A point
    of the output shows the original image only where every clip maps it into ``[0, 1]^2``
    (elsewhere it shows an intermediate step's fill: a crop rotated after cropping has corners
    of fill, not of the image around the crop); sampling points outside a clip contribute
    nothing to the mean, as RoIAlign's points outside the map.
    """

    matrix: tuple[float, ...]
    clips: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        # Plain Python on nine floats: a tracker builds one Region per sample.
        clips = []
        for clip in self.clips:
            c = _nine_floats(clip, "Region.clips")
            if len(c) != 9:
                raise InvalidBoxError(f"Region.clips must be 3 x 3 matrices, got {clip!r}")
            clips.append(c)
        object.__setattr__(self, "clips", tuple(clips))
        m = _nine_floats(self.matrix, "Region.matrix")
        if len(m) == 6:  # a 2 x 3 affine matrix
            m = (*m, 0.0, 0.0, 1.0)
        if len(m) != 9:
            raise InvalidBoxError(
                f"Region.matrix must be a 3 x 3 (or 2 x 3 affine) matrix, got {len(m)} numbers"
            )
        g, h, i = m[6], m[7], m[8]
        corners = (i, g + i, h + i, g + h + i)  # the homogeneous w of the output's corners
        if all(w < 0 for w in corners):
            m = tuple(-x for x in m)  # the same projective map
        elif not all(w > 0 for w in corners):
            raise InvalidBoxError(
                "Region.matrix sends part of the output image to infinity (its last row "
                f"{[g, h, i]} changes sign over the output): no image region describes it"
            )
        if m[6] == 0.0 and m[7] == 0.0 and m[8] != 1.0:
            m = tuple(x / m[8] for x in m)
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
        det = (
            m00 * (m11 * m22 - m12 * m21)
            - m01 * (m10 * m22 - m12 * m20)
            + m02 * (m10 * m21 - m11 * m20)
        )
        if abs(det) < 1e-12 * max(max(abs(x) for x in m), 1.0) ** 3:
            raise InvalidBoxError(
                f"Region.matrix {[list(m[0:3]), list(m[3:6]), list(m[6:9])]} is singular: the "
                "output would show a line or a point of the image"
            )
        object.__setattr__(self, "matrix", m)

    @classmethod
    def affine(cls, a: float, b: float, c: float, d: float, e: float, f: float) -> Region:
        """The affine region ``s = a*u + b*v + c``, ``t = d*u + e*v + f`` (normalised)."""
        return cls((a, b, c, d, e, f, 0.0, 0.0, 1.0))

    @classmethod
    def from_box(cls, box: CropBox) -> Region:
        """The region a crop box shows (its flip included)."""
        x_scale, x_offset = (box.x0 - box.x1, box.x1) if box.flipped else (box.x1 - box.x0, box.x0)
        return cls.affine(x_scale, 0.0, x_offset, 0.0, box.y1 - box.y0, box.y0)

    @classmethod
    def from_pixels(
        cls,
        matrix: object,
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> Region:
        """A region from a 3 x 3 (or 2 x 3) matrix in pixels: output pixel coordinates to
        original-image pixel coordinates, both with pixel ``i`` covering ``[i, i + 1)`` (the
        convention of :meth:`CropBox.from_pixels`). Sizes are (height, width)."""
        try:
            m = np.asarray(matrix, dtype=np.float64).reshape(-1)
            (ih, iw), (oh, ow) = ((float(a), float(b)) for a, b in (image_size, output_size))
        except (TypeError, ValueError):
            raise InvalidBoxError(
                "Region.from_pixels needs a 3 x 3 or 2 x 3 matrix and (height, width) sizes, "
                f"got {matrix!r}, {image_size!r}, {output_size!r}"
            ) from None
        if m.size == 6:
            m = np.concatenate([m, [0.0, 0.0, 1.0]])
        if m.size != 9 or not all(math.isfinite(x) and x > 0 for x in (ih, iw, oh, ow)):
            raise InvalidBoxError(
                "Region.from_pixels needs a 3 x 3 or 2 x 3 matrix and positive (height, width) "
                f"sizes, got {m.size} numbers, {image_size!r}, {output_size!r}"
            )
        to_unit = np.diag([1.0 / iw, 1.0 / ih, 1.0])
        from_unit = np.diag([ow, oh, 1.0])
        return cls(tuple((to_unit @ m.reshape(3, 3) @ from_unit).ravel()))

    @property
    def is_affine(self) -> bool:
        """Whether the matrix's last row is ``(0, 0, 1)`` (no perspective)."""
        return self.matrix[6] == 0.0 and self.matrix[7] == 0.0

    def as_box(self) -> tuple[CropBox, bool] | None:
        """``(box, vertically_flipped)`` when the region is an axis-aligned box (no rotation,
        shear or perspective; mirrored along either axis or not), else None."""
        a, b, c, d, e, f, *_ = self.matrix
        if b != 0.0 or d != 0.0 or not self.is_affine or self.clips:
            return None
        x0, x1 = (c + a, c) if a < 0 else (c, c + a)
        y0, y1 = (f + e, f) if e < 0 else (f, f + e)
        return CropBox(x0, y0, x1, y1, flipped=a < 0), e < 0

    def array(self) -> np.ndarray:
        """The matrix as a (3, 3) float64 array."""
        return np.array(self.matrix, dtype=np.float64).reshape(3, 3)


@dataclass(frozen=True, slots=True)
class PoolingSpec:
    """How a label map becomes a target; shared by :func:`pool` and :class:`BatchPooler`.

    - ``variant``: ``"localized-multi"`` (default, the paper's LabelPooling: pool the crop box,
      softmax), ``"global-multi"`` (pool the whole image whatever the crop),
      ``"localized-single"`` / ``"global-single"`` (one-hot of the argmax of the pooled logits).
    - ``output_size``: RoIAlign output grid, ``n`` or ``(oh, ow)``. 1 (or (1, 1)) gives one
      (C,) target per sample; a larger grid gives token-level targets of shape (oh, ow, C),
      mirrored along x when the crop was flipped. Global variants need 1.
    - ``original_weight``: ``w`` in ``target = (1 - w) * pooled + w * onehot(label)``, mixing
      in the dataset's original single label (which must then be known, not -1).
    - ``compat``: None (default) pools the crop box itself. ``"official"`` reproduces
      naver-ai/relabel_imagenet exactly: its box is (top, left, bottom, right) where RoIAlign
      reads (x0, y0, x1, y1), so it pools the crop mirrored across the diagonal, and it ignores
      flips (1x1 targets only). ``"tokenlabeling"`` reproduces zihangJiang/TokenLabeling, which
      transposes the box the same way but flips the map before cropping; it gives token grids
      too. Use them to reproduce those papers' numbers, never for new work (docs: FAQ).
    """

    variant: Variant = "localized-multi"
    output_size: int | tuple[int, int] = 1
    original_weight: float = 0.0
    compat: Compat | None = None
    # Derived once here, read on every pooled sample.
    grid: tuple[int, int] = field(init=False, repr=False, compare=False)
    is_global: bool = field(init=False, repr=False, compare=False)
    is_single: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigurationError(
                f"unknown pooling variant {self.variant!r}; expected one of {VARIANTS}"
            )
        size = self.output_size
        if isinstance(size, int | np.integer):
            pair: tuple[Any, ...] = (size, size)
        else:
            try:
                pair = tuple(size)
            except TypeError:
                pair = ()
        if len(pair) != 2 or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) for s in pair
        ):
            raise ConfigurationError(
                f"output_size must be an int or a pair (oh, ow) of ints, got {size!r}"
            )
        if min(pair) < 1:
            raise ConfigurationError(
                f"output_size must be at least 1 (a 1x1 grid: one target per crop), got {size!r}"
            )
        pair = (int(pair[0]), int(pair[1]))
        object.__setattr__(self, "output_size", 1 if pair == (1, 1) else pair)
        object.__setattr__(self, "grid", pair)
        object.__setattr__(self, "is_global", self.variant.startswith("global"))
        object.__setattr__(self, "is_single", self.variant.endswith("single"))
        if self.is_global and pair != (1, 1):
            raise ConfigurationError(
                f"variant {self.variant!r} pools the whole image into one target; "
                f"output_size must be 1, got {size!r}"
            )
        weight = None  # any real number: a float, numpy or torch scalar; not a string or a bool
        if not isinstance(self.original_weight, str | bytes | bool):
            with contextlib.suppress(TypeError, ValueError):
                weight = float(self.original_weight)
        if weight is None:
            raise ConfigurationError(
                f"original_weight must be a number in [0, 1], got {self.original_weight!r}"
            )
        if not 0.0 <= weight <= 1.0:  # also rejects NaN
            raise ConfigurationError(
                f"original_weight must be in [0, 1], got {self.original_weight!r}"
            )
        object.__setattr__(self, "original_weight", weight)
        _check_compat(self.compat, pair)


def _check_compat(compat: object, grid: tuple[int, int]) -> None:
    if compat is None:
        return
    if compat not in COMPATS:
        raise ConfigurationError(f"unknown compat {compat!r}; expected None or one of {COMPATS}")
    if compat == "official" and grid != (1, 1):
        raise ConfigurationError(
            "compat='official' reproduces naver-ai/relabel_imagenet, which pools one target "
            "per crop (output_size=1); token-level targets with the official box come from "
            "TokenLabeling's code: compat='tokenlabeling'"
        )


_DEFAULT_SPEC = PoolingSpec()


def _nine_floats(matrix: object, what: str) -> tuple[float, ...]:
    """A matrix's entries as finite floats, row-major (any nested sequence or array)."""
    try:
        if isinstance(matrix, tuple) and all(type(x) is float for x in matrix):
            values: tuple[float, ...] = matrix
        else:
            values = tuple(float(x) for x in np.asarray(matrix, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise InvalidBoxError(f"{what} must be numbers (a 3 x 3 matrix), got {matrix!r}") from None
    if not all(math.isfinite(x) for x in values):
        raise InvalidBoxError(f"{what} must be finite, got {list(values)}")
    return values


# --------------------------------------------------------------------------------------------
# numpy: one sample
# --------------------------------------------------------------------------------------------

_F32 = np.float32
_FAR = -2.0  # a coordinate at least one cell away from every cell: zero bilinear weight


@functools.lru_cache(maxsize=64)
def _axis_tables(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per map size: cell coordinates, and the knots of RoIAlign's edge rule for np.interp."""
    cells = np.arange(size, dtype=np.float64)
    if size == 1:
        knots_x, knots_y = np.array([-1.0, 1.0]), np.array([0.0, 0.0])
    else:
        knots_x = np.array([-1.0, 0.0, size - 1.0, float(size)])
        knots_y = np.array([0.0, 0.0, size - 1.0, size - 1.0])
    return cells, knots_x, knots_y


def _axis_roi(lo: float, hi: float, n_out: int, size: int) -> tuple[np.float32, np.float32, int]:
    """RoIAlign's float32 start, bin size and per-bin sampling count along one axis."""
    start = _F32(lo * size - 0.5)
    length = _F32(hi * size - 0.5) - start
    if length < 1.0:  # aligned=False: malformed RoIs become 1 cell
        length = _F32(1.0)
    bin_size = length / _F32(n_out) if n_out > 1 else length
    return start, bin_size, math.ceil(float(bin_size))  # ceil(roi_size / pooled_size)


def _window(first: float, bin_size: float, grid: int, size: int) -> tuple[int, int]:
    """The sampling points ``g`` (``first:end``) of a bin starting at ``first`` that can fall
    within [-1, size]: every other point weighs nothing. Never empty."""
    if grid <= sampling_window(size):
        return 0, grid
    step = bin_size / grid
    lo = min(max(math.floor((-1.0 - first) / step - 0.5) - 2, 0), grid - 1)
    return lo, min(lo + sampling_window(size), grid)


def _sample_points(
    lo: float, hi: float, n_out: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RoIAlign's sampling coordinates along one axis, in float32 exactly as the kernel has them.

    Returns the cell coordinates of every bin's points, bin by bin, how many points each bin
    lists, and its full sampling count ``ceil(bin_size)`` (the divisor of its mean). Points
    that cannot fall within [-1, size] are left out (see :func:`_window`).
    """
    start, bin_size, grid = _axis_roi(lo, hi, n_out, size)
    grids = np.full(n_out, grid)
    if grid <= sampling_window(size):  # every point of every bin (the usual case)
        offsets = (np.arange(grid, dtype=np.float32) + _F32(0.5)) * bin_size
        offsets /= _F32(grid)
        if n_out == 1:
            return offsets + start, grids, grids
        firsts = start + np.arange(n_out, dtype=np.float32) * bin_size
        return (firsts[:, None] + offsets).ravel(), grids, grids
    firsts = start + np.arange(n_out, dtype=np.float32) * bin_size  # [start] for one bin
    pieces = []
    for first in firsts:
        g0, g1 = _window(float(first), float(bin_size), grid, size)
        offsets = (np.arange(g0, g1, dtype=np.float32) + _F32(0.5)) * bin_size
        offsets /= _F32(grid)
        pieces.append(_F32(first) + offsets)
    return np.concatenate(pieces), np.array([len(p) for p in pieces]), grids


def _axis_weights(
    points: np.ndarray, counts: np.ndarray, grids: np.ndarray, size: int
) -> np.ndarray:
    """(bins, size) float64 weights of each cell in each bin's mean, from sampling points.

    ``counts[b]`` consecutive points belong to bin ``b``, whose mean divides by ``grids[b]``. A
    point outside [-1, size] weighs nothing; otherwise it is clamped into [0, size - 1] and
    split between its two neighbouring cells (the tent 1 - |point - cell|). Averaging with
    ``np.add.reduceat`` rather than a matrix product keeps BLAS out of the hot path: in
    DataLoader workers a multi-threaded BLAS fights the other workers for the cores (measured:
    15% fewer images/s end to end on 2 cores).
    """
    cells, knots_x, knots_y = _axis_tables(size)
    clamped = np.interp(points, knots_x, knots_y, left=_FAR, right=_FAR)
    dist = np.subtract.outer(clamped, cells)
    np.abs(dist, out=dist)
    np.minimum(dist, 1.0, out=dist)
    starts = np.cumsum(counts) - counts
    # each bin: the sum over its points of the tent 1 - min(|d|, 1), over its sampling count
    tents = counts[:, None] - np.add.reduceat(dist, starts, axis=0)
    weights: np.ndarray = tents / grids[:, None]
    return weights


_EDGE_TOLERANCE = 1e-4  # cells; far above the float32 rounding of sampling points


def _axis_weights_1bin(
    start: float, bin_size: float, grid: int, size: int
) -> tuple[int, int, list[float]] | None:
    """Weights along one axis for a 1-bin output, in plain Python (faster than numpy here).

    Returns ``(first, end, weights)``: the weight of every cell, nonzero only within
    ``first:end``. Sampling points are computed in float64; they differ from the kernel's
    float32 points by rounding only, which moves the weights by as little. The one
    discontinuity, whether a point right at -1 or ``size`` counts, would depend on that
    rounding: then None (use the exact float32 path).
    """
    step = bin_size / grid
    inv = 1.0 / grid
    top = size - 1
    lo_ok, hi_ok = -1.0 + _EDGE_TOLERANCE, size - _EDGE_TOLERANCE
    weights = [0.0] * size
    for g in range(*_window(start, bin_size, grid, size)):
        point = start + (g + 0.5) * step
        if not lo_ok < point < hi_ok:
            if abs(point + 1.0) < _EDGE_TOLERANCE or abs(point - size) < _EDGE_TOLERANCE:
                return None
            if point < -1.0 or point > size:
                continue  # RoIAlign: outside [-1, size] contributes nothing
        if point <= 0.0:
            weights[0] += inv
        elif point >= top:
            weights[top] += inv
        else:
            cell = int(point)
            upper = (point - cell) * inv
            weights[cell] += inv - upper
            weights[cell + 1] += upper
    first, end = 0, size
    while first < end and weights[first] == 0.0:
        first += 1
    while end > first and weights[end - 1] == 0.0:
        end -= 1
    return first, end, weights


@functools.lru_cache(maxsize=256)
def _crop_weights(
    x0: float, y0: float, x1: float, y1: float, height: int, width: int, k: int
) -> tuple[slice, np.ndarray]:
    """RoIAlign weights of a 1x1 output: ``(rows, weights)``, float64, read-only.

    Only the map rows ``rows`` carry weight (whole rows, so the record's slice stays
    contiguous); ``weights`` holds one weight per stored entry of those rows, (y, x, k) order.
    Cached (at most ~2 MB per process for 15 x 15 x 5 maps): evaluation crops and the global
    variants repeat the same box for every sample; random training crops simply miss.
    """
    sy, by, gy = _axis_roi(y0, y1, 1, height)
    sx, bx, gx = _axis_roi(x0, x1, 1, width)
    along_y = _axis_weights_1bin(float(sy), float(by), gy, height)
    along_x = _axis_weights_1bin(float(sx), float(bx), gx, width)
    wy: list[float] | np.ndarray
    if along_y is not None and along_x is not None:
        first, end, wy_all = along_y
        wy, wx = wy_all[first:end], along_x[2]
    else:  # a sampling point on the border: exact float32 points
        first, end, wy = _trim(_axis_weights(*_sample_points(y0, y1, 1, height), height)[0])
        wx = _axis_weights(*_sample_points(x0, x1, 1, width), width)[0]
    weights = np.multiply.outer(wy, np.repeat(wx, k)).ravel()
    weights.flags.writeable = False
    return slice(first, end), weights


def _trim(weights: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The nonzero span of a weight vector: (first, end, weights[first:end])."""
    nonzero = np.flatnonzero(weights)
    if nonzero.size == 0:
        return 0, 0, weights[:0]
    first, end = int(nonzero[0]), int(nonzero[-1]) + 1
    return first, end, weights[first:end]


@functools.lru_cache(maxsize=16)
def _grid_weights(
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    flip: bool,
    height: int,
    width: int,
    k: int,
    oh: int,
    ow: int,
) -> np.ndarray:
    """RoIAlign weights of every stored entry for an oh x ow output: (oh*ow, H*W*K), read-only.

    Bins in row-major (y, x) order, entries in (y, x, k) order; exact float32 sampling points,
    vectorised over bins and over both axes. A small cache: these arrays are large.
    """
    along_y = _sample_points(y0, y1, oh, height)
    along_x = _sample_points(x0, x1, ow, width)
    if height == width:  # one pass for both axes (the usual square map)
        points, counts, grids = (
            np.concatenate(pair) for pair in zip(along_y, along_x, strict=True)
        )
        weights_yx = _axis_weights(points, counts, grids, height)
        wy, wx = weights_yx[:oh], weights_yx[oh:]
    else:
        wy = _axis_weights(*along_y, height)
        wx = _axis_weights(*along_x, width)
    if flip:
        wx = wx[::-1]
    cells = (wy[:, None, :, None] * wx[None, :, None, :]).reshape(oh * ow, height * width)
    weights = np.repeat(cells, k, axis=1)
    weights.flags.writeable = False
    return weights


def _class_id_error(class_id: int, num_classes: int) -> ConfigurationError:
    return ConfigurationError(
        f"class id {class_id} is out of range for num_classes={num_classes}: pass the number of "
        "classes of the store the map comes from (store.metadata.num_classes)"
    )


def _softmax_f32(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float32 like the reference."""
    out = logits.astype(np.float32)
    out -= np.maximum.reduce(out, axis=-1, keepdims=True)
    np.exp(out, out=out)
    out /= np.add.reduce(out, axis=-1, keepdims=True)
    return out


def pool(
    indices: np.ndarray,
    values: np.ndarray,
    box: CropBox | Region,
    *,
    num_classes: int,
    spec: PoolingSpec = _DEFAULT_SPEC,
    label: int = -1,
) -> np.ndarray:
    """LabelPooling of one record for one crop: the soft target, float32.

    ``indices`` (H, W, K) are the top-k class ids per cell (row = y, col = x) and ``values``
    (H, W, K) their logits. Returns (C,) probabilities, or (oh, ow, C) for a larger output
    grid; equal (to float32 rounding) to RoIAlign of the densified map plus softmax over all
    ``num_classes`` classes. ``box`` is a :class:`CropBox` or any :class:`Region` (rotated,
    sheared, projective: RoIAlign's sampling grid laid out in output space); it is ignored by
    the global variants. ``label`` is the dataset's original label (-1: unknown), used only
    when ``spec.original_weight > 0``.
    """
    shape = indices.shape
    if len(shape) != 3 or values.shape != shape:
        raise ConfigurationError(
            f"indices and values must both have shape (H, W, K), got {shape} and {values.shape}"
        )
    height, width, k = shape
    oh, ow = spec.grid
    flip_rows = False
    if isinstance(box, Region):
        if spec.is_global:
            box = CropBox.full()
        else:
            aligned = box.as_box()
            if aligned is None:
                if spec.compat is not None:
                    raise _compat_region_error(spec.compat)
                cells = region_weights(box.array(), height, width, oh, ow, box.clips)
                return _finish(
                    _region_logits(indices, values, cells, num_classes, spec),
                    spec,
                    label,
                    num_classes,
                )
            box, flip_rows = aligned
            if flip_rows and spec.compat is not None:
                raise _compat_region_error(spec.compat)
    (x0, y0, x1, y1), flipped = (box.x0, box.y0, box.x1, box.y1), box.flipped
    if spec.compat is not None and not spec.is_global:
        (x0, y0, x1, y1), flip_map = _official_box(box, spec.compat, height, width)
        flipped = False  # the official codes never mirror the target, at most the map
        if flip_map:
            indices, values = indices[:, ::-1], values[:, ::-1]
    if oh == ow == 1:
        if spec.is_global:
            rows, weights = _crop_weights(0.0, 0.0, 1.0, 1.0, height, width, k)
        else:
            rows, weights = _crop_weights(x0, y0, x1, y1, height, width, k)
        contrib = weights * values[rows].ravel()  # float64
        logits = np.bincount(indices[rows].ravel(), weights=contrib, minlength=num_classes)
        if logits.shape[0] != num_classes:
            raise _class_id_error(logits.shape[0] - 1, num_classes)
    else:
        weights = _grid_weights(x0, y0, x1, y1, flipped, height, width, k, oh, ow)
        if flip_rows:  # a vertically mirrored region: the token grid upside down
            weights = weights.reshape(oh, ow, -1)[::-1].reshape(oh * ow, -1)
        logits = _grid_logits(indices, values, weights, num_classes, oh, ow)
    return _finish(logits, spec, label, num_classes)


def _compat_region_error(compat: str) -> ConfigurationError:
    return ConfigurationError(
        f"compat={compat!r} reproduces a published recipe that pools axis-aligned crop boxes "
        "(at most mirrored horizontally); it has no rotated, sheared, projective or vertically "
        "mirrored regions. Use compat=None to pool such regions."
    )


def _grid_logits(
    indices: np.ndarray, values: np.ndarray, weights: np.ndarray, num_classes: int, oh: int, ow: int
) -> np.ndarray:
    """(oh, ow, C) pooled logits from per-entry weights (oh*ow, H*W*K)."""
    flat = indices.ravel()
    if flat.size and int(flat.max()) >= num_classes:
        raise _class_id_error(int(flat.max()), num_classes)
    slots = (np.arange(oh * ow) * num_classes)[:, None] + flat
    contrib = weights * values.ravel()
    return np.bincount(
        slots.ravel(), weights=contrib.ravel(), minlength=oh * ow * num_classes
    ).reshape(oh, ow, num_classes)


def _region_logits(
    indices: np.ndarray, values: np.ndarray, cells: np.ndarray, num_classes: int, spec: PoolingSpec
) -> np.ndarray:
    """Pooled logits from per-cell weights (oh*ow, H*W) of a warped region."""
    height, width, k = indices.shape
    oh, ow = spec.grid
    if oh == ow == 1:
        contrib = (cells.reshape(height, width, 1) * values).ravel()
        logits = np.bincount(indices.ravel(), weights=contrib, minlength=num_classes)
        if logits.shape[0] != num_classes:
            raise _class_id_error(logits.shape[0] - 1, num_classes)
        return logits
    return _grid_logits(indices, values, np.repeat(cells, k, axis=1), num_classes, oh, ow)


def _finish(logits: np.ndarray, spec: PoolingSpec, label: int, num_classes: int) -> np.ndarray:
    """Softmax (or one-hot of the argmax) of pooled logits, the original label mixed in."""
    if spec.is_single:
        target = np.zeros(logits.shape, dtype=np.float32)
        np.put_along_axis(target, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
    else:
        target = _softmax_f32(logits)

    weight = spec.original_weight
    if weight > 0.0:
        if not 0 <= label < num_classes:
            raise original_label_error(weight, num_classes, label)
        target *= np.float32(1.0 - weight)
        target[..., label] += np.float32(weight)
    return target


# --------------------------------------------------------------------------------------------
# Reproducing the official codes (PoolingSpec.compat)
# --------------------------------------------------------------------------------------------
#
# naver-ai/relabel_imagenet (utils/relabel_functions.py, utils/data_loader.py) turns a
# RandomResizedCrop (i, j, h, w) into (i/H, j/W, h/H, w/W), adds the first two to the last two
# in float64, casts to float32 and computes ``coords * map_width - 0.5`` in float32: RoIAlign
# then reads (top, left, bottom, right) as (x0, y0, x1, y1). Its horizontal flip comes after
# the crop and never reaches the target. zihangJiang/TokenLabeling (tlt/data/
# label_transforms_factory.py, tlt/data/mixup.py) keeps the four numbers in float32 (adding in
# float32), and flips the image *and the map* before cropping, so the crop it transposes is
# the one in the flipped image. Here those RoIAlign boxes become the equivalent normalised box
# of this module's own RoIAlign (which computes ``lo * size - 0.5`` and casts it to float32:
# ``(roi + 0.5) / size`` gives back exactly the official float32 coordinate).


def _official_box(
    box: CropBox, compat: str, height: int, width: int
) -> tuple[tuple[float, float, float, float], bool]:
    """The normalised box this module must pool, and whether the map is mirrored first."""
    f32 = np.float32
    flip_map = compat == "tokenlabeling" and box.flipped
    left, right = (1.0 - box.x1, 1.0 - box.x0) if flip_map else (box.x0, box.x1)
    if compat == "official":  # summed in float64, then cast
        corners = [f32(box.y0), f32(left), f32(box.y1), f32(right)]
    else:  # cast, then summed in float32
        corners = [f32(box.y0), f32(left)]
        corners += [corners[0] + f32(box.y1 - box.y0), corners[1] + f32(right - left)]
    top, lft, bottom, rgt = (float(c * f32(width) - f32(0.5)) for c in corners)
    # RoIAlign's x runs along the map's columns, its y along the rows
    unit_box = (
        (top + 0.5) / width,
        (lft + 0.5) / height,
        (bottom + 0.5) / width,
        (rgt + 0.5) / height,
    )
    return unit_box, flip_map
