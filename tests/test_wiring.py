"""No silent wrong targets: every wiring a new user gets wrong works or is refused at build time.

One section per case of issue 11. Each test asserts what the user gets: the refusal when the
dataset (or transform, or mixer) is built, with the fix in the message, or the right target,
compared with the target pooled from the crop box that actually happened. Real torchvision,
timm and ``datasets`` objects throughout.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import timm.data
import torch
import torchvision.transforms as T
from _stores import file_sizes, write_store
from PIL import Image
from timm.data import ImageNetInfo
from torch.utils.data import DataLoader, Subset, default_collate
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import (
    ArgumentTypeError,
    ConfigurationError,
    LabelSpaceError,
    UnsupportedTransformError,
    load_relabel,
)
from relabel_store.errors import InputError
from relabel_store.format.keys import key_from_path
from relabel_store.loaders import (
    LabelPooler,
    RelabelDataset,
    ReturnsCropBox,
    check_mixing,
    relabel_transform,
    timm_mixup,
    track_crops,
)
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.write.inputs import open_inputs

H, W, S = 160, 200, 32
INFO = ImageNetInfo("imagenet-1k")
WNIDS = tuple(INFO.index_to_label_name(i) for i in range(1000))
TENCH, CAT = "n01440764", "n02124075"  # store classes 0 and 285
# timm's ImageDataset leaves the files it opens to the garbage collector.
TIMM_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def ramp(seed: int = 0) -> Image.Image:
    """Channel 0 holds each pixel's x, channel 1 its y: crops show where they came from."""
    y, x = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    blue = np.full((H, W), seed % 256)
    return Image.fromarray(np.stack([x, y, blue], axis=-1).astype(np.uint8))


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """ImageNet-layout folders (tench and cat) and a store with ImageNet's class ids.

    ``train`` holds six images, all in the store; ``extra`` the same plus ``n02124075_4``,
    which has no record.
    """
    root = tmp_path_factory.mktemp("imagenet")
    names = [f"{wnid}_{i}" for wnid in (TENCH, CAT) for i in (1, 2, 3)]
    for folder, listed in (("train", names), ("extra", [*names, f"{CAT}_4"])):
        for i, name in enumerate(listed):
            path = root / folder / name.split("_")[0] / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            ramp(i).save(path)
    write_store(
        root / "s.zarr",
        keys=names,
        sizes=file_sizes(root / "train" / n.split("_")[0] / f"{n}.png" for n in names),
        label_space="imagenet-1k",
        class_identifiers=WNIDS,
        dataset={"name": "imagenet", "split": "train", "key_mode": "stem"},
    )
    return SimpleNamespace(
        root=root, train=root / "train", extra=root / "extra", store=root / "s.zarr", keys=names
    )


def target_for(store_path, key: str, box: CropBox, spec: PoolingSpec | None = None, label=-1):
    rec = load_relabel(store_path).get(key)
    spec = spec or PoolingSpec()
    return pool(rec.indices, rec.values, box, num_classes=1000, spec=spec, label=label)


def key_of(ds: RelabelDataset, i: int) -> str:
    return ds.store.keys[ds.rows[i]].decode()


def replay(ds: RelabelDataset, i: int, seed: int):
    """(image, box) the dataset's tracker gives sample ``i`` under ``seed``: the crop that
    ``ds[i]`` takes under the same seed."""
    raw = ds.base[i][0]
    torch.manual_seed(seed)
    random.seed(seed)
    return ds.track(raw)


TRAIN_V2 = v2.Compose(
    [
        v2.RandomResizedCrop(S, scale=(0.05, 0.3)),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ]
)


def assert_right_target(ds: RelabelDataset, i: int, seed: int) -> None:
    """``ds[i]`` under ``seed`` is the target pooled from the box of the crop it returned, and
    not the whole image's."""
    torch.manual_seed(seed)
    random.seed(seed)
    image, target = ds[i]
    replayed, box = replay(ds, i, seed)
    torch.testing.assert_close(image, replayed)
    want = target_for(ds.store, key_of(ds, i), box, ds.spec)
    np.testing.assert_allclose(target.numpy(), want, rtol=1e-5, atol=1e-7)
    whole = target_for(ds.store, key_of(ds, i), CropBox.full(), ds.spec)
    assert np.abs(want - whole).max() > 1e-5  # the bug this guards against would give `whole`


# -- 1. a transform on the base dataset ------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_a_transform_on_image_folder_is_taken_over(imagenet, seed):
    folder = ImageFolder(imagenet.train, transform=TRAIN_V2)
    ds = RelabelDataset(folder, imagenet.store)
    assert ds.transform is TRAIN_V2 and ds.base.transform is None
    assert folder.transform is TRAIN_V2  # the user's object is left alone
    assert_right_target(ds, 1, seed)


@TIMM_LEAK
def test_a_transform_on_timm_image_dataset_is_taken_over(imagenet):
    base = timm.data.ImageDataset(str(imagenet.train), transform=TRAIN_V2)
    ds = RelabelDataset(base, imagenet.store)
    assert ds.base.transform is None and ds.base._max_retries == 1  # no silent substitutes
    assert_right_target(ds, 0, seed=4)


def test_a_transform_inside_a_subset_is_taken_over(imagenet):
    ds = RelabelDataset(
        Subset(ImageFolder(imagenet.train, transform=TRAIN_V2), [4, 0]), imagenet.store
    )
    assert key_of(ds, 0) == f"{CAT}_2" and key_of(ds, 1) == f"{TENCH}_1"
    assert_right_target(ds, 0, seed=5)


def test_a_transform_on_both_is_refused(imagenet):
    with pytest.raises(
        ConfigurationError, match=r"(?i)pass the transform to RelabelDataset instead"
    ):
        RelabelDataset(ImageFolder(imagenet.train, transform=TRAIN_V2), imagenet.store, TRAIN_V2)


def test_a_transform_on_an_unknown_dataset_is_refused(imagenet):
    class Photos(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform
            self.samples = ImageFolder(imagenet.train).samples
            self.root = str(imagenet.train)

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            return self.transform(Image.open(self.samples[i][0])), self.samples[i][1]

    with pytest.raises(
        ConfigurationError, match=r"(?i)pass the transform to RelabelDataset instead"
    ):
        RelabelDataset(Photos(TRAIN_V2), imagenet.store)


def test_a_formatted_hf_dataset_is_refused_or_read_unformatted(imagenet):
    ds = hf_imagefolder(imagenet)
    ds.set_transform(lambda batch: batch)
    with pytest.raises(ConfigurationError, match="Pass the image transform to RelabelDataset"):
        RelabelDataset(ds, imagenet.store, TRAIN_V2)
    relabelled = RelabelDataset(ds.with_format("torch"), imagenet.store, TRAIN_V2)
    assert_right_target(relabelled, 2, seed=6)


# -- 2. timm's create_loader --------------------------------------------------------------------


def box_from_ramp(image: torch.Tensor) -> CropBox:
    """The crop an output of a ramp image shows, from its pixels (least squares on the
    interior; timm resamples with antialiasing, so the edges blur)."""
    out = image.double()
    j = torch.arange(out.shape[-1], dtype=torch.float64) + 0.5
    xs = out[0, 4:-4, 4:-4].mean(0) + 0.5  # the source x of each output column's centre
    ys = out[1, 4:-4, 4:-4].mean(1) + 0.5
    jj = j[4:-4]
    bx, ax = np.polyfit(jj.numpy(), xs.numpy(), 1)
    by, ay = np.polyfit(jj.numpy(), ys.numpy(), 1)
    n = out.shape[-1]
    x_left, x_right = sorted((ax, ax + bx * n))
    return CropBox(x_left / W, ay / H, x_right / W, (ay + by * n) / H, flipped=bx < 0)


@TIMM_LEAK
@pytest.mark.parametrize("prefetcher", [False, True])
def test_timm_create_loader_tracks_the_transform_it_assigns(imagenet, prefetcher):
    base = timm.data.ImageDataset(str(imagenet.train))
    ds = RelabelDataset(base, imagenet.store)
    loader = timm.data.create_loader(
        ds, (3, S, S), batch_size=len(ds), is_training=True, scale=(0.08, 0.5), color_jitter=0.0,
        mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, num_workers=0, use_prefetcher=prefetcher,
        device=torch.device("cpu"), persistent_workers=False,
    )  # fmt: skip
    assert ds.transform is not None and type(ds.transform).__name__ == "Compose"
    images, targets = next(iter(loader))
    assert targets.shape == (len(ds), 1000) and targets.dtype == torch.float32
    names = sorted(p.name for p in imagenet.train.rglob("*.png"))
    for image, target in zip(images, targets, strict=True):
        name = names[round(float(image[2].mean()))]  # the ramp's blue channel: which file
        key = name.removesuffix(".png")
        box = box_from_ramp(image)
        want = target_for(imagenet.store, key, box)
        whole = target_for(imagenet.store, key, CropBox.full())
        err = np.abs(target.numpy() - want).max()
        assert err < 0.25 * np.abs(target.numpy() - whole).max()  # not the whole image's


def test_timm_augmix_splits_track_the_primary_stage(imagenet):
    """train.py with --aug-splits: AugMixDataset hands RelabelDataset the crop stage and runs the
    pixel-only AugMix and normalisation stages on its output."""
    ds = RelabelDataset(ImageFolder(imagenet.train), imagenet.store)
    loader = timm.data.create_loader(
        timm.data.AugMixDataset(ds, num_splits=2), (3, S, S), batch_size=4, is_training=True,
        num_aug_splits=2, auto_augment="augmix-m5-w4-d2", device=torch.device("cpu"),
        num_workers=0, persistent_workers=False,
    )  # fmt: skip
    names = [type(step).__name__ for step in ds.transform.transforms]
    assert names[0] == "RandomResizedCropAndInterpolation" and "AugMixAugment" not in names
    images, targets = next(iter(loader))
    assert images.shape == (8, 3, S, S) and targets.shape == (8, 1000)  # two splits
    torch.testing.assert_close(targets[:4], targets[4:])
    torch.testing.assert_close(targets.sum(1), torch.ones(8))


@TIMM_LEAK
def test_timm_prefetcher_with_batch_pooling_is_refused_naming_the_flag(imagenet):
    ds = RelabelDataset(
        timm.data.ImageDataset(str(imagenet.train)),
        imagenet.store,
        pooling="batch",
        missing="original",
    )
    with pytest.raises(ConfigurationError, match="use_prefetcher=False"):
        timm.data.create_loader(
            ds, (3, S, S), batch_size=2, is_training=True, device=torch.device("cpu")
        )
    loader = timm.data.create_loader(
        ds, (3, S, S), batch_size=2, is_training=True, use_prefetcher=False, num_workers=0,
        persistent_workers=False,
    )  # fmt: skip
    _images, refs = next(iter(loader))
    assert LabelPooler(ds)(refs).shape == (2, 1000)


@TIMM_LEAK
def test_timm_scheduled_input_sizes_are_refused(imagenet):
    ds = RelabelDataset(
        timm.data.ImageDataset(str(imagenet.train)), imagenet.store, missing="original"
    )
    with pytest.raises(ConfigurationError, match="input_size_choices"):
        timm.data.create_loader(
            ds, (3, S, S), batch_size=2, is_training=True, input_size_choices=[S, 2 * S],
            device=torch.device("cpu"),
        )  # fmt: skip


# -- 3. class spaces ----------------------------------------------------------------------------


def test_the_fallback_label_is_the_store_class_of_the_folder(imagenet):
    folder = ImageFolder(imagenet.extra)  # labels: tench 0, cat 1
    ds = RelabelDataset(folder, imagenet.store, missing="original")
    missing = next(i for i, (p, _) in enumerate(folder.samples) if p.endswith(f"{CAT}_4.png"))
    assert folder[missing][1] == 1 and ds.rows[missing] == -1
    _, target = ds[missing]
    assert target.argmax().item() == 285 and target.max().item() == 1.0  # not class 1


@pytest.mark.parametrize("pooling", ["sample", "batch"])
def test_original_weight_goes_to_the_store_class(imagenet, pooling):
    folder = ImageFolder(imagenet.train)
    spec = PoolingSpec(original_weight=0.25)
    box = CropBox(0.1, 0.1, 0.6, 0.7)
    fixed = ReturnsCropBox(lambda im: (v2.functional.pil_to_tensor(im), box))
    ds = RelabelDataset(
        folder, imagenet.store, fixed, spec=spec, missing="original", pooling=pooling
    )
    i = next(i for i, (p, _) in enumerate(folder.samples) if p.endswith(f"{CAT}_1.png"))
    if pooling == "sample":
        target = ds[i][1].numpy()
    else:
        _, refs = next(iter(DataLoader(Subset(ds, [i]), batch_size=1)))
        target = LabelPooler(ds)(refs)[0].numpy()
    want = target_for(imagenet.store, f"{CAT}_1", box, spec, label=285)
    np.testing.assert_allclose(target, want, rtol=1e-5, atol=1e-6)
    assert target[285] >= 0.25


@TIMM_LEAK
def test_timm_class_map_is_matched_too(imagenet):
    ds = RelabelDataset(
        timm.data.ImageDataset(str(imagenet.extra)), imagenet.store, missing="original"
    )
    i = next(i for i in range(len(ds)) if ds.rows[i] < 0)
    assert ds[i][1].argmax().item() == 285


def test_unmatched_class_names_are_refused_until_a_class_map_is_given(imagenet, tmp_path):
    for name in ("cat", "fish"):
        (tmp_path / name).mkdir()
    Image.open(imagenet.extra / CAT / f"{CAT}_4.png").save(tmp_path / "cat" / f"{CAT}_4.png")
    Image.open(imagenet.train / TENCH / f"{TENCH}_1.png").save(tmp_path / "fish" / f"{TENCH}_1.png")
    folder = ImageFolder(tmp_path)
    with pytest.raises(LabelSpaceError, match=r"missing='original'.*\['cat'.*class_map="):
        RelabelDataset(folder, imagenet.store, missing="original")
    RelabelDataset(Subset(folder, [1]), imagenet.store)  # labels unused: nothing to match
    ds = RelabelDataset(
        folder, imagenet.store, missing="original", class_map={"cat": 285, "fish": 0}
    )
    assert ds[0][1].argmax().item() == 285


def test_a_store_without_class_identifiers_refuses_to_mix_labels(imagenet, tmp_path):
    # No label space recorded.
    old = write_store(tmp_path / "old.zarr", keys=imagenet.keys, sizes=[(H, W)] * 6)
    with pytest.raises(LabelSpaceError, match=r"original_weight.*class_map"):
        RelabelDataset(ImageFolder(imagenet.train), old.path, spec=PoolingSpec(original_weight=0.1))
    mapped = RelabelDataset(
        ImageFolder(imagenet.train), old.path, spec=PoolingSpec(original_weight=0.1),
        class_map={TENCH: 0, CAT: 285},
    )  # fmt: skip
    assert mapped[4][1][285] >= 0.1  # a cat


def test_a_label_pooler_mixing_labels_checks_its_dataset(imagenet, tmp_path):
    old = write_store(tmp_path / "old.zarr", keys=imagenet.keys, sizes=[(H, W)] * 6)
    ds = RelabelDataset(ImageFolder(imagenet.train), old.path, pooling="batch")
    with pytest.raises(LabelSpaceError, match="original_weight"):
        LabelPooler(ds, PoolingSpec(original_weight=0.1))


def test_hf_transform_matches_classlabel_names(imagenet):
    ds = hf_imagefolder(imagenet)
    names = ds.features["label"].names
    assert names == [TENCH, CAT]
    spec = PoolingSpec(original_weight=0.5)
    with pytest.raises(LabelSpaceError, match=r"class_names=ds.features\['label'\].names"):
        relabel_transform(imagenet.store, spec=spec)
    tf = relabel_transform(imagenet.store, spec=spec, class_names=names, missing="original")
    targets = ds.with_transform(tf)[:]["labels"]
    labels = ds["label"]
    for target, label in zip(targets, labels, strict=True):
        assert target[(0, 285)[label]] >= 0.5


def hf_imagefolder(imagenet) -> datasets.Dataset:
    """The folder as a datasets.Dataset: ClassLabel names are the folder names (wnids)."""
    files = sorted(imagenet.train.rglob("*.png"))
    names = [TENCH, CAT]
    return datasets.Dataset.from_dict(
        {"image": [str(f) for f in files], "label": [names.index(f.parent.name) for f in files]},
        datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}),
    )


# -- 4. pipelines that cannot be tracked ----------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [v2.RandomResizedCrop(S), lambda img: img],
            r"step 2 \(function .*<lambda>\).*v2.Lambda\(fn, PIL",
        ),
        (
            [v2.RandomResizedCrop(S), v2.Lambda(lambda img: img)],
            r"step 2 \(v2.Lambda.*crop-box probe included",
        ),
        ([v2.RandomResizedCrop(S), v2.FiveCrop(16)], r"FiveCrop\) returns several crops"),
        ([T.TenCrop(16)], r"TenCrop\) returns several crops"),
        (
            [v2.RandomResizedCrop(S), v2.ElasticTransform()],
            r"ElasticTransform\) rotates, shears or warps",
        ),
        (
            [v2.RandomRotation(10), v2.ElasticTransform()],
            r"ElasticTransform\) warps the image non-linearly",
        ),
        ([v2.RandomRotation(10), v2.AugMix()], r"AugMix\) blends several"),
        ([T.RandomRotation(10), T.RandAugment()], r"torchvision v1's RandAugment"),
        ([v2.RandomRotation(10), v2.RandomChoice([v2.Pad(2)])], "cannot follow the geometry"),
        ([v2.RandomIoUCrop()], "detection step"),
        ([v2.RandomCrop(4 * W)], r"failed on a test image .*step 1 \(RandomCrop\)"),
        (
            [v2.CenterCrop(S), v2.Lambda(lambda im: im.crop((0, 0, 8, 8)), Image.Image)],
            r"step 2 .* changed the image size",
        ),
    ],
)
def test_untrackable_pipelines_are_refused_at_construction(imagenet, steps, message):
    with pytest.raises(UnsupportedTransformError, match=message):
        RelabelDataset(ImageFolder(imagenet.train), imagenet.store, v2.Compose(steps))


class Tilt(v2.Transform):
    """A geometric step the tracker does not know by name."""

    def transform(self, inpt, params):
        return self._call_kernel(v2.functional.rotate, inpt, angle=12.0)


def test_unknown_geometry_that_is_not_a_crop_is_caught_by_the_probe(imagenet):
    with pytest.raises(UnsupportedTransformError, match="rotation, shear, warp or vertical flip"):
        RelabelDataset(
            ImageFolder(imagenet.train),
            imagenet.store,
            v2.Compose([Tilt(), v2.RandomResizedCrop(S)]),
        )


def test_pixel_only_user_functions_and_pure_shifts_are_tracked(imagenet):
    invert = v2.Lambda(lambda im: Image.eval(im, lambda v: 255 - v), Image.Image, tv_tensors.Image)
    shift = v2.RandomAffine(degrees=0, translate=(0.1, 0.1))
    tf = v2.Compose([invert, shift, v2.RandomResizedCrop(S, scale=(0.1, 0.4)), v2.ToImage()])
    ds = RelabelDataset(ImageFolder(imagenet.train), imagenet.store, tf)
    assert_right_target(ds, 3, seed=7)


def test_construction_leaves_the_random_generators_alone(imagenet):
    def draws():
        return torch.rand(3).tolist(), random.random(), np.random.rand()

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = draws()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    RelabelDataset(
        ImageFolder(imagenet.train), imagenet.store, timm.data.create_transform(S, is_training=True)
    )
    assert draws() == expected


# -- 5. RandomZoomOut: boxes beyond the image ----------------------------------------------------


def test_zoom_out_crops_get_roi_align_targets(imagenet):
    tf = v2.Compose(
        [
            v2.RandomZoomOut(side_range=(2.0, 4.0), p=1.0),
            v2.RandomResizedCrop(S, scale=(0.01, 0.05)),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
        ]
    )
    ds = RelabelDataset(ImageFolder(imagenet.train), imagenet.store, tf, missing="original")
    deferred = RelabelDataset(
        ImageFolder(imagenet.train), imagenet.store, tf, missing="original", pooling="batch"
    )
    pooler = LabelPooler(deferred)  # BatchPooler: the same boxes, batched
    stored = [i for i in range(len(ds)) if ds.rows[i] >= 0]
    boxes = []
    for seed in range(12):
        torch.manual_seed(seed)
        batch = ds.__getitems__(stored)  # what a DataLoader worker calls
        torch.manual_seed(seed)
        pooled = pooler(default_collate(deferred.__getitems__(stored))[1])
        torch.manual_seed(seed)
        for (image, target), i, batched in zip(batch, stored, pooled, strict=True):
            replayed, box = ds.track(ds.base[i][0])
            torch.testing.assert_close(image, replayed)
            want = target_for(imagenet.store, key_of(ds, i), box)
            np.testing.assert_allclose(target.numpy(), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(batched.numpy(), want, rtol=1e-5, atol=1e-6)
            boxes.append(box)
    assert any(min(b.x0, b.y0) < -1.0 or max(b.x1, b.y1) > 2.0 for b in boxes)
    # Beyond a cell outside the map, RoIAlign samples nothing: a uniform target.
    away = [b for b in boxes if b.x0 > 1.1 or b.x1 < -0.1 or b.y0 > 1.1 or b.y1 < -0.1]
    assert away, "no crop missed the image: the test does not cover zoom-out boxes"
    uniform = target_for(imagenet.store, key_of(ds, 0), away[0])
    np.testing.assert_allclose(uniform, np.full(1000, 1e-3), rtol=1e-5)


# -- 6. mixing -----------------------------------------------------------------------------------


def soft_targets(store_path, n=4) -> torch.Tensor:
    store = load_relabel(store_path)
    boxes = [CropBox(0.0, 0.0, 0.5, 0.5), CropBox(0.5, 0.5, 1.0, 1.0)]
    rows = [store.get_row(i % len(store)) for i in range(n)]
    return torch.from_numpy(
        np.stack(
            [pool(r.indices, r.values, boxes[i % 2], num_classes=1000) for i, r in enumerate(rows)]
        )
    )


def assert_mixed_pairwise(mixed: torch.Tensor, targets: torch.Tensor) -> None:
    """Each mixed row is lam * its target + (1 - lam) * its partner's (timm mixes row i with
    row B - 1 - i), 0 <= lam <= 1: a distribution again."""
    partner = targets.flip(0)
    diff = (targets - partner).double()
    lam = ((mixed - partner).double() * diff).sum(1) / (diff * diff).sum(1)
    assert ((lam >= -1e-6) & (lam <= 1 + 1e-6)).all()
    rebuilt = lam[:, None] * targets + (1 - lam[:, None]) * partner
    torch.testing.assert_close(mixed.double(), rebuilt, atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed.sum(1), torch.ones(len(mixed)))


def test_timm_mixup_defaults_are_refused_with_the_fix(imagenet):
    with pytest.raises(
        ConfigurationError, match=r"label_smoothing=0\.1.*sums to about 51.*--smoothing 0"
    ):
        check_mixing(timm.data.Mixup(multi_label=True, num_classes=1000), 1000)
    with pytest.raises(ConfigurationError, match=r"multi_label=False.*class 0.*SoftMixup"):
        check_mixing(
            timm.data.Mixup(label_smoothing=0.0, num_classes=1000), load_relabel(imagenet.store)
        )
    with pytest.raises(ConfigurationError, match="num_classes=1000"):
        check_mixing(timm.data.Mixup(label_smoothing=0.0, multi_label=True, num_classes=10), 1000)
    # SoftMixup smooths soft targets as timm smooths one-hot labels: accepted
    assert type(timm_mixup(1000, label_smoothing=0.1)).__name__ == "SoftMixup"


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_timm_mixup_helper_keeps_targets_distributions(imagenet, mode):
    targets = soft_targets(imagenet.store)
    images = torch.rand(4, 3, 8, 8)
    np.random.seed(0)
    mixup = timm_mixup(load_relabel(imagenet.store), mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode)
    _, mixed = mixup(images, targets.clone())
    assert not torch.equal(mixed, targets)
    assert_mixed_pairwise(mixed, targets)


def test_timm_fast_collate_mixup_for_the_prefetcher(imagenet):
    targets = soft_targets(imagenet.store, 4)
    batch = [(torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8), t) for t in targets]
    np.random.seed(1)
    _, mixed = timm_mixup(1000, mixup_alpha=1.0, collate=True)(batch)
    assert_mixed_pairwise(mixed, targets)


def test_torchvision_mixers_are_checked(imagenet):
    check_mixing(v2.RandomChoice([v2.CutMix(), v2.MixUp(num_classes=1000)]), 1000)
    with pytest.raises(ConfigurationError, match="leave num_classes unset"):
        check_mixing(v2.CutMix(num_classes=100), 1000)
    token = RelabelDataset(
        ImageFolder(imagenet.train),
        imagenet.store,
        spec=PoolingSpec(output_size=2),
        missing="original",
    )
    with pytest.raises(ConfigurationError, match="token-level"):
        check_mixing(v2.CutMix(), token)


# -- 7. HF datasets: formatting cannot drop the targets -------------------------------------------


def test_relabel_dataset_over_hf_ignores_formatting_and_matches_the_transform(imagenet):
    ds = hf_imagefolder(imagenet)
    torch_ds = RelabelDataset(ds.with_format("torch"), imagenet.store, TRAIN_V2, missing="original")
    hf = ds.with_transform(
        relabel_transform(
            imagenet.store, TRAIN_V2, missing="original", class_names=ds.features["label"].names
        )
    )
    for i in range(len(ds)):
        torch.manual_seed(i)
        image, target = torch_ds[i]
        torch.manual_seed(i)
        row = hf[i]
        torch.testing.assert_close(row["pixel_values"], image)
        torch.testing.assert_close(row["labels"], target)
    _images, targets = next(iter(DataLoader(torch_ds, batch_size=6)))
    assert targets.dtype == torch.float32 and targets.shape == (6, 1000)


def test_hf_output_names_that_formatting_could_shadow_are_refused(imagenet):
    with pytest.raises(ConfigurationError, match="target_column='label' is also an input column"):
        relabel_transform(imagenet.store, target_column="label")
    ds = hf_imagefolder(imagenet).add_column("labels", [0] * 6)
    ds.set_transform(relabel_transform(imagenet.store))
    with pytest.raises(ConfigurationError, match="has a column 'labels'"):
        ds[0]


# -- 8. keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "mode", "key"),
    [
        ("train/n01440764/n01440764_10026.JPEG", "stem", "n01440764_10026"),
        ("n01440764\\n01440764_10026.JPEG", "stem", "n01440764_10026"),
        ("n01440764\\n01440764_10026.JPEG", "relpath", "n01440764/n01440764_10026"),
        ("n01440764_10026_n01440764.JPEG", "stem", "n01440764_10026"),
        ("ILSVRC2012_val_00000001_n01751748.JPEG", "stem", "ILSVRC2012_val_00000001"),
        ("photo_n01751748.jpg", "stem", "photo_n01751748"),  # not an ImageNet name: kept
        ("a/airfield/00000001.jpg", "relpath", "a/airfield/00000001"),
        ("zip://train/x.jpg::hf://datasets/o/r/a.zip", "stem", "x"),
    ],
)
def test_one_key_function(path, mode, key):
    assert key_from_path(path, mode) == key


@pytest.mark.parametrize("path", ["/data/places/airfield/00000001.jpg", "D:\\places\\a\\1.jpg"])
def test_absolute_paths_need_the_root_in_relpath_mode(path):
    """An absolute path's key would hold the folders above the root and match no record."""
    with pytest.raises(ConfigurationError, match=r"absolute path.*root="):
        key_from_path(path, "relpath")
    assert key_from_path(path, "stem") == path.replace("\\", "/").rsplit("/", 1)[1].split(".")[0]
    assert key_from_path("/data/places/airfield/00000001.jpg", "relpath", root="/data/places") == (
        "airfield/00000001"
    )


@pytest.fixture
def places(tmp_path):
    """Places365-style: the same file names in different class folders."""
    for i, scene in enumerate(("airfield", "alley")):
        for name in ("00000001.jpg", "00000002.jpg"):
            (tmp_path / "train" / scene).mkdir(parents=True, exist_ok=True)
            ramp(i).save(tmp_path / "train" / scene / name)
    return tmp_path / "train"


def test_duplicate_names_across_folders_work_through_relpath(places, tmp_path):
    with pytest.raises(InputError, match="--key-mode relpath"):
        open_inputs(places)
    source = open_inputs(places, key_mode="relpath")  # what generate reads
    assert source.keys == [
        "airfield/00000001",
        "airfield/00000002",
        "alley/00000001",
        "alley/00000002",
    ]
    sizes = [(H, W)] * len(source.keys)  # ramp images
    store = write_store(
        tmp_path / "s.zarr", keys=source.keys, dataset=source.describe(), sizes=sizes
    )
    with pytest.raises(ConfigurationError, match="key_mode='relpath'"):
        RelabelDataset(ImageFolder(places), store.path, key_mode="stem")
    crop = CropBox(0.2, 0.1, 0.7, 0.9)
    ds = RelabelDataset(ImageFolder(places), store.path, ReturnsCropBox(lambda im: (im, crop)))
    for i, (path, _) in enumerate(ds.base.samples):
        key = "/".join(Path(path).with_suffix("").parts[-2:])
        assert key_of(ds, i) == key
        np.testing.assert_allclose(ds[i][1].numpy(), target_for(store.path, key, crop), rtol=1e-6)


def test_hub_imagenet_names_and_folders_find_the_same_records(imagenet, tmp_path):
    files = sorted(imagenet.train.rglob("*.png"))
    cells = [{"bytes": f.read_bytes(), "path": f"{f.stem}_{f.parent.name}.png"} for f in files]
    hub = datasets.Dataset.from_dict(
        {"image": cells, "label": [int(f.parent.name == CAT) for f in files]},
        datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=[TENCH, CAT])}
        ),
    )
    source = open_inputs(hub)  # generate's keys: the Hub's _<wnid> suffix dropped
    assert source.keys == sorted(f.stem for f in files)
    sizes = file_sizes(files)  # files and keys sort alike
    store = write_store(
        tmp_path / "hub.zarr", keys=source.keys, dataset=source.describe(), sizes=sizes
    ).path
    crop = ReturnsCropBox(lambda im: (im, CropBox(0.0, 0.2, 0.5, 0.8)))
    from_folder = RelabelDataset(ImageFolder(imagenet.train), store, crop)
    from_hub = RelabelDataset(hub, store, crop)
    transform = hub.cast_column("image", datasets.Image(decode=False)).with_transform(
        relabel_transform(store, crop)
    )
    folder_order = [Path(p).stem for p, _ in from_folder.base.samples]
    hub_order = [f.stem for f in files]
    assert folder_order == hub_order
    torch.testing.assert_close(
        torch.stack([from_folder[i][1] for i in range(6)]), transform[:]["labels"]
    )
    torch.testing.assert_close(
        torch.stack([from_hub[i][1] for i in range(6)]), transform[:]["labels"]
    )
    legacy_keys = [c["path"][:-4] for c in cells]
    legacy = write_store(tmp_path / "legacy.zarr", keys=legacy_keys, sizes=sizes).path
    old = hub.cast_column("image", datasets.Image(decode=False)).with_transform(
        relabel_transform(legacy, crop)
    )
    assert old[:]["labels"].shape == (6, 1000)  # stores written with the suffix still resolve


@pytest.mark.slow
def test_generate_with_relpath_keys_end_to_end(places, tmp_path):
    from click.testing import CliRunner

    from relabel_store.cli.main import main

    out = tmp_path / "places.zarr"
    args = ["generate", str(places), "-o", str(out), "--model", "tf_efficientnet_lite0",
            "--checkpoint", "efficientnet-lite0", "--input-size", "224", "--workers", "0", "-q"]  # fmt: skip
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and "--key-mode relpath" in str(refused.output) + str(
        refused.exception
    )
    done = CliRunner().invoke(main, [*args, "--key-mode", "relpath"])
    assert done.exit_code == 0, done.output
    store = load_relabel(out)
    assert store.metadata.dataset["key_mode"] == "relpath"
    ds = RelabelDataset(ImageFolder(places), store, missing="original")  # relpath from the store
    assert sorted(ds.rows.tolist()) == [0, 1, 2, 3]
    assert ds[0][1].shape == (1000,)


# -- 9. wrong arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("store", [None, 3, ["a.zarr"]])
def test_a_store_of_the_wrong_type_is_a_type_error(imagenet, store):
    message = r"a store is a RelabelStore or its location as str or os.PathLike.*got"
    for build in (
        lambda: RelabelDataset(ImageFolder(imagenet.train), store),
        lambda: relabel_transform(store),
        lambda: LabelPooler(store),
        lambda: load_relabel(store),
    ):
        with pytest.raises(TypeError, match=message) as info:
            build()
        assert isinstance(info.value, ArgumentTypeError)


def test_other_wrong_arguments_are_type_errors(imagenet):
    folder = ImageFolder(imagenet.train)
    with pytest.raises(ArgumentTypeError, match=r"got str \(build one first, e.g. ImageFolder"):
        RelabelDataset(str(imagenet.train), imagenet.store)
    with pytest.raises(ArgumentTypeError, match="got NoneType"):
        RelabelDataset(None, imagenet.store)
    with pytest.raises(ArgumentTypeError, match="spec must be a PoolingSpec"):
        RelabelDataset(folder, imagenet.store, spec={"original_weight": 0.1})
    with pytest.raises(ArgumentTypeError, match="class_map must be"):
        RelabelDataset(folder, imagenet.store, missing="original", class_map="identity")
    with pytest.raises(ArgumentTypeError, match="transform must be callable"):
        RelabelDataset(folder, imagenet.store, "RandomResizedCrop")
    with pytest.raises(ArgumentTypeError, match="map-style"):
        RelabelDataset(hf_imagefolder(imagenet).to_iterable_dataset(), imagenet.store)
    assert track_crops(None)("x")[1] == CropBox.full()
