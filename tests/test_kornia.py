"""kornia crops on batches after the loader (issue 19, item 6): ``kornia_refs`` moves the
loader's boxes by the windows kornia drew, pixel-exact (images that encode their coordinates),
and LabelPooler pools the targets of what the augmented batch shows."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from test_crop_check import photo_folder
from test_crop_pixels import assert_pixels_show_the_box, coordinates
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import UnsupportedTransformError, load_relabel
from relabel_store.loaders import LabelPooler, RelabelDataset, kornia_refs, track_crops
from relabel_store.pooling import CropBox, pool

K = pytest.importorskip("kornia.augmentation")


def loader_batch(n: int = 6):
    """Coordinate images through a tracked loader transform, collated, and their refs."""
    tracker = track_crops(
        v2.Compose([v2.RandomResizedCrop(80, scale=(0.3, 1.0)), v2.RandomHorizontalFlip()]),
        sample=coordinates(),
    )
    images, boxes, flips = [], [], []
    for seed in range(n):
        torch.manual_seed(seed), random.seed(seed)
        image, box = tracker(coordinates())
        images.append(image)
        boxes.append((box.x0, box.y0, box.x1, box.y1))
        flips.append(box.flipped)
    refs = {
        "row": torch.zeros(n, dtype=torch.int64),
        "box": torch.tensor(boxes, dtype=torch.float64),
        "flipped": torch.tensor(flips),
        "label": torch.full((n,), -1),
    }
    return torch.stack(images), refs


@pytest.mark.parametrize(
    "steps",
    [
        lambda: [K.RandomResizedCrop((48, 48), scale=(0.2, 1.0)), K.RandomHorizontalFlip()],
        lambda: [K.RandomHorizontalFlip(), K.RandomResizedCrop((40, 56))],
        lambda: [K.RandomCrop((50, 60)), K.RandomHorizontalFlip(p=1.0)],
        lambda: [K.CenterCrop((41, 77))],
        lambda: [K.AugmentationSequential(K.RandomHorizontalFlip(), K.RandomResizedCrop((64, 64)))],
    ],
    ids=["rrc-flip", "flip-rrc", "crop-flip", "centre", "sequential"],
)
def test_kornia_crops_of_a_batch_are_pixel_exact(steps):
    torch.manual_seed(0)
    images, refs = loader_batch()
    augmentations = steps()
    out = images
    for aug in augmentations:
        out = aug(out)
    moved = kornia_refs(refs, *augmentations)
    assert moved["flipped"].dtype == torch.bool and moved["box"].dtype == torch.float64
    for i in range(len(out)):
        box = CropBox(*moved["box"][i].tolist(), flipped=bool(moved["flipped"][i]))
        assert_pixels_show_the_box(out[i, :2], box)


def test_kornia_geometry_it_cannot_track_is_named():
    images, refs = loader_batch(2)
    rotate = K.RandomRotation(30.0, p=1.0)
    rotate(images)
    with pytest.raises(UnsupportedTransformError, match="kornia RandomRotation moves pixels"):
        kornia_refs(refs, rotate)
    with pytest.raises(UnsupportedTransformError, match="has not run yet"):
        kornia_refs(refs, K.RandomResizedCrop((8, 8)))


def test_kornia_batch_crops_get_the_targets_of_what_they_show(tmp_path):
    photos = photo_folder(tmp_path)
    ds = RelabelDataset(
        ImageFolder(photos.train),
        photos.store,
        v2.Compose([v2.Resize((96, 96)), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]),
        pooling="batch",
    )
    augment = K.AugmentationSequential(
        K.RandomResizedCrop((48, 48), scale=(0.05, 0.3)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, p=1.0),
    )
    pooler = LabelPooler(ds)
    images, refs = next(iter(DataLoader(ds, batch_size=6)))
    images = augment(images)
    refs = kornia_refs(refs, augment)
    targets = pooler(refs)
    store = load_relabel(photos.store)
    for i in range(6):
        record = store.get_row(int(refs["row"][i]))
        box = CropBox(*refs["box"][i].tolist(), flipped=bool(refs["flipped"][i]))
        want = pool(record.indices, record.values, box, num_classes=1000)
        np.testing.assert_allclose(targets[i].numpy(), want, rtol=1e-4, atol=1e-6)
        whole = pool(record.indices, record.values, CropBox.full(), num_classes=1000)
        assert np.abs(want - whole).max() > 1e-5
