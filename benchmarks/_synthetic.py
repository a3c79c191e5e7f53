"""Realistic synthetic label maps: a few objects per image as smooth logit blobs over a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_maps(
    rng: np.random.Generator, n: int, grid=(15, 15), k=5, num_classes=1000, dtype=np.float16
):
    """(indices, values) like a dense annotator's top-k: spatially coherent, descending logits
    (``dtype`` float16 as stores hold them, or float32 as the published ReLabel maps do)."""
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    idx = np.empty((n, h, w, k), np.uint16)
    val = np.empty((n, h, w, k), dtype)
    for i in range(n):
        m = int(rng.integers(6, 14))  # candidate classes: objects and their look-alikes
        classes = rng.choice(num_classes, m, replace=False)
        cy, cx = rng.uniform(0, h, m), rng.uniform(0, w, m)
        sigma = rng.uniform(2, 8, m)
        amp = rng.uniform(2, 12, m)
        dense = amp[:, None, None] * np.exp(
            -((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)
            / (2 * sigma[:, None, None] ** 2)
        )
        dense += rng.normal(0, 0.3, dense.shape)
        top = np.argsort(-dense, axis=0)[:k]  # (k, h, w)
        idx[i] = classes[top].transpose(1, 2, 0)
        val[i] = np.take_along_axis(dense, top, axis=0).transpose(1, 2, 0)
    return idx, val


def image_sizes(images: list[Path] | list[bytes]) -> list[tuple[int, int]]:
    """(height, width) of image files or encoded images, as generate records them."""
    import io

    from PIL import Image

    out = []
    for image in images:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            out.append((opened.height, opened.width))
    return out


def write_synthetic_store(
    path: Path,
    keys: list[str],
    *,
    labels: list[int] | None = None,
    shard_records: int = 4096,
    grid: tuple[int, int] = (15, 15),
    k: int = 5,
    num_classes: int = 1000,
    seed: int = 0,
    sizes: list[tuple[int, int]] | None = None,
) -> Path:
    """A finalized store of synthetic maps for ``keys`` (written shard by shard, as generate does).

    ``sizes`` are the images' (height, width), in key order (:func:`image_sizes` of the images a
    benchmark loads: the loaders check each image against its record); 375 x 500 by default."""
    from relabel_store import StoreMetadata, StoreWriter

    rng = np.random.default_rng(seed)
    labels = labels if labels is not None else [0] * len(keys)
    sizes = sizes if sizes is not None else [(375, 500)] * len(keys)
    meta = StoreMetadata(
        grid=grid, k=k, num_classes=num_classes, rows=len(keys), shard_records=shard_records
    )
    writer = StoreWriter.open(path, meta)
    for s in range(writer.num_shards):
        r = writer.shard_rows(s)
        idx, val = synthetic_maps(rng, len(r), grid, k, num_classes)
        writer.write_shard(
            s,
            keys=keys[r.start : r.stop],
            labels=labels[r.start : r.stop],
            sizes=sizes[r.start : r.stop],
            indices=idx,
            values=val,
        )
    writer.finalize()
    return path


def imagenet_like_keys(n: int) -> list[str]:
    """Keys shaped like ImageNet's (``n00000000_17``), 1,300 per class."""
    return [f"n{i // 1300:08d}_{i}" for i in range(n)]
