"""RoIAlign over a warped region: the sampling grid of a rotated, sheared or projected crop.

A :class:`~relabel_store.pooling.Region` says which point of the original image every point of
the output image shows: a 3 x 3 matrix ``M`` from normalised output coordinates ``(u, v, 1)``
(0..1 over the output image, x right, y down) to normalised image coordinates (homogeneous). In
the label map's cell coordinates (cell ``c`` has its centre at ``c``, RoIAlign's
``aligned=False`` convention ``p = s * W - 0.5``) that is ``Mc = S @ M`` with
``S = [[W, 0, -0.5], [0, H, -0.5], [0, 0, 1]]``.

RoIAlign lays its sampling grid out along the box's edges; here the grid is laid out along the
output image's edges and mapped through ``Mc``, which is the same thing for an axis-aligned
box and the natural generalisation otherwise:

- the output is split into ``oh x ow`` bins; the edge vectors of the region in cells are
  ``Eu = Mc[:2, 0]`` and ``Ev = Mc[:2, 1]`` (the images of the output's unit x and y steps);
- an edge shorter than one cell is stretched to one cell from its first corner (RoIAlign's
  ``max(roi_size, 1)``, ``aligned=False``);
- each bin gets ``ceil(|Eu| / ow) x ceil(|Ev| / oh)`` sampling points (RoIAlign's
  ``sampling_ratio=-1``: ``ceil(bin_size)``), at the centres of equal sub-bins in output
  space, mapped into the map;
- a point outside ``[-1, W] x [-1, H]`` contributes zero (but counts in the mean); inside, it
  is clamped into ``[0, W - 1] x [0, H - 1]`` and interpolated bilinearly.

The sampling grid is symmetric within every bin, so a region traversed backwards (a mirrored
crop) samples the same points and only the bins come out in reverse order: the region is first
put in a canonical orientation (each edge's dominant component positive), as RoIAlign's box is
``x0 < x1``, and the bins reversed afterwards. For a projective region the counts come from the
longer of the two opposite edges and no edge is stretched.

Axis-aligned regions never come here: :func:`relabel_store.pooling.pool` pools them as the
:class:`~relabel_store.pooling.CropBox` they are, bit for bit RoIAlign's float32 arithmetic.
This module computes in float64; numpy only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from relabel_store.errors import InvalidBoxError

__all__ = [
    "CLIP_TOLERANCE",
    "MAX_SAMPLES",
    "canonical",
    "canonical_batch",
    "cell_matrix",
    "clip_mask",
    "region_weights",
]

#: How far outside a clip's canvas (in canvas widths) a sampling point still counts as inside:
#: points exactly on an edge (integer translations put them there) must not depend on rounding.
CLIP_TOLERANCE = 1e-9

#: Most sampling points one sample may take (all bins together). A region needing more spans
#: hundreds of map cells along an edge (a zoom-out by a factor ~50 on a 15 x 15 map): refused.
MAX_SAMPLES = 1 << 20


def cell_matrix(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """``S @ M``: normalised output coordinates to the map's cell coordinates (float64)."""
    m = np.array(matrix, dtype=np.float64).reshape(3, 3)
    m[0] *= width
    m[1] *= height
    m[:2] -= 0.5 * m[2]
    return m


def _point(mc: np.ndarray, u: float, v: float) -> np.ndarray:
    x, y, w = mc @ np.array([u, v, 1.0])
    return np.array([x / w, y / w])


def canonical(mc: np.ndarray, oh: int, ow: int) -> tuple[np.ndarray, bool, bool, int, int]:
    """The region in canonical orientation, with its sampling counts.

    Returns ``(mc, flip_u, flip_v, gx, gy)``: ``mc`` (modified in place) re-parameterised so
    that each edge's dominant component is positive (``flip_u``/``flip_v``: bins must be
    reversed along x/y afterwards), affine edges shorter than a cell stretched to one cell,
    and the sampling points per bin along the output's x (``gx``) and y (``gy``).
    """
    projective = not (mc[2, 0] == 0.0 and mc[2, 1] == 0.0)
    flips = []
    for axis in (0, 1):
        if projective:
            ex, ey = _edge(mc, axis)
        else:
            ex, ey = float(mc[0, axis]), float(mc[1, axis])
        flip = (ex if abs(ex) >= abs(ey) else ey) < 0.0
        if flip:  # u -> 1 - u (or v -> 1 - v): column negated, its step added to the offset
            mc[:, 2] += mc[:, axis]
            mc[:, axis] = -mc[:, axis]
        flips.append(flip)
    counts = []
    for axis, bins in ((0, ow), (1, oh)):
        if projective:
            length = max(_edge_lengths(mc, axis))
        else:
            length = math.hypot(mc[0, axis], mc[1, axis])
            if length < 1.0:  # aligned=False: shorter than a cell becomes one cell
                mc[:, axis] /= length
                length = 1.0
        counts.append(max(math.ceil(length / bins), 1))
    gx, gy = counts
    if gx * gy * oh * ow > MAX_SAMPLES:
        raise InvalidBoxError(
            f"the region spans {gx * ow} x {gy * oh} label-map cells along its edges, which "
            f"would take {gx * gy * oh * ow} sampling points (at most {MAX_SAMPLES}); a crop of "
            "a canvas this much larger than the image has no label to speak of. Check the "
            "geometry (an axis-aligned CropBox has no such limit)."
        )
    return mc, flips[0], flips[1], gx, gy


def _edge(mc: np.ndarray, axis: int) -> tuple[float, float]:
    """The mean of a projective region's two edges along an output axis, in cells."""
    if axis == 0:
        e = (_point(mc, 1, 0) - _point(mc, 0, 0) + _point(mc, 1, 1) - _point(mc, 0, 1)) / 2
    else:
        e = (_point(mc, 0, 1) - _point(mc, 0, 0) + _point(mc, 1, 1) - _point(mc, 1, 0)) / 2
    return float(e[0]), float(e[1])


def _edge_lengths(mc: np.ndarray, axis: int) -> tuple[float, float]:
    if axis == 0:
        pairs = (((0, 0), (1, 0)), ((0, 1), (1, 1)))
    else:
        pairs = (((0, 0), (0, 1)), ((1, 0), (1, 1)))
    lengths = [float(np.hypot(*(_point(mc, *b) - _point(mc, *a)))) for a, b in pairs]
    return lengths[0], lengths[1]


@functools.lru_cache(maxsize=64)
def _positions(bins: int, count: int) -> np.ndarray:
    """Sub-bin centres along one output axis, 0..1: ``bins * count`` of them, bin by bin."""
    out = (np.arange(bins * count, dtype=np.float64) + 0.5) / (bins * count)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def _edge_rule(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The knots of RoIAlign's edge rule for ``np.interp``: a point within [-1, 0] reads as 0,
    one within [size - 1, size] as size - 1; one outside [-1, size] becomes -2, which lands
    in the padding (see :func:`region_weights`)."""
    if size == 1:
        return np.array([-1.0, 1.0]), np.array([0.0, 0.0])
    return np.array([-1.0, 0.0, size - 1.0, float(size)]), np.array(
        [0.0, 0.0, size - 1.0, size - 1.0]
    )


@functools.lru_cache(maxsize=64)
def _bin_offsets(oh: int, gy: int, ow: int, gx: int, cells: int) -> np.ndarray:
    """(oh*gy, ow*gx) offset of each point's bin in the flat (bins, cells) accumulator."""
    rows = np.arange(oh * gy) // gy
    cols = np.arange(ow * gx) // gx
    out = (rows[:, None] * ow + cols[None, :]) * cells
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def _corner_offsets(padded_w: int) -> np.ndarray:
    """(4, 1) flat offsets of a point's four bilinear corners in the padded grid, in the order
    (y low, x low), (y low, x high), (y high, x low), (y high, x high), shifted by the padding."""
    out = np.array([0, 1, padded_w, padded_w + 1])[:, None] + _PAD * (padded_w + 1)
    out.flags.writeable = False
    return out


_FAR = -2.0
_PAD = 2  # cells of padding before the map (where far points land) and one after


def clip_mask(
    clips: Sequence[Any], to_output: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """Where sampling positions ``(u, v)`` (canonical output coordinates, broadcast) show the
    image: every clip (normalised output to a normalised intermediate canvas) maps them into
    ``[0, 1] x [0, 1]``, up to :data:`CLIP_TOLERANCE` (a point on a canvas's edge is inside,
    whatever the rounding). ``to_output`` maps canonical to the region's own output coordinates."""
    shown = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for clip in clips:
        c = np.asarray(clip, dtype=np.float64).reshape(3, 3) @ to_output
        w = c[2, 0] * u + c[2, 1] * v + c[2, 2]
        for row in (0, 1):
            s = c[row, 0] * u + c[row, 1] * v + c[row, 2]
            shown &= (s >= -CLIP_TOLERANCE * w) & (s <= (1.0 + CLIP_TOLERANCE) * w)
    return shown


def region_weights(
    matrix: np.ndarray,
    height: int,
    width: int,
    oh: int,
    ow: int,
    clips: Sequence[Any] = (),
) -> np.ndarray:
    """(oh*ow, H*W) float64 weight of every map cell in every output bin's mean.

    Bins in row-major (y, x) order of the output grid, cells in (y, x) order. ``matrix`` is a
    :class:`~relabel_store.pooling.Region`'s 3 x 3 matrix (normalised output to normalised
    image coordinates); ``clips`` its clips (sampling points outside any of them contribute
    nothing, like points outside the map). See the module docstring for the rules. Every point
    adds its four
    bilinear weights into a padded copy of the grid with one ``bincount``: a point outside
    [-1, size] reads as -2 and only touches the padding, a point on the last cell gives its
    zero weight to the padding after it, so no masks are needed; the padding is cut off.
    """
    original = cell_matrix(matrix, height, width)
    mc, flip_u, flip_v, gx, gy = canonical(original.copy(), oh, ow)
    u = _positions(ow, gx)[None, None, :]
    v = _positions(oh, gy)[None, :, None]
    # Points on the (oh*gy, ow*gx) grid of output positions, x and y stacked; bin (i, j) is
    # rows i*gy.., columns j*gx..
    projective = mc[2, 0] != 0.0 or mc[2, 1] != 0.0
    rows = mc if projective else mc[:2]  # the homogeneous coordinate only when it varies
    points = rows[:, 0, None, None] * u + (rows[:, 1, None, None] * v + rows[:, 2, None, None])
    if projective:
        points = points[:2] / points[2]
    if height == width:
        points = np.interp(points, *_edge_rule(width), left=_FAR, right=_FAR)
    else:
        points = np.stack(
            [
                np.interp(points[0], *_edge_rule(width), left=_FAR, right=_FAR),
                np.interp(points[1], *_edge_rule(height), left=_FAR, right=_FAR),
            ]
        )
    if len(clips):
        to_output = np.linalg.solve(original, mc)  # canonical to the region's own output
        hidden = ~clip_mask(clips, to_output, u[0], v[0])
        points[:, hidden] = _FAR  # lands in the padding: no weight anywhere
    low = np.floor(points)
    shares = np.empty((2, *points.shape))  # [low corner, high corner][x, y]
    np.subtract(points, low, out=shares[1])
    np.subtract(1.0, shares[1], out=shares[0])
    padded_w, padded_h = width + _PAD + 1, height + _PAD + 1
    cells = padded_h * padded_w
    corner = (low[1] * padded_w + low[0]).astype(np.int64)
    if oh * ow > 1:
        corner += _bin_offsets(oh, gy, ow, gx, cells)
    index = corner.reshape(1, -1) + _corner_offsets(padded_w)
    weight = shares[:, None, 1] * shares[None, :, 0]  # (y corner, x corner, ...)
    sums = np.bincount(index.ravel(), weights=weight.ravel(), minlength=oh * ow * cells)
    sums = sums.reshape(oh, ow, padded_h, padded_w)[:, :, _PAD : _PAD + height, _PAD : _PAD + width]
    out: np.ndarray = sums / float(gx * gy)
    if flip_v:
        out = out[::-1]
    if flip_u:
        out = out[:, ::-1]
    return out.reshape(oh * ow, height * width)


def canonical_batch(
    matrices: np.ndarray, height: int, width: int, oh: int, ow: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`canonical` of :func:`cell_matrix` for a batch of (B, 3, 3) matrices, vectorised.

    Returns ``(mc, flip_u, flip_v, gx, gy, to_output)``, each with a leading batch axis; the
    same decisions as the one-sample functions (which :func:`relabel_store.pooling.pool`
    uses). ``to_output`` maps canonical output coordinates to each region's own (for clips).
    """
    mc = np.array(matrices, dtype=np.float64).reshape(-1, 3, 3)
    mc[:, 0] *= width
    mc[:, 1] *= height
    mc[:, :2] -= 0.5 * mc[:, 2:3]
    original = mc.copy()
    projective = (mc[:, 2, 0] != 0.0) | (mc[:, 2, 1] != 0.0)
    flips = []
    for axis in (0, 1):
        edge = mc[:, :2, axis].copy()
        if projective.any():
            edge[projective] = _edges_batch(mc[projective], axis).mean(axis=1)
        ex, ey = edge[:, 0], edge[:, 1]
        flip = np.where(np.abs(ex) >= np.abs(ey), ex, ey) < 0.0
        mc[flip, :, 2] += mc[flip, :, axis]
        mc[flip, :, axis] *= -1.0
        flips.append(flip)
    counts = []
    for axis, bins in ((0, ow), (1, oh)):
        length = np.hypot(mc[:, 0, axis], mc[:, 1, axis])
        short = (length < 1.0) & ~projective
        mc[short, :, axis] /= length[short, None]
        length[short] = 1.0
        if projective.any():
            length[projective] = np.hypot(*_edges_batch(mc[projective], axis).T).max(axis=0)
        counts.append(np.maximum(np.ceil(length / bins), 1.0).astype(np.int64))
    gx, gy = counts
    points = gx * gy * (oh * ow)
    if points.size and int(points.max()) > MAX_SAMPLES:
        row = int(np.argmax(points))
        raise InvalidBoxError(
            f"the region of row {row} spans {gx[row] * ow} x {gy[row] * oh} label-map cells "
            f"along its edges, which would take {points[row]} sampling points (at most "
            f"{MAX_SAMPLES}); a crop of a canvas this much larger than the image has no label "
            "to speak of. Check the geometry (an axis-aligned box has no such limit)."
        )
    to_output = np.linalg.solve(original, mc) if len(mc) else mc.copy()
    return mc, flips[0], flips[1], gx, gy, to_output


def _edges_batch(mc: np.ndarray, axis: int) -> np.ndarray:
    """(B, 2, 2): the two edges (in cells) of projective regions along an output axis."""

    def point(u: float, v: float) -> np.ndarray:
        h = mc @ np.array([u, v, 1.0])
        projected: np.ndarray = h[:, :2] / h[:, 2:3]
        return projected

    if axis == 0:
        return np.stack([point(1, 0) - point(0, 0), point(1, 1) - point(0, 1)], axis=1)
    return np.stack([point(0, 1) - point(0, 0), point(1, 1) - point(1, 0)], axis=1)
