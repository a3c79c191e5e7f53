"""Tracking the full geometry of user transforms (loaders/geometry.py): the tracked Region equals
the pixels' geometry, the user's draws are unchanged, and loaders pool over the region.

The geometry check feeds images whose pixels hold their own coordinates (x, y at pixel centres,
a third channel of ones) through the real pipeline: each output pixel then says which point of
the original image it shows, which the tracked Region must map it to. Bilinear (or bicubic)
resampling reproduces a linear function exactly, so away from the image's borders (where
resampling clamps, and the third channel drops below 1) the agreement is to float precision.
Photometric operations would change the coordinates themselves, so the AutoAugment-family
checks run their geometric operations only (the tracker code is the same).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import timm
import timm.data.auto_augment as timm_aa
import torch
import torchvision.transforms as T
from _stores import file_sizes, write_store
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import load_relabel
from relabel_store.loaders import LabelPooler, RelabelDataset, track_crops
from relabel_store.loaders.geometry import needs_geometry
from relabel_store.pooling import CropBox, PoolingSpec, Region, pool

H, W = 240, 320
BL = v2.InterpolationMode.BILINEAR
GEOMETRIC_V2 = {"Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
GEOMETRIC_TIMM = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
SUBPIXEL = 0.05  # pixels of the original image


def coordinate_image(height: int = H, width: int = W) -> tv_tensors.Image:
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    return tv_tensors.Image(torch.stack([xs, ys, torch.ones_like(xs)]).float())


def mapped(region: Region, out_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(2, oh, ow): the original-image point (pixels) the region maps each output pixel to."""
    oh, ow = out_size
    qy, qx = torch.meshgrid(torch.arange(oh), torch.arange(ow), indexing="ij")
    u, v = (qx.double() + 0.5) / ow, (qy.double() + 0.5) / oh
    m = torch.tensor(region.matrix, dtype=torch.float64).reshape(3, 3)
    hom = torch.einsum("ij,jhw->ihw", m, torch.stack([u, v, torch.ones_like(u)]))
    return torch.stack([hom[0] / hom[2] * size[1], hom[1] / hom[2] * size[0]])


def shown(region: Region, out_size: tuple[int, int]) -> torch.Tensor:
    """(oh, ow) whether the region says each output pixel shows the image (clips included)."""
    oh, ow = out_size
    qy, qx = torch.meshgrid(torch.arange(oh), torch.arange(ow), indexing="ij")
    u, v = (qx.double() + 0.5) / ow, (qy.double() + 0.5) / oh
    out = torch.ones(oh, ow, dtype=torch.bool)
    for clip in (region.matrix, *region.clips):
        m = torch.tensor(clip, dtype=torch.float64).reshape(3, 3)
        hom = torch.einsum("ij,jhw->ihw", m, torch.stack([u, v, torch.ones_like(u)]))
        s, t = hom[0] / hom[2], hom[1] / hom[2]
        out &= (s >= 0) & (s <= 1) & (t >= 0) & (t <= 1)
    return out


def fill_mismatches(ones: torch.Tensor, region: Region) -> int:
    """Output pixels fully of the image (``ones`` == 1) the region hides, or fully of fill
    (``ones`` == 0) it shows; pixels blending both (within half a pixel of an edge) aside."""
    said = shown(region, tuple(ones.shape[-2:]))
    return int(((ones > 0.9999) & ~said).sum() + ((ones < 1e-4) & said).sum())


def pixel_error(xs: torch.Tensor, ys: torch.Tensor, inside: torch.Tensor, region: Region) -> float:
    """Worst distance (pixels) between the tracked and the pixels' source points, over output
    pixels at least half a pixel inside the original image."""
    points = mapped(region, tuple(xs.shape[-2:]), (H, W))
    valid = inside & (points[0] >= 0.5) & (points[0] <= W - 0.5)
    valid &= (points[1] >= 0.5) & (points[1] <= H - 0.5)
    assert int(valid.sum()) > 50, "too few output pixels inside the image to check"
    dx = (points[0] - xs.double())[valid].abs().max()
    dy = (points[1] - ys.double())[valid].abs().max()
    return float(max(dx, dy))


def geometric_only(step):
    """The AutoAugment step with its photometric operations left out (coordinates must stay
    coordinates); same class, same tracker code."""
    if hasattr(step, "_AUGMENTATION_SPACE"):  # torchvision v2
        space = step._AUGMENTATION_SPACE
        step._AUGMENTATION_SPACE = {k: v for k, v in space.items() if k in GEOMETRIC_V2}
        if type(step).__name__ == "AutoAugment":
            step._policies = [
                (("ShearX", 0.9, 4), ("Rotate", 0.8, 9)),
                (("TranslateY", 0.7, 5), ("ShearY", 0.6, 3)),
                (("TranslateX", 0.9, 8), ("Rotate", 0.5, 2)),
            ]
    else:  # timm
        step.ops = [op for op in step.ops if op.name in GEOMETRIC_TIMM]
    return step


TENSOR_PIPELINES = {
    "crop-rotate30-flip": lambda: v2.Compose(
        [
            v2.RandomResizedCrop(64, antialias=False),
            v2.RandomRotation(30, interpolation=BL),
            v2.RandomHorizontalFlip(),
        ]
    ),
    "rotate-expand-crop": lambda: v2.Compose(
        [
            v2.RandomRotation(30, interpolation=BL, expand=True),
            v2.RandomResizedCrop(64, antialias=False),
        ]
    ),
    "affine-vflip-centre": lambda: v2.Compose(
        [
            v2.RandomAffine(20, (0.1, 0.1), (0.8, 1.2), (-10, 10, -5, 5), interpolation=BL),
            v2.RandomVerticalFlip(),
            v2.CenterCrop(200),
        ]
    ),
    "crop-perspective": lambda: v2.Compose(
        [
            v2.RandomResizedCrop(64, antialias=False),
            v2.RandomPerspective(0.5, p=0.8, interpolation=BL),
        ]
    ),
    "trivialaugment": lambda: v2.Compose(
        [
            v2.RandomResizedCrop(64, antialias=False),
            geometric_only(v2.TrivialAugmentWide(interpolation=BL)),
            v2.RandomHorizontalFlip(),
        ]
    ),
    "randaugment-m9": lambda: v2.Compose(
        [
            v2.RandomResizedCrop(64, antialias=False),
            geometric_only(v2.RandAugment(num_ops=3, magnitude=9, interpolation=BL)),
        ]
    ),
    "autoaugment": lambda: v2.Compose(
        [v2.Resize(150, antialias=False), geometric_only(v2.AutoAugment(interpolation=BL))]
    ),
    "v1-rotate-vflip": lambda: T.Compose(
        [
            T.RandomResizedCrop(64, antialias=False),
            T.RandomRotation(30, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomVerticalFlip(),
        ]
    ),
    "v1-affine": lambda: T.Compose(
        [T.RandomAffine(25, (0.1, 0.2), (0.7, 1.1), 10, interpolation=T.InterpolationMode.BILINEAR)]
    ),
    "random-apply-rotation": lambda: v2.Compose(
        [
            v2.RandomApply([v2.RandomRotation(45, interpolation=BL)], p=0.5),
            v2.RandomResizedCrop(64, antialias=False),
        ]
    ),
}


@pytest.mark.parametrize("name", sorted(TENSOR_PIPELINES))
def test_tracked_region_is_the_pixels_geometry(name):
    tracker = track_crops(TENSOR_PIPELINES[name](), sample=coordinate_image())
    worst = 0.0
    for seed in range(25):
        torch.manual_seed(seed)
        out, region = tracker(coordinate_image())
        assert isinstance(region, Region)
        worst = max(worst, pixel_error(out[0], out[1], out[2] > 0.9999, region))
        assert fill_mismatches(out[2], region) == 0, seed
    assert worst < SUBPIXEL, worst


def test_timm_rand_augment_on_pil_images():
    """timm's pipeline, on PIL images (its ops are PIL-only): two float images, x and y."""
    tf = timm.data.create_transform(64, is_training=True, auto_augment="rand-m9-mstd0.5")
    steps = [t for t in tf.transforms if type(t).__name__ not in ("MaybeToTensor", "Normalize")]
    steps[0] = T.RandomResizedCrop(64, interpolation=T.InterpolationMode.BILINEAR)
    ra = timm_aa.rand_augment_transform(
        "rand-m9-mstd0.5", {"img_mean": 0.0, "interpolation": Image.BILINEAR}
    )
    steps[2] = geometric_only(ra)
    image = coordinate_image()
    xs, ys = (Image.fromarray(image[c].numpy(), mode="F") for c in (0, 1))
    tracker = track_crops(T.Compose(steps), sample=xs)
    worst = 0.0
    for seed in range(25):
        outs = []
        for channel in (xs, ys):
            torch.manual_seed(seed)
            np.random.seed(seed)
            import random

            random.seed(seed)
            out, region = tracker(channel)
            outs.append((torch.from_numpy(np.array(out, dtype=np.float32)), region))
        (out_x, region), (out_y, region_y) = outs
        assert region == region_y
        # PIL fills outside with 0: keep output pixels whose 3 x 3 neighbourhood is filled
        # PIL fills outside with 0 and blends across every canvas edge (an intermediate
        # canvas's too): keep output pixels two pixels inside what the image and region show
        mask = ((out_x > 0) & (out_y > 0) & shown(region, tuple(out_x.shape))).float()[None]
        padded = torch.nn.functional.pad(mask, (2, 2, 2, 2), value=0.0)
        filled = -torch.nn.functional.max_pool2d(-padded, 5, 1, 0)[0] > 0.5
        worst = max(worst, pixel_error(out_x, out_y, filled, region))
        fill = (out_x == 0) & (out_y == 0)
        assert int((fill & shown(region, tuple(out_x.shape))).sum()) == 0, seed
    assert worst < 0.25, worst  # PIL's antialiased resize of the crop: a little at edges


def test_same_draws_as_the_untracked_pipeline():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8))
    for tf in (
        v2.Compose([v2.RandomResizedCrop(96), v2.TrivialAugmentWide(), v2.RandomHorizontalFlip()]),
        timm.data.create_transform(96, is_training=True, auto_augment="rand-m9-mstd0.5"),
        v2.Compose([v2.RandomRotation(30), v2.RandomVerticalFlip(), v2.PILToTensor()]),
    ):
        tracker = track_crops(tf)
        for seed in range(5):
            for seeded in (torch.manual_seed, np.random.seed, random.seed):
                seeded(seed)
            plain = tf(image)
            for seeded in (torch.manual_seed, np.random.seed, random.seed):
                seeded(seed)
            tracked, _ = tracker(image)
            np.testing.assert_array_equal(np.asarray(tracked), np.asarray(plain))


def test_which_pipelines_need_geometry():
    assert needs_geometry([v2.TrivialAugmentWide()])
    assert needs_geometry([v2.RandomApply([v2.RandomRotation(5)])])
    assert needs_geometry([timm_aa.rand_augment_transform("rand-m9-mstd0.5", {})])
    assert not needs_geometry([v2.RandomResizedCrop(8), v2.RandomHorizontalFlip()])
    assert not needs_geometry([v2.RandomAffine(0, translate=(0.1, 0.1))])
    assert not needs_geometry([v2.RandomVerticalFlip(p=0.0)])
    # a plain pipeline still gives crop boxes
    _, box = track_crops(v2.RandomResizedCrop(8))(coordinate_image())
    assert isinstance(box, CropBox)


# -- loaders -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    rng = np.random.default_rng(0)
    names = [f"img_{i}" for i in range(8)]
    paths = []
    for i, name in enumerate(names):
        path = root / "train" / ("a" if i % 2 else "b") / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (int(rng.integers(60, 120)), int(rng.integers(60, 160)))
        Image.fromarray(rng.integers(0, 255, (*size, 3), np.uint8)).save(path)
        paths.append(path)
    write_store(
        root / "s.zarr", keys=names, sizes=file_sizes(paths), num_classes=50,
        dataset={"name": "synthetic", "split": "train", "key_mode": "stem"},
    )  # fmt: skip
    return root


TRAIN = v2.Compose(
    [
        v2.RandomResizedCrop(48),
        v2.TrivialAugmentWide(),
        v2.RandomHorizontalFlip(),
        v2.PILToTensor(),
    ]
)


@pytest.mark.parametrize("grid", [1, (3, 3)])
def test_loader_targets_are_pooled_over_the_region(folder, grid):
    spec = PoolingSpec(output_size=grid)
    sample = RelabelDataset(ImageFolder(folder / "train"), folder / "s.zarr", TRAIN, spec=spec)
    batch = RelabelDataset(
        ImageFolder(folder / "train"), folder / "s.zarr", TRAIN, spec=spec, pooling="batch"
    )
    store = load_relabel(folder / "s.zarr")
    refs = []
    for i in range(len(sample)):
        torch.manual_seed(i)
        _, target = sample[i]
        torch.manual_seed(i)
        _, ref = batch[i]
        matrix, *clips = (tuple(m.ravel().tolist()) for m in ref["region"])
        identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        region = Region(matrix, clips=tuple(c for c in clips if c != identity))
        record = store.get_row(ref["row"])
        expected = pool(record.indices, record.values, region, num_classes=50, spec=spec)
        np.testing.assert_array_equal(np.asarray(target), expected)
        refs.append((target, ref))
    # batched: DataLoader's collation, then LabelPooler
    collated = torch.utils.data.default_collate([ref for _, ref in refs])
    pooled = LabelPooler(batch)(collated)
    torch.testing.assert_close(pooled, torch.stack([t for t, _ in refs]), atol=1e-6, rtol=0)


def test_dataloader_with_trivial_augment(folder):
    ds = RelabelDataset(ImageFolder(folder / "train"), folder / "s.zarr", TRAIN)
    images, targets = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert images.shape == (4, 3, 48, 48) and targets.shape == (4, 50)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


# -- against the brute-force reference on the pixels --------------------------------------------


def dense_map(indices: np.ndarray, values: np.ndarray, num_classes: int) -> torch.Tensor:
    height, width, _ = indices.shape
    dense = np.zeros((num_classes, height, width), dtype=np.float64)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    dense[indices.astype(np.int64), ys[..., None], xs[..., None]] = values.astype(np.float64)
    return torch.from_numpy(dense)


def pixel_reference(indices, values, num_classes, source_x, source_y, size) -> np.ndarray:
    """The brute-force target: the densified map sampled (bilinear, RoIAlign's edge rule) at the
    original-image point each output pixel shows, as the pixels themselves say, averaged over
    the output image, softmax."""
    height, width, _ = indices.shape
    gx = 2 * source_x.double() / size[1] - 1  # grid_sample, align_corners=False
    gy = 2 * source_y.double() / size[0] - 1
    px, py = source_x.double() / size[1] * width - 0.5, source_y.double() / size[0] * height - 0.5
    inside = (px >= -1) & (px <= width) & (py >= -1) & (py <= height)
    sampled = torch.nn.functional.grid_sample(
        dense_map(indices, values, num_classes)[None],
        torch.stack([gx, gy], dim=-1)[None],
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )[0]
    pooled = (sampled * inside).mean(dim=(1, 2))
    return torch.softmax(pooled, dim=0).numpy()


def test_targets_against_the_pixels_brute_force_reference():
    """Targets of rotated, sheared, translated crops against the map sampled where each output
    pixel's own coordinates say (no tracked geometry involved): they differ only by RoIAlign's
    coarser sampling grid, as much as axis-aligned crops do."""
    rng = np.random.default_rng(0)
    worst = {"warped": 0.0, "boxes": 0.0}
    pipelines = {
        "warped": v2.Compose(
            [
                v2.RandomResizedCrop(112, antialias=False),
                geometric_only(v2.TrivialAugmentWide(interpolation=BL)),
                v2.RandomRotation(30, interpolation=BL),
                v2.RandomHorizontalFlip(),
            ]
        ),
        "boxes": v2.Compose(
            [v2.RandomResizedCrop(112, antialias=False), v2.RandomHorizontalFlip()]
        ),
    }
    for name, tf in pipelines.items():
        tracker = track_crops(tf, sample=coordinate_image())
        for seed in range(40):
            indices = np.argsort(rng.random((15, 15, 50)), axis=-1)[..., :5].astype(np.uint16)
            values = (-np.sort(-rng.normal(0, 3, (15, 15, 5)), axis=-1)).astype(np.float16)
            torch.manual_seed(seed)
            out, where = tracker(coordinate_image())
            inside = out[2] > 0.9999
            source_x = torch.where(inside, out[0] / out[2].clamp_min(1e-6), -1e6)
            source_y = torch.where(inside, out[1] / out[2].clamp_min(1e-6), -1e6)
            expected = pixel_reference(indices, values, 50, source_x, source_y, (H, W))
            ours = pool(indices, values, where, num_classes=50)
            worst[name] = max(worst[name], float(np.abs(ours - expected).max()))
    assert worst["warped"] < max(3 * worst["boxes"], 5e-3), worst
    assert math.isfinite(worst["warped"])
