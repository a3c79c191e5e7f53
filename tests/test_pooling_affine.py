"""Pooling over warped regions (rotations, shears, perspective): pool() and BatchPooler against
brute-force references on the densified map.

- ``grid_reference``: the map densified, sampled with ``torch.nn.functional.grid_sample`` at
  RoIAlign's sampling grid laid out in output space and mapped through the region (bilinear,
  border clamping, RoIAlign's out-of-range rule as a mask), averaged per bin, softmax: written
  from the rules, independently of relabel_store.pooling.affine. Must agree to float precision.
- ``dense_reference``: the same at a much finer grid (``resolution`` points per bin and axis):
  the mean of the interpolated map over the region itself. It differs from RoIAlign's adaptive
  grid by RoIAlign's own discretisation; that difference is bounded and reported.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relabel_store.errors import ConfigurationError, InvalidBoxError
from relabel_store.pooling import CropBox, PoolingSpec, Region, pool
from relabel_store.pooling.affine import CLIP_TOLERANCE, MAX_SAMPLES
from relabel_store.pooling.batched import BatchPooler, stack_boxes, stack_regions

ATOL = 1e-6
PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def random_record(rng: np.random.Generator, height: int, width: int, k: int, num_classes: int):
    indices = np.stack(
        [np.stack([rng.permutation(num_classes)[:k] for _ in range(width)]) for _ in range(height)]
    ).astype(np.uint16)
    values = (-np.sort(-rng.normal(0.0, 4.0, (height, width, k)), axis=-1)).astype(np.float16)
    return indices, values


def dense_map(indices: np.ndarray, values: np.ndarray, num_classes: int) -> torch.Tensor:
    height, width, _ = indices.shape
    dense = np.zeros((num_classes, height, width), dtype=np.float64)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    dense[indices.astype(np.int64), ys[..., None], xs[..., None]] = values.astype(np.float64)
    return torch.from_numpy(dense)


def _counts(m: np.ndarray, height: int, width: int, oh: int, ow: int) -> tuple[int, int]:
    """RoIAlign's ceil(bin size) per output axis, the bin size measured along the region's
    edges in map cells (the longer of two opposite edges for a projective region)."""

    def at(u: float, v: float) -> np.ndarray:
        s, t, w = m @ np.array([u, v, 1.0])
        return np.array([s / w * width, t / w * height])

    lx = max(np.hypot(*(at(1, 0) - at(0, 0))), np.hypot(*(at(1, 1) - at(0, 1))))
    ly = max(np.hypot(*(at(0, 1) - at(0, 0))), np.hypot(*(at(1, 1) - at(1, 0))))
    return max(math.ceil(lx / ow), 1), max(math.ceil(ly / oh), 1)


def sample_reference(
    indices: np.ndarray,
    values: np.ndarray,
    region: Region,
    num_classes: int,
    grid: tuple[int, int],
    per_bin: tuple[int, int],
) -> np.ndarray:
    """Softmax of the mean of the densified map over ``per_bin`` (gx, gy) points per bin,
    at sub-bin centres in output space, through grid_sample (float64)."""
    height, width, _ = indices.shape
    oh, ow = grid
    gx, gy = per_bin
    dense = dense_map(indices, values, num_classes)[None]
    m = torch.tensor(region.matrix, dtype=torch.float64).reshape(3, 3)
    u = (torch.arange(ow * gx, dtype=torch.float64) + 0.5) / (ow * gx)
    v = (torch.arange(oh * gy, dtype=torch.float64) + 0.5) / (oh * gy)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    hom = m @ torch.stack([uu.ravel(), vv.ravel(), torch.ones(uu.numel(), dtype=torch.float64)])
    s, t = hom[0] / hom[2], hom[1] / hom[2]
    px, py = s * width - 0.5, t * height - 0.5  # cell coordinates (aligned=False)
    # RoIAlign keeps a point on the bound itself (y == height): computed here through the
    # region's matrix in float64, such a point can land 1e-15 beyond it, so the bound has the
    # same tolerance as a canvas edge (found by hypothesis: a crop 0.15 wide, 1.2 tall)
    eps = CLIP_TOLERANCE
    inside = (px >= -1 - eps) & (px <= width + eps) & (py >= -1 - eps) & (py <= height + eps)
    for clip in region.clips:  # points an intermediate canvas hides count as zeros
        c = torch.tensor(clip, dtype=torch.float64).reshape(3, 3)
        ch = c @ torch.stack([uu.ravel(), vv.ravel(), torch.ones(uu.numel(), dtype=torch.float64)])
        cs, ct = ch[0] / ch[2], ch[1] / ch[2]
        lo, hi = -CLIP_TOLERANCE, 1 + CLIP_TOLERANCE  # on a canvas's edge: inside
        inside &= (cs >= lo) & (cs <= hi) & (ct >= lo) & (ct <= hi)
    # align_corners=False: normalised 2s - 1 is cell coordinate s * size - 0.5; border padding
    # clamps into [0, size - 1] as RoIAlign does
    flow = torch.stack([2 * s - 1, 2 * t - 1], dim=-1).reshape(1, oh * gy, ow * gx, 2)
    sampled = torch.nn.functional.grid_sample(
        dense, flow, mode="bilinear", padding_mode="border", align_corners=False
    )[0]  # (C, oh*gy, ow*gx)
    sampled = sampled * inside.reshape(oh * gy, ow * gx)
    pooled = sampled.reshape(num_classes, oh, gy, ow, gx).mean(dim=(2, 4))
    probs = torch.softmax(pooled, dim=0).permute(1, 2, 0).numpy()
    return probs[0, 0] if grid == (1, 1) else probs


def grid_reference(indices, values, region, num_classes, grid=(1, 1)):
    height, width, _ = indices.shape
    per_bin = _counts(np.array(region.matrix).reshape(3, 3), height, width, *grid)
    return sample_reference(indices, values, region, num_classes, grid, per_bin)


def dense_reference(indices, values, region, num_classes, grid=(1, 1), resolution=64):
    return sample_reference(indices, values, region, num_classes, grid, (resolution, resolution))


def composed_region(
    box: tuple[float, float, float, float],
    angle: float,
    shear: float,
    flip: bool,
    vflip: bool,
    perspective: tuple[float, float] = (0.0, 0.0),
) -> Region:
    """A crop of the original image, then rotated and sheared about the crop's centre (in
    normalised coordinates), mirrored, with an optional perspective term: output to image."""
    x0, y0, x1, y1 = box
    centre = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    uncentre = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    c, s = math.cos(angle), math.sin(angle)
    rotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    skew = np.array([[1, math.tan(shear), 0], [0, 1, 0], [0, 0, 1.0]])
    mirror = np.diag([-1.0 if flip else 1.0, -1.0 if vflip else 1.0, 1.0])
    crop = np.array([[x1 - x0, 0, x0], [0, y1 - y0, y0], [0, 0, 1.0]])
    warp = np.array([[1, 0, 0], [0, 1, 0], [perspective[0], perspective[1], 1.0]])
    m = crop @ centre @ rotate @ skew @ mirror @ uncentre @ warp
    return Region(tuple(m.ravel()))


coord = st.floats(-0.3, 1.3)
angles = st.floats(-math.pi, math.pi)
shears = st.floats(-0.6, 0.6)
grids = st.sampled_from([(1, 1), (2, 3), (4, 4)])


@st.composite
def regions(draw, projective: bool = False) -> Region:
    x0, x1 = sorted([draw(coord), draw(coord)])
    y0, y1 = sorted([draw(coord), draw(coord)])
    # edges of at least one cell of a 7-cell map: RoIAlign's 1-cell stretch is tested apart
    x1, y1 = max(x1, x0 + 0.15), max(y1, y0 + 0.15)
    persp = (draw(st.floats(-0.3, 0.3)), draw(st.floats(-0.3, 0.3))) if projective else (0, 0)
    return composed_region(
        (x0, y0, x1, y1), draw(angles), draw(shears), draw(st.booleans()), draw(st.booleans()),
        persp,
    )  # fmt: skip


@pytest.fixture(scope="module")
def record():
    return random_record(np.random.default_rng(7), 15, 15, 5, 50)


@PROPERTY
@given(region=regions(), grid=grids)
@example(region=Region((0.15, 0.0, 0.0, 0.0, 1.2, 0.0, 0.0, 0.0, 1.0)), grid=(1, 1))  # y == 15
def test_pool_matches_grid_reference(record, region, grid):
    indices, values = record
    spec = PoolingSpec(output_size=grid)
    ours = pool(indices, values, region, num_classes=50, spec=spec)
    np.testing.assert_allclose(ours, grid_reference(indices, values, region, 50, grid), atol=ATOL)


def with_clip(region: Region, angle: float, shift: float) -> Region:
    """The region behind a canvas: the output square turned by ``angle`` about its centre and
    shifted, as a rotation after a crop leaves it."""
    c, s = math.cos(angle), math.sin(angle)
    centre = np.array([[1, 0, 0.5 + shift], [0, 1, 0.5], [0, 0, 1.0]])
    turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    back = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    return Region(region.matrix, clips=(tuple((centre @ turn @ back).ravel()),))


@PROPERTY
@given(region=regions(), grid=grids, angle=st.floats(-1.0, 1.0), shift=st.floats(-0.3, 0.3))
def test_clipped_regions_match_grid_reference(record, region, grid, angle, shift):
    indices, values = record
    clipped = with_clip(region, angle, shift)
    spec = PoolingSpec(output_size=grid)
    ours = pool(indices, values, clipped, num_classes=50, spec=spec)
    np.testing.assert_allclose(ours, grid_reference(indices, values, clipped, 50, grid), atol=ATOL)


@PROPERTY
@given(region=regions(projective=True), grid=grids)
def test_projective_regions_match_grid_reference(record, region, grid):
    indices, values = record
    spec = PoolingSpec(output_size=grid)
    ours = pool(indices, values, region, num_classes=50, spec=spec)
    np.testing.assert_allclose(ours, grid_reference(indices, values, region, 50, grid), atol=ATOL)


@settings(max_examples=60, deadline=None, database=None)
@given(region=regions(projective=True), grid=grids, seed=st.integers(0, 2**16))
def test_non_square_maps(region, grid, seed):
    indices, values = random_record(np.random.default_rng(seed), 7, 11, 3, 20)
    ours = pool(indices, values, region, num_classes=20, spec=PoolingSpec(output_size=grid))
    np.testing.assert_allclose(ours, grid_reference(indices, values, region, 20, grid), atol=ATOL)


def test_dense_reference_agrees_to_roialign_discretisation(record):
    """Against the region's mean at 64 x 64 points per bin: RoIAlign's adaptive grid is a
    coarser sampling of the same region, so the targets agree closely, not exactly."""
    indices, values = record
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(200):
        x0, y0 = rng.uniform(-0.1, 0.6, 2)
        size = rng.uniform(0.3, 0.6)
        region = composed_region(
            (x0, y0, x0 + size, y0 + size), rng.uniform(-math.pi, math.pi),
            rng.uniform(-0.4, 0.4), bool(rng.random() < 0.5), False,
        )  # fmt: skip
        ours = pool(indices, values, region, num_classes=50)
        worst = max(worst, float(np.abs(ours - dense_reference(indices, values, region, 50)).max()))
    assert worst < 0.02, worst


@PROPERTY
@given(box=st.tuples(coord, coord, coord, coord), flip=st.booleans(), grid=grids)
def test_axis_aligned_regions_are_their_boxes_exactly(record, box, flip, grid):
    x0, x1 = sorted(box[::2])
    y0, y1 = sorted(box[1::2])
    if x1 - x0 < 1e-6 or y1 - y0 < 1e-6:
        return
    crop = CropBox(x0, y0, x1, y1, flip)
    indices, values = record
    spec = PoolingSpec(output_size=grid)
    expected = pool(indices, values, crop, num_classes=50, spec=spec)
    np.testing.assert_array_equal(
        pool(indices, values, Region.from_box(crop), num_classes=50, spec=spec), expected
    )


def test_small_rotations_converge_to_the_box(record):
    """The general sampling grid is RoIAlign's own: a rotation of 1e-9 rad pools as the box."""
    indices, values = record
    rng = np.random.default_rng(11)
    for _ in range(100):
        x0, y0 = rng.uniform(-0.2, 0.7, 2)
        w, h = rng.uniform(0.01, 0.6, 2)  # below one cell too (RoIAlign's 1-cell stretch)
        flip = bool(rng.random() < 0.5)
        grid = [(1, 1), (3, 2)][int(rng.integers(2))]
        spec = PoolingSpec(output_size=grid)
        region = composed_region((x0, y0, x0 + w, y0 + h), 1e-9, 0.0, flip, False)
        assert region.as_box() is None
        expected = pool(
            indices, values, CropBox(x0, y0, x0 + w, y0 + h, flip), num_classes=50, spec=spec
        )
        np.testing.assert_allclose(
            pool(indices, values, region, num_classes=50, spec=spec), expected, atol=ATOL
        )


def test_quarter_turn_reads_columns_as_rows(record):
    """A region turned by 90 degrees shows the map's columns along the output's rows."""
    indices, values = record
    turned = Region.affine(0.0, 1.0, 0.0, -1.0, 0.0, 1.0)  # s = v, t = 1 - u
    transposed = pool(
        indices[::-1].transpose(1, 0, 2), values[::-1].transpose(1, 0, 2), CropBox.full(),
        num_classes=50, spec=PoolingSpec(output_size=(3, 5)),
    )  # fmt: skip
    ours = pool(indices, values, turned, num_classes=50, spec=PoolingSpec(output_size=(3, 5)))
    np.testing.assert_allclose(ours, transposed, atol=ATOL)


def test_vertical_flip_turns_the_token_grid_upside_down(record):
    indices, values = record
    spec = PoolingSpec(output_size=(4, 3))
    box = CropBox(0.1, 0.2, 0.7, 0.9)
    upright = pool(indices, values, box, num_classes=50, spec=spec)
    upside_down = Region.affine(0.6, 0.0, 0.1, 0.0, -0.7, 0.9)
    np.testing.assert_array_equal(
        pool(indices, values, upside_down, num_classes=50, spec=spec), upright[::-1]
    )
    np.testing.assert_array_equal(
        pool(indices, values, upside_down, num_classes=50),
        pool(indices, values, box, num_classes=50),
    )


def _batch_case(rng: np.random.Generator, n: int):
    indices = []
    values = []
    found = []
    for i in range(n):
        ids, vals = random_record(rng, 15, 15, 5, 50)
        indices.append(ids)
        values.append(vals)
        x0, y0 = rng.uniform(-0.2, 0.7, 2)
        w, h = rng.uniform(0.05, 0.8, 2)
        kind = i % 5
        box = (x0, y0, x0 + w, y0 + h)
        if kind == 0:  # an axis-aligned box, maybe mirrored either way
            found.append(composed_region(box, 0.0, 0.0, rng.random() < 0.5, rng.random() < 0.5))
        elif kind == 3:
            persp = tuple(rng.uniform(-0.3, 0.3, 2))
            found.append(composed_region(box, rng.uniform(-3, 3), 0.2, False, False, persp))
        elif kind == 4:  # behind an intermediate canvas
            turned = composed_region(box, rng.uniform(-1, 1), 0.0, rng.random() < 0.5, False)
            found.append(with_clip(turned, rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.2)))
        else:
            found.append(
                composed_region(
                    box, rng.uniform(-3, 3), rng.uniform(-0.5, 0.5), rng.random() < 0.5, False
                )
            )
    return np.stack(indices), np.stack(values), found


@pytest.mark.parametrize("grid", [(1, 1), (3, 4)])
@pytest.mark.parametrize("variant", ["localized-multi", "localized-single"])
def test_batch_pooler_regions_agree_with_pool(grid, variant):
    rng = np.random.default_rng(5)
    indices, values, found = _batch_case(rng, 24)
    spec = PoolingSpec(variant, output_size=grid)
    expected = np.stack(
        [
            pool(i, v, r, num_classes=50, spec=spec)
            for i, v, r in zip(indices, values, found, strict=True)
        ]
    )
    pooler = BatchPooler(50, spec)
    got = pooler(
        torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(values),
        regions=stack_regions(found),
    )  # fmt: skip
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL)


def test_batch_regions_of_boxes_are_the_box_path():
    rng = np.random.default_rng(9)
    indices = torch.from_numpy(
        np.stack([random_record(rng, 15, 15, 5, 50)[0] for _ in range(8)]).astype(np.int64)
    )
    values = torch.from_numpy(np.stack([random_record(rng, 15, 15, 5, 50)[1] for _ in range(8)]))
    boxes = [CropBox(0.1 * i - 0.1, 0.05 * i, 0.5 + 0.05 * i, 0.9, i % 2 == 0) for i in range(8)]
    pooler = BatchPooler(50, PoolingSpec(output_size=(2, 3)))
    np.testing.assert_array_equal(
        pooler(indices, values, regions=stack_regions(boxes)).numpy(),
        pooler(indices, values, *stack_boxes(boxes)).numpy(),
    )


def test_region_validation(record):
    indices, values = record
    with pytest.raises(InvalidBoxError, match="singular"):
        Region.affine(1.0, 2.0, 0.0, 0.5, 1.0, 0.0)
    with pytest.raises(InvalidBoxError, match="finite"):
        Region.affine(float("nan"), 0.0, 0.0, 0.0, 1.0, 0.0)
    with pytest.raises(InvalidBoxError, match="infinity"):
        Region((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, -2.0, 0.0, 1.0))
    with pytest.raises(InvalidBoxError, match="3 x 3"):
        Region((1.0, 0.0, 0.0))
    with pytest.raises(InvalidBoxError, match="sampling points"):
        big = 1e4
        pool(indices, values, Region.affine(big, 1.0, 0.0, -1.0, big, 0.0), num_classes=50)
    assert MAX_SAMPLES >= 1 << 16
    turned = Region.affine(0.0, 1.0, 0.0, -1.0, 0.0, 1.0)
    with pytest.raises(ConfigurationError, match="compat"):
        pool(indices, values, turned, num_classes=50, spec=PoolingSpec(compat="official"))
    with pytest.raises(ConfigurationError, match="compat"):
        BatchPooler(50, PoolingSpec(compat="tokenlabeling"))(
            torch.from_numpy(indices[None].astype(np.int64)), torch.from_numpy(values[None]),
            regions=stack_regions([turned]),
        )  # fmt: skip
    bad = stack_regions([turned, turned])
    bad[1, 2] = torch.tensor([-3.0, 0.0, 1.0])
    with pytest.raises(InvalidBoxError, match="row 1"):
        BatchPooler(50)(
            torch.from_numpy(np.stack([indices] * 2).astype(np.int64)),
            torch.from_numpy(np.stack([values] * 2)),
            regions=bad,
        )
    # the global variants pool the whole image whatever the region
    np.testing.assert_array_equal(
        pool(indices, values, turned, num_classes=50, spec=PoolingSpec("global-multi")),
        pool(indices, values, CropBox.full(), num_classes=50),
    )


def test_from_pixels_matches_from_box():
    box = CropBox.from_pixels(40, 30, 240, 330, (375, 500), flipped=False)
    # output 224 x 224 pixels showing that window: x_in = 40 + x_out * 200 / 224, ...
    m = [[200 / 224, 0, 40], [0, 300 / 224, 30], [0, 0, 1]]
    region = Region.from_pixels(m, (375, 500), (224, 224))
    np.testing.assert_allclose(region.matrix, Region.from_box(box).matrix, atol=1e-15)
    assert region.as_box() is not None
