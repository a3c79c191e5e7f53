"""timm's train.py path: create_loader with the prefetcher and a FastCollateMixup collate.

Built as train.py builds it: ``RelabelDataset(timm's ImageDataset)``, ``mixup_args`` with
train.py's defaults, ``create_loader(..., collate_fn=..., use_prefetcher=True)``. timm's own
``FastCollateMixup`` turns every soft target into class 0 (shown first, below the check); the
first batch refuses it, naming the fix, and ``SoftCollateMixup`` (and ``SoftMixup`` without the
prefetcher) mixes the images exactly as timm does and the soft targets exactly: compared with
timm's ``multi_label=True`` mixing of the same batch under the same random draws.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import timm.data
import torch
from _stores import file_sizes, write_store
from PIL import Image
from timm.data import FastCollateMixup, ImageNetInfo, Mixup
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

from relabel_store import ConfigurationError
from relabel_store.loaders import (
    RelabelDataset,
    SoftCollateMixup,
    SoftMixup,
    check_collate,
    check_mixing,
    timm_mixup,
)

S = 32
C = 1000
CPU = torch.device("cpu")
WNIDS = tuple(ImageNetInfo("imagenet-1k").index_to_label_name(i) for i in range(C))
# timm's ImageDataset leaves the files it opens to the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def train_py_mixup_args(**changes):
    """``mixup_args`` as timm's train.py builds them from its defaults with --mixup 0.8
    --cutmix 1.0 (smoothing 0.1, the default)."""
    args = dict(
        mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
        mode="batch", label_smoothing=0.1, num_classes=C,
    )  # fmt: skip
    return {**args, **changes}


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """Eight photos of varied shapes in ImageNet's layout (two wnids) and their store."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        wnid = ("n01440764", "n02124075")[i % 2]
        path = root / "train" / wnid / f"{wnid}_{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3)
        Image.fromarray(rng.integers(0, 255, shape, np.uint8)).save(path)
        paths.append(path)
    write_store(
        root / "s.zarr",
        keys=[p.stem for p in paths],
        sizes=file_sizes(paths),
        label_space="imagenet-1k",
        class_identifiers=WNIDS,
        dataset={"name": "imagenet", "split": "train", "key_mode": "stem"},
    )
    return SimpleNamespace(train=root / "train", store=root / "s.zarr")


def dataset(imagenet) -> RelabelDataset:
    return RelabelDataset(timm.data.ImageDataset(str(imagenet.train)), imagenet.store)


def train_loader(ds, collate_fn, *, prefetcher=True, workers=0):
    """create_loader as train.py calls it (the pieces that matter here); images come out as
    their uint8 values (mean 0, std 1/255) so that they can be compared with timm's."""
    return timm.data.create_loader(
        ds, (3, S, S), batch_size=8, is_training=True, use_prefetcher=prefetcher,
        collate_fn=collate_fn, mean=(0.0,) * 3, std=(1 / 255,) * 3, color_jitter=0.0,
        num_workers=workers, device=CPU, persistent_workers=False,
    )  # fmt: skip


class Recording:
    """A collate_fn that keeps (a copy of) the last batch it was given and numpy's random state
    before it ran, then hands the batch to ``inner``."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, batch):
        self.batch = copy.deepcopy(batch)
        self.np_state = np.random.get_state()
        return self.inner(batch)


# -- timm's FastCollateMixup: class 0, refused at the first batch ---------------------------------


def test_timms_fast_collate_mixup_turns_soft_targets_into_class_0(imagenet):
    """What train.py does to soft targets unchecked: the failure the check below refuses."""
    ds = dataset(imagenet)
    train_loader(ds, None)  # assigns train.py's transform
    batch = ds.__getitems__(list(range(8)))  # not from a DataLoader: nothing to check
    _, targets = FastCollateMixup(**train_py_mixup_args())(batch)
    assert targets.shape == (8, C) and (targets.argmax(1) == 0).all()


def test_train_py_fast_collate_mixup_is_refused_at_the_first_batch(imagenet):
    ds = dataset(imagenet)
    loader = train_loader(ds, FastCollateMixup(**train_py_mixup_args()))
    with pytest.raises(ConfigurationError) as refused:
        next(iter(loader))
    message = str(refused.value)
    assert "collate_fn (FastCollateMixup) destroys ReLabel's soft targets" in message
    assert "class [0]" in message
    assert "`collate_fn = SoftCollateMixup(**mixup_args)`" in message


def test_the_refusal_comes_from_a_worker_too(imagenet):
    loader = train_loader(dataset(imagenet), FastCollateMixup(**train_py_mixup_args()), workers=1)
    with pytest.raises(ConfigurationError, match=r"SoftCollateMixup\(\*\*mixup_args\)"):
        next(iter(loader))


def test_timm_multi_label_smoothing_is_refused_by_its_sums(imagenet):
    mixer = FastCollateMixup(**train_py_mixup_args(), multi_label=True)
    with pytest.raises(ConfigurationError, match=r"sum to 50\.\d instead of 1"):
        next(iter(train_loader(dataset(imagenet), mixer)))


# -- SoftCollateMixup: timm's images, exact soft targets ------------------------------------------


@pytest.mark.parametrize(
    ("mode", "smoothing"), [("batch", 0.1), ("pair", 0.0), ("elem", 0.1), ("half", 0.0)]
)
def test_soft_collate_mixup_in_create_loader_mixes_exactly(imagenet, mode, smoothing):
    args = train_py_mixup_args(mode=mode, label_smoothing=smoothing)
    recording = Recording(SoftCollateMixup(**args))
    np.random.seed(3)
    torch.manual_seed(3)
    images, targets = next(iter(train_loader(dataset(imagenet), recording)))
    # timm's own mixing of the same batch under the same draws, soft targets kept (multi_label,
    # unsmoothed): the reference.
    np.random.set_state(recording.np_state)
    reference = FastCollateMixup(**{**args, "label_smoothing": 0.0}, multi_label=True)
    want_images, want = reference(copy.deepcopy(recording.batch))
    torch.testing.assert_close(images, want_images.float(), atol=0, rtol=0)
    torch.testing.assert_close(targets, want * (1 - smoothing) + smoothing / C)
    torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)))
    unmixed = torch.stack([t for _, t in recording.batch])[: len(targets)]
    assert (want - unmixed).abs().max() > 0.05 * unmixed.max()  # it did mix
    assert targets.shape == ((4, C) if mode == "half" else (8, C))


def test_mixup_off_reaches_soft_collate_mixup(imagenet):
    """train.py's --mixup-off-epoch sets loader.mixup_enabled = False: timm's PrefetchLoader
    passes it on to a FastCollateMixup only, which SoftCollateMixup is."""
    recording = Recording(SoftCollateMixup(**train_py_mixup_args(label_smoothing=0.0)))
    loader = train_loader(dataset(imagenet), SoftCollateMixup(**train_py_mixup_args()))
    assert loader.mixup_enabled
    loader.mixup_enabled = False
    assert not loader.mixup_enabled and not loader.loader.collate_fn.mixup_enabled
    loader = train_loader(dataset(imagenet), recording)
    recording.inner.mixup_enabled = False
    _images, targets = next(iter(loader))
    unmixed = torch.stack([t for _, t in recording.batch])
    torch.testing.assert_close(targets, unmixed)


def test_timm_mixup_builds_the_soft_mixers(imagenet):
    ds = dataset(imagenet)
    collate = timm_mixup(ds, collate=True, mixup_alpha=0.8, cutmix_alpha=1.0)
    assert isinstance(collate, SoftCollateMixup) and isinstance(collate, FastCollateMixup)
    assert collate.label_smoothing == 0.0 and collate.num_classes == C
    assert isinstance(timm_mixup(ds, mixup_alpha=0.8), SoftMixup)
    check_mixing(SoftCollateMixup(**train_py_mixup_args()), ds)  # smoothing is right here
    with pytest.raises(ConfigurationError, match="num_classes=1000"):
        check_mixing(SoftCollateMixup(**train_py_mixup_args(num_classes=10)), ds)


# -- SoftMixup: train.py without the prefetcher ---------------------------------------------------


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_soft_mixup_mixes_exactly_like_timm(imagenet, mode):
    args = train_py_mixup_args(mode=mode)
    images, targets = next(iter(train_loader(dataset(imagenet), None, prefetcher=False)))
    state = np.random.get_state()
    mixed_images, mixed = SoftMixup(**args)(images.clone(), targets.clone())
    np.random.set_state(state)
    reference = Mixup(**{**args, "label_smoothing": 0.0}, multi_label=True)
    want_images, want = reference(images.clone(), targets.clone())
    torch.testing.assert_close(mixed_images, want_images, atol=0, rtol=0)
    torch.testing.assert_close(mixed, want * 0.9 + 0.1 / C)
    with pytest.raises(ConfigurationError, match="num_classes=1000"):
        SoftMixup(**train_py_mixup_args(num_classes=10))(images.clone(), targets.clone())


def test_soft_mixers_leave_class_index_targets_to_timm():
    images = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    batch = [(image, i) for i, image in enumerate(images)]
    np.random.seed(0)
    _, ours = SoftCollateMixup(**train_py_mixup_args())(copy.deepcopy(batch))
    np.random.seed(0)
    _, timms = FastCollateMixup(**train_py_mixup_args())(copy.deepcopy(batch))
    torch.testing.assert_close(ours, timms)


# -- any collate_fn ------------------------------------------------------------------------------


def half_precision(batch):
    images, targets = default_collate(batch)
    return images, targets.half()


def test_any_collate_that_casts_targets_is_refused(imagenet):
    ds = RelabelDataset(
        timm.data.ImageDataset(str(imagenet.train)),
        imagenet.store,
        v2.Compose([v2.RandomResizedCrop(S), v2.PILToTensor()]),
    )

    def to_indices(batch):
        images, targets = default_collate(batch)
        return images, targets.argmax(1)

    with pytest.raises(ConfigurationError, match=r"\(to_indices\).*torch.int64 targets"):
        next(iter(DataLoader(ds, batch_size=4, collate_fn=to_indices)))
    half = next(iter(DataLoader(ds, batch_size=4, collate_fn=lambda b: half_precision(b))))
    assert half[1].dtype == torch.float16  # rounded, still soft targets: accepted
    cutmix = v2.CutMix(alpha=1.0)
    _images, targets = next(
        iter(DataLoader(ds, batch_size=4, collate_fn=lambda b: cutmix(*default_collate(b))))
    )
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


def test_check_collate_keeps_the_random_draws(imagenet):
    image, target = torch.zeros(3, 4, 4, dtype=torch.uint8), torch.full((C,), 1 / C)
    np.random.seed(5)
    torch.manual_seed(5)
    check_collate(SoftCollateMixup(**train_py_mixup_args()), image, target)
    after = np.random.random(), torch.rand(1).item()
    np.random.seed(5)
    torch.manual_seed(5)
    assert after == (np.random.random(), torch.rand(1).item())
