"""``PoolingSpec(compat=...)``: the official codes' transposed box, reproduced exactly.

The references below re-enact, step by step, what naver-ai/relabel_imagenet
(``utils/data_loader.py`` ``relabel_batch_fn`` with ``utils/relabel_functions.py``) and
zihangJiang/TokenLabeling (``tlt/data/label_transforms_factory.py`` with ``tlt/data/mixup.py``)
do with a ``RandomResizedCrop`` and a horizontal flip: the same dtypes, the same additions, the
same dense map and ``torchvision.ops.roi_align`` call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align
from torchvision.transforms import RandomResizedCrop

from relabel_store.errors import ConfigurationError
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.pooling.batched import BatchPooler, stack_boxes

C = 200
ATOL, RTOL = 1e-6, 1e-5


def topk_map(rng: np.random.Generator, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A published-style map ``[2, 5, size, size]``: logits descending, ids as floats."""
    ids = np.argsort(rng.random((size, size, C)), axis=-1)[..., :5]
    logits = -np.sort(-rng.normal(0.0, 4.0, (size, size, 5)), axis=-1)
    stacked = np.stack([logits, ids.astype(np.float64)]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked)).to(dtype)


def dense(maps: torch.Tensor) -> torch.Tensor:
    """``get_labelmaps`` / ``get_featuremaps``: scatter a batch of top-k maps into C x H x W."""
    out = torch.zeros(maps.shape[0], C, maps.shape[-2], maps.shape[-1])
    for one, topk in zip(out, maps, strict=True):
        one.scatter_(0, topk[1].long(), topk[0].float())
    return out


def relabel_official(maps: torch.Tensor, image_sizes, crops) -> torch.Tensor:
    """relabel_imagenet: coords from the dataloader (float64), summed, cast, box transposed."""
    coords = [
        (i / h, j / w, ch / h, cw / w)
        for (h, w), (i, j, ch, cw) in zip(image_sizes, crops, strict=True)
    ]
    coords = [torch.tensor(c, dtype=torch.float64) for c in zip(*coords, strict=True)]  # collate
    coords = torch.cat(coords, 0).view(4, -1).transpose(1, 0)
    coords[:, 2:] += coords[:, :2]
    coords = coords.float()
    label_maps = dense(maps)
    n = len(crops)
    boxes = torch.cat([torch.arange(n).view(n, 1).float(), coords * label_maps.size(3) - 0.5], 1)
    return torch.softmax(roi_align(label_maps, boxes, output_size=(1, 1)).reshape(n, C), 1)


def tokenlabeling_official(maps16: torch.Tensor, image_sizes, crops, flips, size: int):
    """TokenLabeling: flip map with image before the crop; float32 coords in the map tensor."""
    batch = []
    for topk, (h, w), (i, j, ch, cw), flip in zip(maps16, image_sizes, crops, flips, strict=True):
        label_map = topk.float()  # DatasetTokenLabel: torch.load(...).float()
        if flip:  # RandomHorizontalFlipWithLabel
            label_map = label_map.flip(3)
        coords_map = torch.zeros_like(label_map[0:1])  # RandomResizedCropAndInterpolationWithCoords
        coords_map[0, 0, 0, 0], coords_map[0, 0, 0, 1] = i / h, j / w
        coords_map[0, 0, 0, 2], coords_map[0, 0, 0, 3] = ch / h, cw / w
        batch.append(torch.cat([label_map, coords_map]))
    stacked = torch.stack(batch)
    coords = stacked[:, 2, 0, 0, :4].view(-1, 4)
    coords[:, 2:] += coords[:, :2]
    label_maps = dense(stacked[:, :2])
    n = len(crops)
    boxes = torch.cat(
        [torch.arange(n).view(n, 1).float(), coords.float() * label_maps.size(3) - 0.5], 1
    )
    pooled = roi_align(label_maps, boxes, output_size=(size, size))
    return torch.softmax(pooled.reshape(n, C, size * size), 1).transpose(1, 2)  # (n, tokens, C)


def random_crops(rng: np.random.Generator, n: int):
    torch.manual_seed(int(rng.integers(2**31)))
    sizes = [(int(rng.integers(40, 700)), int(rng.integers(40, 700))) for _ in range(n)]
    crops = [
        RandomResizedCrop.get_params(torch.zeros(1, h, w), (0.08, 1.0), (3 / 4, 4 / 3))
        for h, w in sizes
    ]
    return sizes, crops


def ours(maps: torch.Tensor, boxes: list[CropBox], spec: PoolingSpec):
    """pool() per sample and BatchPooler on the whole batch, from the store's layout."""
    indices = maps[:, 1].permute(0, 2, 3, 1).numpy().astype(np.uint16)
    values = maps[:, 0].permute(0, 2, 3, 1).numpy()
    one = np.stack(
        [
            pool(i, v, b, num_classes=C, spec=spec)
            for i, v, b in zip(indices, values, boxes, strict=True)
        ]
    )
    coords, flipped = stack_boxes(boxes)
    batch = BatchPooler(C, spec)(
        torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(values), coords, flipped
    )
    return one, batch.numpy()


def test_official_relabel_recipe_on_random_crops_and_flips():
    rng = np.random.default_rng(0)
    n = 64
    maps = torch.stack([topk_map(rng, 15, torch.float32) for _ in range(n)])
    sizes, crops = random_crops(rng, n)
    # its RandomHorizontalFlip comes after the crop and never reaches the target
    boxes = [
        CropBox.from_pixels(j, i, j + w, i + h, size, flipped=bool(f))
        for size, (i, j, h, w), f in zip(sizes, crops, rng.integers(0, 2, n), strict=True)
    ]
    expected = relabel_official(maps, sizes, crops).numpy()
    one, batch = ours(maps, boxes, PoolingSpec(compat="official"))
    np.testing.assert_allclose(one, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(batch, expected, rtol=RTOL, atol=ATOL)
    default, _ = ours(maps, boxes, PoolingSpec())
    assert not np.allclose(default, expected, rtol=RTOL, atol=ATOL)  # the default: another box


@pytest.mark.parametrize("size", [1, 2, 7, 14])
def test_tokenlabeling_recipe_on_random_crops_flips_and_token_grids(size):
    rng = np.random.default_rng(size)
    n = 32
    maps = torch.stack([topk_map(rng, 14, torch.float16) for _ in range(n)])
    sizes, crops = random_crops(rng, n)  # drawn on the image as flipped (flip comes first)
    flips = [bool(f) for f in rng.integers(0, 2, n)]
    boxes = []
    for (h, w), (i, j, ch, cw), flip in zip(sizes, crops, flips, strict=True):
        left = w - j - cw if flip else j  # the same window, in the original image
        boxes.append(CropBox.from_pixels(left, i, left + cw, i + ch, (h, w), flipped=flip))
    expected = tokenlabeling_official(maps, sizes, crops, flips, size).numpy()
    one, batch = ours(maps, boxes, PoolingSpec(output_size=size, compat="tokenlabeling"))
    np.testing.assert_allclose(one.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(batch.reshape(expected.shape), expected, rtol=RTOL, atol=ATOL)


def test_what_the_transposed_box_pools():
    """Class 1 fills the top band (right of the corner), class 2 the left band (below it): the
    left third of the image holds class 2, yet the official box of the left third pools the
    top third, its mirror image across the diagonal, and finds class 1."""
    indices = np.zeros((15, 15, 1), np.uint16)
    indices[:5, 5:] = 1
    indices[5:, :5] = 2
    values = np.full((15, 15, 1), 8.0, np.float32)
    left, top = CropBox(0.0, 0.0, 1 / 3, 1.0), CropBox(0.0, 0.0, 1.0, 1 / 3)
    correct = pool(indices, values, left, num_classes=C)
    official = pool(indices, values, left, num_classes=C, spec=PoolingSpec(compat="official"))
    assert correct.argmax() == 2 and official.argmax() == 1
    np.testing.assert_allclose(official, pool(indices, values, top, num_classes=C), atol=1e-6)


def test_compat_spec_validation():
    with pytest.raises(ConfigurationError, match="compat='tokenlabeling'"):
        PoolingSpec(output_size=7, compat="official")
    with pytest.raises(ConfigurationError, match="unknown compat"):
        PoolingSpec(compat="naver")  # type: ignore[arg-type]
    assert PoolingSpec(compat="official") != PoolingSpec()
    whole = PoolingSpec(variant="global-multi", compat="official")
    indices = np.argsort(np.random.default_rng(1).random((15, 15, C)), -1)[..., :5].astype(
        np.uint16
    )
    values = np.random.default_rng(2).normal(0, 3, (15, 15, 5)).astype(np.float16)
    box = CropBox(0.1, 0.2, 0.5, 0.9)
    np.testing.assert_array_equal(
        pool(indices, values, box, num_classes=C, spec=whole),
        pool(indices, values, box, num_classes=C, spec=PoolingSpec(variant="global-multi")),
    )
