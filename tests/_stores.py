"""Build small stores with known contents for tests (zarr-python writes them, as in production)."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relabel_store import StoreMetadata, StoreWriter


@dataclass
class Written:
    path: Path
    keys: list[str]  # in write (row) order
    indices: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    failed: set[str]


def photo_sizes(n: int, seed: int = 0) -> np.ndarray:
    """(height, width) of ``n`` small photos of varied shapes (portrait, landscape, square), for
    stores whose images a test writes: the loaders check every image's shape against its record."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(40, 120, n), rng.integers(40, 160, n)], axis=1).astype(np.int32)


def save_photo(path: Path, size, rng: np.random.Generator) -> str:
    """A JPEG of random pixels of ``size`` (height, width) at ``path``; its path as a string."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (int(size[0]), int(size[1]), 3), np.uint8)).save(path)
    return str(path)


def file_sizes(paths) -> np.ndarray:
    """(height, width) of each image file, as ``generate`` records them: for stores written
    here over images on disk, whose shapes the loaders check."""
    from PIL import Image

    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append((image.height, image.width))
    return np.array(sizes, np.int32).reshape(-1, 2)


#: ``described_annotator()`` as a core install (no torch, no timm) cannot compute it: recorded,
#: and kept equal to the live one by test_annotator.py.
RECORDED_ANNOTATOR = Path(__file__).parent / "data" / "annotator.json"


def described_annotator(grid=(15, 15), k=5, num_classes=1000) -> dict[str, Any]:
    """The annotator metadata ``generate`` records, from the real producer: ``describe()`` of a
    DenseAnnotator over timm's tiny ``test_resnet`` (random weights) with this grid, k and
    number of classes. Without torch (the core-only check) the recorded defaults."""
    try:
        import timm  # noqa: F401
    except ImportError:
        recorded = json.loads(RECORDED_ANNOTATOR.read_text())
        assert (recorded["grid"], recorded["k"], recorded["num_classes"]) == (
            list(grid),
            k,
            num_classes,
        ), "without torch only the recorded annotator (15x15, k=5, 50 classes) is available"
        return recorded
    return copy.deepcopy(_describe(tuple(grid), k, num_classes))


@functools.cache
def _describe(grid: tuple[int, int], k: int, num_classes: int) -> dict[str, Any]:
    import timm

    from relabel_store.write.annotator import DenseAnnotator

    model = timm.create_model("test_resnet", pretrained=False, num_classes=num_classes)
    return DenseAnnotator(model, grid=grid, k=k).describe()


def random_maps(rng: np.random.Generator, n: int, grid=(15, 15), k=5, num_classes=1000):
    """Top-k maps with distinct, descending entries per cell, like an annotator's output."""
    h, w = grid
    idx = np.argsort(rng.random((n, h, w, num_classes)), axis=-1)[..., :k].astype(np.uint16)
    vals = -np.sort(-rng.normal(0, 3, (n, h, w, k)), axis=-1).astype(np.float16)
    return idx, vals


def write_store(
    path: Path,
    n: int = 50,
    *,
    grid=(15, 15),
    k=5,
    num_classes=1000,
    shard_records=16,
    seed=0,
    failed: frozenset[int] = frozenset(),
    finalize=True,
    shards=None,
    keys: list[str] | None = None,
    label_space: str | None = None,
    class_identifiers: tuple[str, ...] | None = None,
    dataset: dict | None = None,
    writer: StoreWriter | None = None,
    sizes: np.ndarray | None = None,
    annotator: dict[str, Any] | None = None,
) -> Written:
    """Write ``n`` random records (``keys``, if given, in that row order) for the given ``shards``
    (all by default) through ``writer`` or a writer of its own, and finalize unless told not to.
    The label space and dataset description are recorded as ``generate`` records them, when given;
    ``sizes`` are the images' (height, width) in row order (random by default); ``annotator``
    the annotator's metadata (default: :func:`described_annotator`)."""
    rng = np.random.default_rng(seed)
    if keys is None:
        keys = [f"img_{int(i):05d}" for i in rng.permutation(n)]  # rows not in key order
    n = len(keys)
    idx, vals = random_maps(rng, n, grid, k, num_classes)
    labels = rng.integers(-1, num_classes, n).astype(np.int32)
    random_sizes = rng.integers(1, 2000, (n, 2)).astype(np.int32)
    sizes = random_sizes if sizes is None else np.asarray(sizes, np.int32)
    meta = StoreMetadata(
        grid=grid,
        k=k,
        num_classes=num_classes,
        rows=n,
        shard_records=shard_records,
        class_names=tuple(f"class {c}" for c in range(num_classes)),
        label_space=label_space,
        class_identifiers=class_identifiers,
        annotator=annotator or described_annotator(grid, k, num_classes),
        dataset=dataset or {"name": "synthetic", "split": "train"},
    )
    w = writer or StoreWriter.open(path, meta)
    for s in range(w.num_shards) if shards is None else shards:
        r = w.shard_rows(s)
        errors = [{"reason": "broken", "path": keys[i]} if i in failed else None for i in r]
        w.write_shard(
            s,
            keys=keys[r.start : r.stop],
            labels=labels[r.start : r.stop],
            sizes=sizes[r.start : r.stop],
            indices=idx[r.start : r.stop],
            values=vals[r.start : r.stop],
            errors=errors,
        )
    if finalize:
        w.finalize()
    return Written(path, keys, idx, vals, labels, sizes, {keys[i] for i in failed})


def data_files(store: Path) -> dict[str, bytes]:
    """Every file of a store but its metadata and manifest (which record creation times), for
    comparing two stores' data byte for byte."""
    skip = {"zarr.json", "manifest.json"}
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name not in skip
    }
