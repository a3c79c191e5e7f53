"""Crop-box recovery from users' own transforms, and the PyTorch dataset wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import timm.data
import torch
import torchvision.transforms as T
from _stores import photo_sizes, save_photo, write_store
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import RecordNotFoundError, load_relabel
from relabel_store.errors import ConfigurationError, UnsupportedTransformError
from relabel_store.loaders import LabelPooler, RelabelDataset, ReturnsCropBox, track_crops
from relabel_store.pooling import CropBox, PoolingSpec, Region, pool

H, W, S = 200, 256, 48


def ramp_tensor() -> torch.Tensor:
    """A float image whose channel 0 is each pixel's x centre and channel 1 its y centre."""
    y, x = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    return torch.stack([x, y, torch.zeros_like(x)])


def ramp_pil() -> Image.Image:
    t = ramp_tensor()[:2].floor().clamp(0, 255).to(torch.uint8)
    rgb = torch.cat([t, torch.zeros(1, H, W, dtype=torch.uint8)])
    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


def assert_box_matches_pixels(out: torch.Tensor, box: CropBox, tol: float) -> None:
    """Interior output pixels must show the original coordinates the box predicts."""
    oh, ow = out.shape[-2:]
    cols = torch.arange(ow) + 0.5
    rows = torch.arange(oh) + 0.5
    xs = box.x0 * W + cols * (box.x1 - box.x0) * W / ow
    if box.flipped:
        xs = xs.flip(0)
    ys = box.y0 * H + rows * (box.y1 - box.y0) * H / oh
    inner = slice(3, -3)
    got_x = out[0, oh // 2, inner]
    got_y = out[1, inner, ow // 2]
    torch.testing.assert_close(got_x, xs[inner].to(got_x), atol=tol, rtol=0)
    torch.testing.assert_close(got_y, ys[inner].to(got_y), atol=tol, rtol=0)


@pytest.mark.parametrize("seed", range(12))
def test_v2_pipeline_crop_and_flip_recovered(seed):
    torch.manual_seed(seed)
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(S, scale=(0.2, 1.0), antialias=False),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32),
        ]
    )
    out, box = track_crops(tf)(v2.functional.to_image(ramp_tensor()))
    assert_box_matches_pixels(out, box, tol=0.05)


def test_v2_flips_are_detected_both_ways():
    flips = set()
    for seed in range(20):
        torch.manual_seed(seed)
        _, box = track_crops(v2.RandomHorizontalFlip())(ramp_tensor())
        flips.add(box.flipped)
        assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((0, 0, 1, 1), abs=1e-6)
    assert flips == {True, False}


def test_v2_autoaugment_geometry_is_tracked_and_erasing_runs_on_the_image_alone():
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(S),
            v2.RandAugment(),
            v2.TrivialAugmentWide(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(p=1.0),
        ]
    )
    out, region = track_crops(tf)(ramp_pil())
    assert out.shape == (3, S, S) and isinstance(region, Region)  # their shears and rotations


@pytest.mark.parametrize("seed", range(8))
def test_v1_pipeline_crop_and_flip_recovered(seed):
    torch.manual_seed(seed)
    tf = T.Compose(
        [T.RandomResizedCrop(S, scale=(0.2, 1.0), antialias=False), T.RandomHorizontalFlip()]
    )
    out, box = track_crops(tf)(ramp_tensor())
    assert_box_matches_pixels(out, box, tol=0.05)


@pytest.mark.parametrize("seed", range(8))
def test_timm_training_pipeline_recovered(seed):
    torch.manual_seed(seed)
    tf = timm.data.create_transform(
        S, is_training=True, color_jitter=None, mean=(0, 0, 0), std=(1 / 255,) * 3
    )
    out, box = track_crops(tf)(ramp_pil())
    assert_box_matches_pixels(out, box, tol=2.0)  # uint8 image, bicubic/bilinear resampling


def test_timm_eval_pipeline_recovered():
    tf = timm.data.create_transform(S, is_training=False, mean=(0, 0, 0), std=(1 / 255,) * 3)
    out, box = track_crops(tf)(ramp_pil())
    assert not box.flipped and box.y0 > 0 and box.x0 > 0  # resize + centre crop
    assert_box_matches_pixels(out, box, tol=2.0)


def test_same_draws_as_the_untracked_pipeline():
    tf = T.Compose([T.RandomResizedCrop(S), T.RandomHorizontalFlip(), T.ToTensor()])
    torch.manual_seed(3)
    plain = tf(ramp_pil())
    torch.manual_seed(3)
    tracked, _ = track_crops(tf)(ramp_pil())
    torch.testing.assert_close(plain, tracked)


@pytest.mark.parametrize(
    "tf",
    [
        T.Compose([T.RandomCrop(S, padding=4)]),
        v2.Compose([v2.RandomRotation(10), v2.ElasticTransform()]),
        lambda img: img,
    ],
)
def test_unsupported_transforms_fail_at_construction(tf):
    with pytest.raises(UnsupportedTransformError, match="ReturnsCropBox"):
        track_crops(tf)


def test_returns_crop_box_is_the_escape_hatch():
    def crop(img):
        return img, CropBox(0.1, 0.2, 0.6, 0.9, flipped=True)

    out, box = track_crops(ReturnsCropBox(crop))("img")
    assert out == "img" and box == CropBox(0.1, 0.2, 0.6, 0.9, True)
    with pytest.raises(UnsupportedTransformError, match="not a CropBox"):
        track_crops(ReturnsCropBox(lambda img: (img, (0, 0, 1, 1))))("img")


# -- RelabelDataset ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder whose file stems are the keys of a store."""
    root = tmp_path_factory.mktemp("ds")
    written = write_store(root / "s.zarr", 24, num_classes=1000, sizes=photo_sizes(24))
    rng = np.random.default_rng(0)
    for i, key in enumerate(written.keys[:12]):
        save_photo(root / "images" / f"class{i % 3}" / f"{key}.JPEG", written.sizes[i], rng)
    return root


def fixed_crop(img):
    return v2.functional.to_dtype(
        v2.functional.to_image(img.resize((32, 32))), torch.float32, scale=True
    ), CropBox(0.25, 0.0, 0.75, 0.5)


def test_dataset_targets_are_label_pooling_of_the_record(folder):
    base = ImageFolder(folder / "images")
    store = load_relabel(folder / "s.zarr")
    ds = RelabelDataset(base, store, ReturnsCropBox(fixed_crop))
    assert len(ds) == 12
    for i in range(len(ds)):
        image, target = ds[i]
        rec = store.get(ds.base.samples[i][0].rsplit("/", 1)[1].split(".")[0])
        expected = pool(rec.indices, rec.values, CropBox(0.25, 0.0, 0.75, 0.5), num_classes=1000)
        assert image.shape == (3, 32, 32) and target.dtype == torch.float32
        np.testing.assert_allclose(target.numpy(), expected)
        assert target.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_dataset_with_a_v2_pipeline_and_workers(folder):
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(32),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    ds = RelabelDataset(ImageFolder(folder / "images"), folder / "s.zarr", tf)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    seen = 0
    for images, targets in loader:
        assert images.shape[1:] == (3, 32, 32) and targets.shape[1:] == (1000,)
        torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)))
        seen += len(images)
    assert seen == 12


@pytest.mark.slow
def test_dataset_under_spawned_workers(folder):
    ds = RelabelDataset(
        ImageFolder(folder / "images"), folder / "s.zarr", ReturnsCropBox(fixed_crop)
    )
    expected = torch.stack([ds[i][1] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=6, num_workers=2, multiprocessing_context="spawn")
    got = torch.cat([t for _, t in loader])
    torch.testing.assert_close(got, expected)


def test_batch_pooling_matches_per_sample_pooling(folder):
    base = ImageFolder(folder / "images")
    spec = PoolingSpec(output_size=2)
    per_sample = RelabelDataset(base, folder / "s.zarr", ReturnsCropBox(fixed_crop), spec=spec)
    deferred = RelabelDataset(
        base, folder / "s.zarr", ReturnsCropBox(fixed_crop), spec=spec, pooling="batch"
    )
    pooler = LabelPooler(deferred.store, spec)
    _images, refs = next(iter(DataLoader(deferred, batch_size=12)))
    expected = torch.stack([per_sample[i][1] for i in range(12)])
    torch.testing.assert_close(pooler(refs), expected)


def test_missing_keys_fail_at_construction_or_fall_back(folder):
    base = ImageFolder(folder / "images")
    stem = [p.rsplit("/", 1)[1].split(".")[0] for p, _ in base.samples]
    with pytest.raises(RecordNotFoundError, match=r"2 of 12 keys are not in store.*missing="):
        RelabelDataset(base, folder / "s.zarr", key_fn=lambda i: stem[i] if i > 1 else "other")
    ds = RelabelDataset(
        base, folder / "s.zarr", ReturnsCropBox(fixed_crop),
        key_fn=lambda i: "other" if i == 4 else stem[i],
        missing="original", class_map=range(3),  # the folders' labels are the store's ids
    )  # fmt: skip
    _, target = ds[4]
    assert target.argmax().item() == base[4][1] and target.max().item() == 1.0


@pytest.mark.parametrize("missing", ["error", "original"])
def test_no_key_in_the_store_is_refused_even_with_missing_original(folder, missing):
    """Keys derived another way than the store's (or another dataset's store): every target
    would be a one-hot label, so missing='original' is no fix and the message does not offer it."""
    base = ImageFolder(folder / "images")
    with pytest.raises(
        ConfigurationError,
        match=r"none of the 12 keys is in store .*key_fn, e\.g\. \['other_0'.*store's are like \['img_",
    ) as refused:
        RelabelDataset(
            base, folder / "s.zarr", key_fn=lambda i: f"other_{i}", missing=missing,
            class_map=range(3),
        )  # fmt: skip
    assert "or pass missing='original'" not in str(refused.value)


def test_an_image_that_is_not_its_record_is_refused(folder, tmp_path):
    """A turned (EXIF) or cropped copy of a record's image would give every crop the wrong box."""
    base = ImageFolder(folder / "images")
    path = base.samples[2][0]
    turned = tmp_path / "images" / "class0" / path.rsplit("/", 1)[1]
    turned.parent.mkdir(parents=True)
    with Image.open(path) as image:
        h, w = image.height, image.width
        image.transpose(Image.Transpose.ROTATE_90).save(turned)
    ds = RelabelDataset(
        ImageFolder(tmp_path / "images"), folder / "s.zarr", ReturnsCropBox(fixed_crop)
    )
    with pytest.raises(ConfigurationError, match=rf"is {w} x {h} pixels .* from a {h} x {w} image"):
        ds[0]
    with pytest.raises(ConfigurationError, match="another shape"):
        next(iter(DataLoader(ds, batch_size=1)))


def test_squashed_whole_images_need_check_sizes_false(folder, tmp_path):
    """A whole image squashed to another aspect ratio (downsampled ImageNet 64x64) keeps crop
    fractions: refused by default like any other shape, pooled as the record with the opt-out."""
    base = ImageFolder(folder / "images")
    path = base.samples[2][0]
    squashed = tmp_path / "images" / "class0" / path.rsplit("/", 1)[1]
    squashed.parent.mkdir(parents=True)
    with Image.open(path) as image:
        image.resize((16, 16)).save(squashed)
    store = load_relabel(folder / "s.zarr")
    transform = ReturnsCropBox(fixed_crop)
    refusing = RelabelDataset(ImageFolder(tmp_path / "images"), store, transform)
    with pytest.raises(ConfigurationError, match=r"another shape.*pass check_sizes=False"):
        refusing[0]
    ds = RelabelDataset(ImageFolder(tmp_path / "images"), store, transform, check_sizes=False)
    _, target = ds[0]
    record = store.get_row(int(ds.rows[0]))
    _, box = fixed_crop(Image.open(squashed))
    expected = pool(record.indices, record.values, box, num_classes=store.metadata.num_classes)
    np.testing.assert_array_equal(target, expected)
    with pytest.raises(TypeError, match="check_sizes must be True or False"):
        RelabelDataset(base, store, transform, check_sizes="no")  # type: ignore[arg-type]


def test_base_dataset_without_paths_needs_key_fn(folder):
    with pytest.raises(TypeError, match="key_fn"):
        RelabelDataset([(Image.new("RGB", (8, 8)), 0)], folder / "s.zarr")


# timm's ImageDataset leaves the files it opens to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_timm_image_dataset_keys(folder):
    from timm.data import ImageDataset

    base = ImageDataset(str(folder / "images"))
    ds = RelabelDataset(base, folder / "s.zarr", ReturnsCropBox(fixed_crop))
    assert (ds.rows >= 0).all() and len(ds) == 12


def test_soft_targets_through_cutmix_mixup_and_timm_mixup(folder):
    tf = v2.Compose([v2.RandomResizedCrop(32), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    ds = RelabelDataset(ImageFolder(folder / "images"), folder / "s.zarr", tf)
    images, targets = next(iter(DataLoader(ds, batch_size=6)))
    for mix in (v2.CutMix(num_classes=1000), v2.MixUp(num_classes=1000)):
        _mixed_images, mixed = mix(images, targets)
        assert mixed.shape == targets.shape
        torch.testing.assert_close(mixed.sum(1), torch.ones(6))
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=0.8, label_smoothing=0.0, num_classes=1000, multi_label=True)
    _, mixed = mixup(images.clone(), targets.clone())
    torch.testing.assert_close(mixed.sum(1), torch.ones(6))
    assert not torch.equal(mixed, targets)


@pytest.mark.parametrize("seed", range(10))
def test_v2_fast_path_agrees_with_the_box_probe(seed):
    from relabel_store.loaders.crops import _StepWalker, _V2Probe

    tf = v2.Compose(
        [
            v2.RandomResizedCrop(S, scale=(0.1, 1.0)),
            v2.RandomHorizontalFlip(),
            v2.CenterCrop(S - 8),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    assert isinstance(track_crops(tf), _StepWalker)
    torch.manual_seed(seed)
    out_fast, fast = track_crops(tf)(ramp_pil())
    torch.manual_seed(seed)
    out_probe, probe = _V2Probe(tf)(ramp_pil())
    torch.testing.assert_close(out_fast, out_probe)
    assert fast.flipped == probe.flipped
    assert (fast.x0, fast.y0, fast.x1, fast.y1) == pytest.approx(
        (probe.x0, probe.y0, probe.x1, probe.y1), abs=1e-5
    )


@pytest.mark.parametrize("seed", range(6))
def test_v2_geometry_beyond_crops_uses_the_probe(seed):
    from relabel_store.loaders.crops import _V2Probe

    shift = v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1))
    tracker = track_crops(v2.Compose([shift, v2.RandomResizedCrop(S, antialias=False)]))
    assert isinstance(tracker, _V2Probe)
    torch.manual_seed(seed)
    out, box = tracker(ramp_tensor())
    assert out.shape[-2:] == (S, S) and box.x1 > box.x0
    # Pixels the shift filled show 0; the others show their original coordinates.
    inside = out[0] > 0
    cols = torch.arange(S) + 0.5
    xs = box.x0 * W + cols * (box.x1 - box.x0) * W / S
    xs = xs.flip(0) if box.flipped else xs
    rows = inside[:, 3:-3].all(dim=1).nonzero().flatten()
    if len(rows):
        got = out[0, rows[len(rows) // 2], 3:-3]
        torch.testing.assert_close(got, xs[3:-3].to(got), atol=0.6, rtol=0)


def test_batched_fetch_equals_per_sample_targets(folder):
    base = ImageFolder(folder / "images")
    ds = RelabelDataset(
        base, folder / "s.zarr", ReturnsCropBox(fixed_crop), key_fn=lambda i: (
            "absent" if i == 5 else base.samples[i][0].rsplit("/", 1)[1].split(".")[0]
        ), missing="original", class_map=range(3),
    )  # fmt: skip
    expected = torch.stack([ds[i][1] for i in range(len(ds))])
    _images, targets = next(iter(DataLoader(ds, batch_size=12)))  # DataLoader uses __getitems__
    torch.testing.assert_close(targets, expected)
    assert targets[5].argmax().item() == base[5][1] and targets[5].max().item() == 1.0


@pytest.mark.parametrize(
    "spec",
    [PoolingSpec(), PoolingSpec(variant="localized-single"), PoolingSpec(output_size=3)],
    ids=["multi", "single", "tokens"],
)
def test_a_sample_gets_the_same_target_bits_in_any_batch(tmp_path, spec):
    """Pooled alone or in a DataLoader batch of 64: the same target, bit for bit (a *-single
    argmax near a tie included), so a run does not depend on its batch size."""
    written = write_store(tmp_path / "s.zarr", 64, sizes=photo_sizes(64, seed=1), seed=1)
    base = [(Image.new("RGB", (int(w), int(h))), 0) for h, w in written.sizes]

    def crop(image):  # a different, reproducible box for every image shape
        r = np.random.default_rng(image.width * 1000 + image.height).random(4) * 0.5
        box = CropBox(r[0], r[1], r[2] + 0.5, r[3] + 0.5, flipped=bool(image.width % 2))
        return torch.zeros(3, 2, 2), box

    ds = RelabelDataset(
        base, written.path, ReturnsCropBox(crop), key_fn=lambda i: written.keys[i], spec=spec
    )
    alone = torch.stack([ds[i][1] for i in range(64)])
    (_, batched), *_ = DataLoader(ds, batch_size=64)
    assert torch.equal(batched, alone)
