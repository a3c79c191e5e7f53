"""LabelPooling: numpy pool() and torch BatchPooler against the official recipe.

The reference is what ReLabel's code does: scatter the top-k into a dense C x H x W map,
``torchvision.ops.roi_align`` it onto the box (``aligned=False``, ``sampling_ratio=-1``,
box ``* (W, H, W, H) - 0.5``), softmax over all C classes.
"""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.ops import roi_align

from relabel_store.errors import (
    ArgumentTypeError,
    ConfigurationError,
    InvalidBoxError,
    RelabelStoreError,
)
from relabel_store.pooling import VARIANTS, CropBox, PoolingSpec, pool
from relabel_store.pooling._roialign import sampling_window
from relabel_store.pooling.batched import BatchPooler, _axis_weights_torch, stack_boxes

ATOL, RTOL = 1e-6, 1e-5
DEFAULT = PoolingSpec()
PROPERTY = settings(
    max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------------------------------------
# the reference
# --------------------------------------------------------------------------------------------


def dense_map(indices: np.ndarray, values: np.ndarray, num_classes: int) -> torch.Tensor:
    """D[c, y, x] = V[y, x, j] where I[y, x, j] == c, else 0 (float32, C x H x W)."""
    height, width, _ = indices.shape
    dense = np.zeros((num_classes, height, width), dtype=np.float32)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    dense[indices.astype(np.int64), ys[..., None], xs[..., None]] = values.astype(np.float32)
    return torch.from_numpy(dense)


def reference(
    indices: np.ndarray,
    values: np.ndarray,
    box: CropBox,
    num_classes: int,
    grid: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Official recipe; (oh, ow, C) softmax, mirrored along x for a flipped crop."""
    height, width, _ = indices.shape
    roi = torch.tensor(
        [[0.0, box.x0 * width - 0.5, box.y0 * height - 0.5,
          box.x1 * width - 0.5, box.y1 * height - 0.5]],
        dtype=torch.float32,
    )  # fmt: skip
    pooled = roi_align(dense_map(indices, values, num_classes)[None], roi, grid, 1.0, -1, False)
    target = torch.softmax(pooled[0], dim=0).permute(1, 2, 0).numpy()
    return target[:, ::-1] if box.flipped else target


def random_record(rng: np.random.Generator, height: int, width: int, k: int, num_classes: int):
    """Distinct top-k ids per cell, float16 logits descending per cell."""
    order = np.argsort(rng.random((height, width, num_classes)), axis=-1)[..., :k]
    values = -np.sort(-rng.normal(0.0, 4.0, (height, width, k)), axis=-1)
    return order.astype(np.uint16), values.astype(np.float16)


def batch_pool(indices, values, box, num_classes, spec=DEFAULT, label=-1) -> np.ndarray:
    """BatchPooler on a batch of one, from the store's own dtypes (uint16, float16)."""
    boxes, flipped = stack_boxes([box])
    pooler = BatchPooler(num_classes, spec)
    out = pooler(
        torch.from_numpy(indices)[None],
        torch.from_numpy(values)[None],
        boxes,
        flipped,
        torch.tensor([label]),
    )
    return out[0].numpy()


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------


@st.composite
def coordinate_pairs(draw) -> tuple[float, float]:
    """(lo, hi) along one axis: random, tiny, cell-aligned fractions, edges, partly outside."""
    kind = draw(st.sampled_from(["uniform", "tiny", "fraction", "edge", "outside", "zoomed"]))
    if kind == "uniform":
        lo, hi = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2)))
    elif kind == "tiny":  # smaller than one cell
        lo = draw(st.floats(-0.05, 0.999))
        hi = lo + draw(st.floats(1e-6, 0.05))
    elif kind == "fraction":  # exact fractions: sampling points land on cell edges and -1/size
        den = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 14, 15, 16, 30, 224]))
        a = draw(st.integers(-den, 2 * den))
        b = draw(st.integers(-den, 2 * den))
        lo, hi = min(a, b) / den, max(a, b) / den
    elif kind == "edge":
        lo, hi = draw(st.sampled_from([(0.0, 1.0), (0.0, 0.3), (0.7, 1.0), (0.0, 1e-3)]))
    elif kind == "outside":  # reaching beyond the image, up to one image size
        lo = draw(st.floats(-1.0, 0.9))
        hi = draw(st.floats(max(lo, 0.0) + 1e-3, 2.0))
    else:  # crops of a zoomed-out canvas: anywhere, partly or wholly off the image
        lo = draw(st.floats(-6.0, 6.0))
        hi = lo + draw(st.floats(1e-3, 8.0))
    if not hi > lo:
        lo, hi = 0.25, 0.75
    return lo, hi


@st.composite
def boxes(draw) -> CropBox:
    x0, x1 = draw(coordinate_pairs())
    y0, y1 = draw(coordinate_pairs())
    return CropBox(x0, y0, x1, y1, flipped=draw(st.booleans()))


@st.composite
def records(draw):
    height = draw(st.integers(1, 16))
    width = draw(st.sampled_from([height, height, draw(st.integers(1, 16))]))
    k = draw(st.integers(1, 5))
    num_classes = draw(st.integers(k, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    indices, values = random_record(np.random.default_rng(seed), height, width, k, num_classes)
    return indices, values, num_classes


grids = st.one_of(st.just((1, 1)), st.tuples(st.integers(1, 4), st.integers(1, 4)), st.just((7, 7)))


# --------------------------------------------------------------------------------------------
# equal to the reference
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(record=records(), box=boxes(), grid=grids)
def test_pool_matches_roi_align_reference(record, box, grid):
    indices, values, num_classes = record
    spec = PoolingSpec(output_size=grid)
    expected = reference(indices, values, box, num_classes, grid)
    got = pool(indices, values, box, num_classes=num_classes, spec=spec)
    assert got.dtype == np.float32
    assert got.shape == ((num_classes,) if grid == (1, 1) else (*grid, num_classes))
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL)


@PROPERTY
@given(record=records(), box=boxes(), grid=grids)
def test_batch_pooler_matches_roi_align_reference(record, box, grid):
    indices, values, num_classes = record
    spec = PoolingSpec(output_size=grid)
    expected = reference(indices, values, box, num_classes, grid)
    got = batch_pool(indices, values, box, num_classes, spec)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "box",
    [
        CropBox.full(),
        CropBox(0.1, 0.2, 0.9, 0.6),
        CropBox(0.5, 0.5, 0.51, 0.502),  # far below one cell
        CropBox(-1.0, -1.0, 2.0, 2.0),  # the largest allowed box
        CropBox(0.5, 0.0, 2.0, 1.0),  # a sampling point exactly at x = W (still counts)
        CropBox(-1.0, 0.0, 0.5, 1.0),  # a sampling point exactly at x = -1 (still counts)
        CropBox(-0.6, 0.95, 0.05, 1.7),  # partly outside, bottom-left corner
        CropBox(0.3, 0.0, 0.7, 1.0, flipped=True),
    ],
    ids=repr,
)
@pytest.mark.parametrize("grid", [(1, 1), (2, 3)])
def test_imagenet_sized_record(box, grid):
    """15 x 15 x 5 over 1000 classes, the paper's layout."""
    indices, values = random_record(np.random.default_rng(7), 15, 15, 5, 1000)
    spec = PoolingSpec(output_size=grid)
    expected = reference(indices, values, box, 1000, grid)
    for got in (
        pool(indices, values, box, num_classes=1000, spec=spec),
        batch_pool(indices, values, box, 1000, spec),
    ):
        np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("size", "lo", "hi"),
    [
        (4, 0.5, 2.0),  # a point exactly at size
        (4, -1.0, 0.5),  # a point exactly at -1
        (4, 0.5, 2.0 - 1e-7),
        (4, -1.0 + 1e-7, 0.5),
        # float32 puts a point exactly on the border, where float64 arithmetic falls just
        # outside: only float32 arithmetic, as in the kernel, keeps these points.
        (1, -5 / 6, 0.5),
        (4, 4 / 9, 11 / 9),
        (15, -0.85, 0.13),
        (15, -0.61, 1.13),
    ],
)
def test_sampling_points_exactly_on_the_map_border(size, lo, hi):
    """Points at exactly -1 or size count, beyond they don't; float32 rounding decides."""
    indices, values = random_record(np.random.default_rng(size), size, size, 3, 12)
    for box in (CropBox(lo, 0.0, hi, 1.0), CropBox(0.0, lo, 1.0, hi)):
        expected = reference(indices, values, box, 12)[0, 0]
        np.testing.assert_allclose(
            pool(indices, values, box, num_classes=12), expected, rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(
            batch_pool(indices, values, box, 12), expected, rtol=RTOL, atol=ATOL
        )


def test_non_contiguous_and_other_dtypes():
    indices, values = random_record(np.random.default_rng(3), 9, 9, 4, 50)
    box = CropBox(0.2, 0.1, 0.8, 0.7)
    expected = pool(indices, values, box, num_classes=50)
    fortran = np.asfortranarray(indices.astype(np.int64)), np.asfortranarray(values)
    np.testing.assert_allclose(pool(*fortran, box, num_classes=50), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        pool(indices.astype(np.int32), values.astype(np.float32), box, num_classes=50),
        expected,
        rtol=RTOL,
        atol=ATOL,
    )


# --------------------------------------------------------------------------------------------
# orientation: x to the right, y down, flips mirror token grids along x
# --------------------------------------------------------------------------------------------

A, B, C, D = 1, 2, 3, 4  # top-left, bottom-right, top-right, bottom-left


def quadrant_map(size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A strong only in the top-left quadrant, B bottom-right, C top-right, D bottom-left."""
    half = size // 2
    quadrant = np.empty((size, size), dtype=np.uint16)
    quadrant[:half, :half] = A
    quadrant[half:, half:] = B
    quadrant[:half, half:] = C
    quadrant[half:, :half] = D
    indices = np.stack([quadrant, np.zeros_like(quadrant)], axis=-1)
    values = np.stack([np.full((size, size), 8.0), np.full((size, size), -1.0)], axis=-1)
    return indices, values.astype(np.float16)


@pytest.mark.parametrize("implementation", ["numpy", "torch"])
def test_orientation_is_x_right_y_down(implementation):
    indices, values = quadrant_map()

    def winner(box, spec=DEFAULT):
        if implementation == "numpy":
            out = pool(indices, values, box, num_classes=6, spec=spec)
        else:
            out = batch_pool(indices, values, box, 6, spec)
        return out.argmax(axis=-1)

    assert winner(CropBox(0.0, 0.0, 0.5, 0.5)) == A  # top-left
    assert winner(CropBox(0.5, 0.5, 1.0, 1.0)) == B  # bottom-right
    assert winner(CropBox(0.5, 0.0, 1.0, 0.5)) == C  # top-right: x right, y down
    assert winner(CropBox(0.0, 0.5, 0.5, 1.0)) == D  # bottom-left
    assert winner(CropBox(0.0, 0.0, 0.5, 0.5, flipped=True)) == A  # 1x1: flip changes nothing

    grid = PoolingSpec(output_size=2)
    assert winner(CropBox.full(), grid).tolist() == [[A, C], [D, B]]
    assert winner(CropBox.full(flipped=True), grid).tolist() == [[C, A], [B, D]]
    # The top half as 1 x 2 tokens: the flip swaps them; the right half as 2 x 1: it doesn't.
    row = PoolingSpec(output_size=(1, 2))
    assert winner(CropBox(0.0, 0.0, 1.0, 0.5), row).tolist() == [[A, C]]
    assert winner(CropBox(0.0, 0.0, 1.0, 0.5, flipped=True), row).tolist() == [[C, A]]
    column = PoolingSpec(output_size=(2, 1))
    assert winner(CropBox(0.5, 0.0, 1.0, 1.0, flipped=True), column).tolist() == [[C], [B]]


def test_flip_mirrors_the_token_grid_exactly():
    indices, values = random_record(np.random.default_rng(11), 15, 15, 5, 100)
    spec = PoolingSpec(output_size=(3, 4))
    box = CropBox(0.1, 0.2, 0.8, 0.9)
    plain = pool(indices, values, box, num_classes=100, spec=spec)
    mirrored = pool(
        indices, values, dataclasses.replace(box, flipped=True), num_classes=100, spec=spec
    )
    np.testing.assert_array_equal(mirrored, plain[:, ::-1])
    one = pool(indices, values, box, num_classes=100)
    np.testing.assert_array_equal(
        pool(indices, values, dataclasses.replace(box, flipped=True), num_classes=100), one
    )


# --------------------------------------------------------------------------------------------
# variants and mixing
# --------------------------------------------------------------------------------------------


def test_variants():
    indices, values = random_record(np.random.default_rng(5), 15, 15, 5, 200)
    box = CropBox(0.05, 0.3, 0.4, 0.9, flipped=True)
    local = pool(indices, values, box, num_classes=200)
    whole = pool(indices, values, CropBox.full(), num_classes=200)

    glob = pool(indices, values, box, num_classes=200, spec=PoolingSpec("global-multi"))
    np.testing.assert_array_equal(glob, whole)
    assert not np.allclose(local, whole)

    for variant, soft in [("localized-single", local), ("global-single", whole)]:
        hard = pool(indices, values, box, num_classes=200, spec=PoolingSpec(variant))
        assert hard.dtype == np.float32
        expected = np.zeros(200, dtype=np.float32)
        expected[soft.argmax()] = 1.0
        np.testing.assert_array_equal(hard, expected)

    grid_single = pool(
        indices, values, box, num_classes=200, spec=PoolingSpec("localized-single", 3)
    )
    assert grid_single.shape == (3, 3, 200)
    np.testing.assert_array_equal(grid_single.sum(axis=-1), np.ones((3, 3)))


def test_single_label_argmax_can_be_a_class_outside_every_top_k():
    """All pooled logits negative: an absent class (logit 0) wins, the first one on ties."""
    indices = np.full((2, 2, 1), 3, dtype=np.uint16)
    values = np.full((2, 2, 1), -2.0, dtype=np.float16)
    hard = pool(indices, values, CropBox.full(), num_classes=5, spec=PoolingSpec("global-single"))
    np.testing.assert_array_equal(hard, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        batch_pool(indices, values, CropBox.full(), 5, PoolingSpec("global-single")), hard
    )


@pytest.mark.parametrize("grid", [1, (2, 3)])
def test_original_label_mixing(grid):
    indices, values = random_record(np.random.default_rng(9), 15, 15, 5, 100)
    box = CropBox(0.2, 0.2, 0.7, 0.9)
    pooled = pool(indices, values, box, num_classes=100, spec=PoolingSpec(output_size=grid))
    spec = PoolingSpec(output_size=grid, original_weight=0.3)
    onehot = np.zeros(100, dtype=np.float32)
    onehot[42] = 1.0
    expected = 0.7 * pooled + 0.3 * onehot
    for mixed in (
        pool(indices, values, box, num_classes=100, spec=spec, label=42),
        batch_pool(indices, values, box, 100, spec, label=42),
    ):
        np.testing.assert_allclose(mixed, expected, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(mixed.sum(axis=-1), 1.0, rtol=1e-5)

    only_label = PoolingSpec(output_size=grid, original_weight=1.0)
    np.testing.assert_array_equal(
        pool(indices, values, box, num_classes=100, spec=only_label, label=42),
        np.broadcast_to(onehot, pooled.shape),
    )


def test_unknown_label_with_mixing_is_an_error():
    indices, values = random_record(np.random.default_rng(1), 4, 4, 2, 10)
    spec = PoolingSpec(original_weight=0.1)
    with pytest.raises(ConfigurationError, match="-1 means unknown") as numpy_error:
        pool(indices, values, CropBox.full(), num_classes=10, spec=spec, label=-1)
    with pytest.raises(ConfigurationError, match="in \\[0, 10\\)"):
        pool(indices, values, CropBox.full(), num_classes=10, spec=spec, label=10)
    with pytest.raises(ConfigurationError, match="-1 means unknown") as torch_error:
        batch_pool(indices, values, CropBox.full(), 10, spec, label=-1)
    # one rule, one message: the batch names the row as well
    assert str(torch_error.value) == str(numpy_error.value).replace("got -1", "row 0 has -1")
    pooler = BatchPooler(10, spec)
    with pytest.raises(ConfigurationError, match="needs labels"):
        pooler(torch.from_numpy(indices)[None], torch.from_numpy(values)[None])
    # Without mixing, an unknown label is fine.
    pool(indices, values, CropBox.full(), num_classes=10, label=-1)


def test_spec_validation():
    assert set(VARIANTS) == {"localized-multi", "global-multi", "localized-single", "global-single"}
    assert PoolingSpec().grid == (1, 1)
    assert PoolingSpec(output_size=(1, 1)).output_size == 1
    assert PoolingSpec(output_size=3).grid == (3, 3)
    assert PoolingSpec(output_size=(2, 5)).grid == (2, 5)
    spec = PoolingSpec("localized-single", (2, 3), 0.25)
    assert pickle.loads(pickle.dumps(spec)) == spec  # DataLoader workers may pickle it
    assert pickle.loads(pickle.dumps(spec)).grid == (2, 3)
    with pytest.raises(ConfigurationError, match="unknown pooling variant"):
        PoolingSpec("local")  # type: ignore[arg-type]
    for size in (0, -1, (2, 0)):
        with pytest.raises(ConfigurationError, match="output_size must be at least 1"):
            PoolingSpec(output_size=size)  # type: ignore[arg-type]
    for size in ((2,), True, 1.5, "2"):  # a ValueError, as before the error classes
        with pytest.raises(ValueError, match="output_size"):
            PoolingSpec(output_size=size)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="whole image"):
        PoolingSpec("global-multi", output_size=2)
    for weight in (-0.1, 1.5, math.nan):
        with pytest.raises(ConfigurationError, match="original_weight"):
            PoolingSpec(original_weight=weight)
    for weight in ("0.1", None, True):
        with pytest.raises(ConfigurationError, match="original_weight"):
            PoolingSpec(original_weight=weight)  # type: ignore[arg-type]
    # a numpy or torch scalar is a number (a schedule may hand one over)
    assert PoolingSpec(original_weight=np.float32(0.25)).original_weight == 0.25
    assert PoolingSpec(original_weight=torch.tensor(0.5)).original_weight == 0.5  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# boxes
# --------------------------------------------------------------------------------------------


def test_crop_box_constructors():
    assert CropBox.full() == CropBox(0.0, 0.0, 1.0, 1.0, False)
    assert CropBox.full(flipped=True).flipped is True
    box = CropBox.from_pixels(50, 30, 250, 330, image_size=(375, 500), flipped=True)
    assert box == CropBox(0.1, 0.08, 0.5, 0.88, True)
    assert isinstance(CropBox(np.float32(0.25), 0, 1, np.int64(1)).x0, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.x0 = 0.2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("coords", "message"),
    [
        ((0.3, 0.1, 0.3, 0.5), "empty"),
        ((0.1, 0.5, 0.4, 0.5), "empty"),
        ((0.6, 0.1, 0.3, 0.5), "inverted"),
        ((0.1, 0.9, 0.4, 0.2), "inverted"),
        ((math.nan, 0.0, 1.0, 1.0), "finite"),
        ((0.0, 0.0, math.inf, 1.0), "finite"),
        ((0.0, -math.inf, 1.0, 1.0), "finite"),
    ],
)
def test_invalid_boxes(coords, message):
    with pytest.raises(InvalidBoxError, match=message) as info:
        CropBox(*coords)
    assert isinstance(info.value, RelabelStoreError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("invalid crop box (x0=")

    pooler = BatchPooler(10)
    indices, values = random_record(np.random.default_rng(0), 4, 4, 2, 10)
    batch_boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], coords], dtype=torch.float64)
    with pytest.raises(InvalidBoxError, match=f"row 1 .*{message}"):
        pooler(
            torch.from_numpy(np.stack([indices, indices])),
            torch.from_numpy(np.stack([values, values])),
            batch_boxes,
        )


def test_check_refuses_what_the_pooler_cannot_pool_right():
    """BatchPooler.check: the validation a pooler built with validate=False leaves to its caller
    (LabelPooler runs it on the CPU before the batch goes to the GPU)."""
    mixing = BatchPooler(10, PoolingSpec(original_weight=0.5), validate=False)
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.2, 0.1, 0.6, 0.9]], dtype=torch.float64)
    mixing.check(good, torch.tensor([3, 9]))
    with pytest.raises(InvalidBoxError, match=r"row 1 .*inverted"):
        mixing.check(torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.6, 0.1, 0.2, 0.9]]), None)
    with pytest.raises(ConfigurationError, match=r"row 1 has 10 \(-1 means unknown\)"):
        mixing.check(good, torch.tensor([3, 10]))
    with pytest.raises(ConfigurationError, match=r"shape \(B, 4\)"):
        mixing.check(good[0], None)
    BatchPooler(10).check(good, torch.tensor([-1, -1]))  # labels matter only when mixed in
    empty = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    BatchPooler(10, PoolingSpec("global-multi")).check(empty)  # global variants ignore boxes


def test_invalid_box_inputs():
    with pytest.raises(InvalidBoxError, match="must be a number"):
        CropBox("0", 0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidBoxError, match="must be a number"):
        CropBox(None, 0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidBoxError, match="image_size"):
        CropBox.from_pixels(0, 0, 10, 10, image_size=(0, 10))
    with pytest.raises(InvalidBoxError, match="image_size"):
        CropBox.from_pixels(0, 0, 10, 10, image_size=(10,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "coords",
    [
        (1.37, 0.2, 2.42, 0.9),  # after RandomZoomOut and a crop: right of the image
        (-3.0, -3.0, 4.0, 4.0),  # a whole 7x zoomed-out canvas
        (1.5, 1.5, 2.5, 2.5),  # no image in it at all
        (-100.0, -50.0, 100.0, 60.0),  # far larger than the map
        (1000.0, 0.0, 1000.5, 1.0),  # far away
        (-1.01, 0.3, -1.0, 0.6),  # a sliver just beyond -1
    ],
    ids=repr,
)
@pytest.mark.parametrize("grid", [(1, 1), (2, 3)])
def test_any_finite_box_pools_as_roi_align(coords, grid):
    """Boxes anywhere (zoom-out crops) are pooled exactly as roi_align pools them."""
    indices, values = random_record(np.random.default_rng(11), 4, 4, 3, 12)
    spec = PoolingSpec(output_size=grid)
    for flipped in (False, True):
        box = CropBox(*coords, flipped=flipped)
        expected = reference(indices, values, box, 12, grid)
        for got in (
            pool(indices, values, box, num_classes=12, spec=spec),
            batch_pool(indices, values, box, 12, spec),
        ):
            np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL)


def test_a_box_without_image_gives_a_uniform_target():
    indices, values = random_record(np.random.default_rng(12), 15, 15, 5, 1000)
    box = CropBox(2.1, 0.0, 3.0, 1.0)
    for got in (
        pool(indices, values, box, num_classes=1000),
        batch_pool(indices, values, box, 1000),
    ):
        np.testing.assert_allclose(got, np.full(1000, 1e-3, np.float32), rtol=1e-5)


def test_boxes_partly_outside_follow_roi_align():
    """RoIAlign zero-pads beyond one cell outside the map: mass goes to the absent classes."""
    indices, values = quadrant_map()
    inside = pool(indices, values, CropBox(0.0, 0.0, 0.5, 0.5), num_classes=6)
    outside = pool(indices, values, CropBox(-1.0, -1.0, 0.5, 0.5), num_classes=6)
    assert inside.argmax() == A and outside.argmax() == A
    assert outside[A] < inside[A]
    np.testing.assert_allclose(
        outside, reference(indices, values, CropBox(-1.0, -1.0, 0.5, 0.5), 6)[0, 0], atol=ATOL
    )


# --------------------------------------------------------------------------------------------
# the batch pooler
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "grid"),
    [(v, 1) for v in VARIANTS] + [(v, (2, 3)) for v in VARIANTS if v.startswith("localized")],
)
def test_batch_pooler_agrees_with_pool(variant, grid):
    rng = np.random.default_rng(VARIANTS.index(variant) + 10 * (grid != 1))
    num_classes, count = 300, 24
    records = [random_record(rng, 15, 15, 5, num_classes) for _ in range(count)]
    crop_boxes = []
    while len(crop_boxes) < count:
        x0, x1 = sorted(rng.uniform(-0.3, 1.3, 2))
        y0, y1 = sorted(rng.uniform(-0.3, 1.3, 2))
        try:
            crop_boxes.append(CropBox(x0, y0, x1, y1, flipped=bool(rng.random() < 0.5)))
        except InvalidBoxError:
            continue
    labels = rng.integers(0, num_classes, count)
    spec = PoolingSpec(variant, grid, original_weight=0.2)
    expected = np.stack(
        [
            pool(i, v, b, num_classes=num_classes, spec=spec, label=int(lab))
            for (i, v), b, lab in zip(records, crop_boxes, labels, strict=True)
        ]
    )
    coords, flipped = stack_boxes(crop_boxes)
    got = BatchPooler(num_classes, spec)(
        torch.from_numpy(np.stack([i for i, _ in records])),
        torch.from_numpy(np.stack([v for _, v in records])),
        coords,
        flipped,
        torch.from_numpy(labels),
    )
    assert got.dtype == torch.float32 and got.shape == expected.shape
    if variant.endswith("single"):
        np.testing.assert_array_equal(got.numpy(), expected)
    else:
        np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL, atol=ATOL)


def test_batch_pooler_defaults_and_shapes():
    rng = np.random.default_rng(2)
    indices, values = random_record(rng, 6, 6, 3, 20)
    bi = torch.from_numpy(np.stack([indices] * 3)).to(torch.int32)
    bv = torch.from_numpy(np.stack([values] * 3)).to(torch.float32)
    out = BatchPooler(20)(bi, bv)  # no boxes: the whole image
    whole = pool(indices, values, CropBox.full(), num_classes=20)
    np.testing.assert_allclose(out.numpy(), np.stack([whole] * 3), rtol=RTOL, atol=ATOL)
    assert BatchPooler(20, PoolingSpec(output_size=(2, 3)))(bi, bv).shape == (3, 2, 3, 20)
    assert "num_classes=20" in repr(BatchPooler(20))
    with pytest.raises(ConfigurationError, match="boxes must have shape"):
        BatchPooler(20)(bi, bv, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ConfigurationError, match="indices and values"):
        BatchPooler(20)(bi, bv[:, :, :, :2])
    with pytest.raises(ConfigurationError, match="num_classes"):
        BatchPooler(0)
    with pytest.raises(ArgumentTypeError, match="num_classes"):
        BatchPooler(20.0)  # type: ignore[arg-type]
    empty = BatchPooler(20)(bi[:0], bv[:0], torch.zeros(0, 4, dtype=torch.float64))
    assert empty.shape == (0, 20)


def test_static_sampling_bound_matches_batch_maximum():
    """Off CPU the pooler avoids a device sync with a static window; the result is the same."""
    rng = np.random.default_rng(4)
    lo = torch.from_numpy(rng.uniform(-6.0, 3.0, 64))
    hi = lo + torch.from_numpy(rng.uniform(0.001, 9.0, 64))
    for n_out, size in [(1, 15), (3, 15), (2, 1), (7, 4)]:
        exact = _axis_weights_torch(lo, hi, n_out, size, None)
        bounded = _axis_weights_torch(lo, hi, n_out, size, sampling_window(size))
        torch.testing.assert_close(bounded, exact, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# misc
# --------------------------------------------------------------------------------------------


def test_results_are_fresh_arrays_even_when_weights_are_cached():
    indices, values = random_record(np.random.default_rng(6), 15, 15, 5, 50)
    first = pool(indices, values, CropBox.full(), num_classes=50)
    kept = first.copy()
    first[:] = 0.0
    np.testing.assert_array_equal(pool(indices, values, CropBox.full(), num_classes=50), kept)


def test_record_validation():
    indices, values = random_record(np.random.default_rng(8), 4, 4, 2, 10)
    with pytest.raises(ConfigurationError, match="shape"):
        pool(indices, values[..., :1], CropBox.full(), num_classes=10)
    with pytest.raises(ConfigurationError, match="shape"):
        pool(indices[0], values[0], CropBox.full(), num_classes=10)
    with pytest.raises(ConfigurationError, match="out of range"):
        pool(indices, values, CropBox.full(), num_classes=5)
    with pytest.raises(ConfigurationError, match="out of range"):
        pool(indices, values, CropBox.full(), num_classes=5, spec=PoolingSpec(output_size=2))


def test_targets_are_distributions():
    indices, values = random_record(np.random.default_rng(10), 15, 15, 5, 1000)
    for spec in (PoolingSpec(), PoolingSpec(output_size=4), PoolingSpec("global-multi")):
        out = pool(indices, values, CropBox(0.3, 0.1, 0.6, 0.5), num_classes=1000, spec=spec)
        assert np.all(out >= 0)
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
