"""albumentations pipelines: crops, resizes and flips tracked from their own geometry (issue 19,
item 6), pixel-exact (images that encode their coordinates), end to end through RelabelDataset,
and what cannot be tracked refused by name."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from test_crop_check import photo, photo_folder
from test_crop_pixels import assert_pixels_show_the_box, coordinates
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import UnsupportedTransformError, load_relabel
from relabel_store.loaders import RelabelDataset, track_crops
from relabel_store.pooling import CropBox, pool

A = pytest.importorskip("albumentations")
from albumentations.pytorch import ToTensorV2  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"))


STEPS = {
    "HorizontalFlip": lambda: A.HorizontalFlip(p=1),
    "RandomResizedCrop+flip": lambda: A.Compose(
        [A.RandomResizedCrop((64, 64)), A.HorizontalFlip()]
    ),
    "CenterCrop(pad_if_needed), odd": lambda: A.CenterCrop(107, 155, pad_if_needed=True),
    "OneOf crops+Resize+flip": lambda: A.Compose(
        [
            A.OneOf([A.RandomCrop(50, 60), A.CenterCrop(40, 40)]),
            A.Resize(80, 80),
            A.HorizontalFlip(),
        ]
    ),
    "SmallestMaxSize": lambda: A.SmallestMaxSize(60),
    "LongestMaxSize": lambda: A.LongestMaxSize(70),
    "RandomScale": lambda: A.RandomScale(0.3, p=1),
    "flip before a resize": lambda: A.Compose([A.HorizontalFlip(p=1), A.LongestMaxSize(90)]),
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_albumentations_boxes_are_pixel_exact(name):
    image = coordinates().permute(1, 2, 0).numpy().copy()  # (H, W, 3): x, y, 1
    tracker = track_crops(STEPS[name](), sample=image)
    for seed in range(4):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        tracker.pipeline.set_random_seed(seed)
        out, box = tracker(image)
        assert_pixels_show_the_box(torch.from_numpy(out).permute(2, 0, 1)[:2], box)


def test_albumentations_affine_shifts_and_scales_are_tracked():
    # cv2's warpAffine samples at 1/32 pixel: its own error, up to ~0.12 px, not the box's.
    image = coordinates().permute(1, 2, 0).numpy().copy()
    tracker = track_crops(A.Affine(scale=(0.8, 1.2), translate_percent=0.1, p=1), sample=image)
    for seed in range(4):
        tracker.pipeline.set_random_seed(seed)
        out, box = tracker(image)
        assert_pixels_show_the_box(torch.from_numpy(out).permute(2, 0, 1)[:2], box, tol=0.2)


def test_an_albumentations_pipeline_gets_the_targets_of_its_crops(photos):
    tf = A.Compose(
        [
            A.RandomResizedCrop((64, 64), scale=(0.05, 0.3)),
            A.HorizontalFlip(),
            A.ColorJitter(),
            A.Normalize(),
            ToTensorV2(),
        ]
    )
    ds = RelabelDataset(ImageFolder(photos.train), photos.store, tf)
    pickle.loads(pickle.dumps(ds.track))  # spawned DataLoader workers get it pickled
    store = load_relabel(photos.store)
    flips = set()
    for i in range(6):
        # albumentations draws from its own generators: seeded alike, the same crop twice.
        ds.track.pipeline.set_random_seed(i)
        image, target = ds[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        ds.track.pipeline.set_random_seed(i)
        again, box = ds.track(ds.base[i][0])
        torch.testing.assert_close(image, again)
        record = store.get(ds.store.keys[ds.rows[i]].decode())
        want = pool(record.indices, record.values, box, num_classes=1000)
        np.testing.assert_allclose(target.numpy(), want, rtol=1e-5, atol=1e-7)
        whole = pool(record.indices, record.values, CropBox.full(), num_classes=1000)
        assert np.abs(want - whole).max() > 1e-5
        flips.add(box.flipped)
    assert flips == {True, False}


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (lambda: A.Compose([A.Rotate(limit=30)]), r"step 1 \(Rotate\) rotates"),
        (lambda: A.Compose([A.Affine(rotate=(-10, 10))]), r"step 1 \(Affine\) rotates"),
        (lambda: A.OneOf([A.VerticalFlip(), A.HorizontalFlip()]), r"\(VerticalFlip\)"),
        (
            lambda: v2.Compose([v2.RandomResizedCrop(64), A.HorizontalFlip()]),
            r"step 2 \(HorizontalFlip\) is an albumentations transform inside a torchvision",
        ),
    ],
    ids=["rotate", "affine-rotate", "vertical-flip", "inside-torchvision"],
)
def test_albumentations_steps_that_cannot_be_tracked_are_named(transform, message):
    with pytest.raises(UnsupportedTransformError, match=message):
        track_crops(transform())


def test_an_albumentations_step_misread_is_refused_by_the_pixels():
    class SwappedCrop(A.DualTransform):
        """A user's crop whose keypoints go one way and pixels the other."""

        def apply(self, img, **params):
            return np.ascontiguousarray(img[: img.shape[0] // 2, img.shape[1] // 2 :])

        def apply_to_keypoints(self, keypoints, **params):
            return keypoints * 0.5

        def get_transform_init_args_names(self):
            return ()

    with pytest.raises(UnsupportedTransformError, match="albumentations pipeline does not match"):
        track_crops(A.Compose([SwappedCrop(p=1.0), A.Resize(64, 64)]), sample=photo(0))
