"""PyTorch: wrap any map-style image dataset so it returns ReLabel soft targets.

``RelabelDataset(base, store, transform)`` keeps the user's dataset and transform. For each sample
it applies the transform, recovers the crop box and flip (see :mod:`.crops`), reads the record
and pools it into a soft target. Keys are resolved once, at construction, by binary search of the
store's sorted keys: a missing key fails then, not in the middle of an epoch.

With ``pooling="batch"`` the dataset returns a small reference instead of the target, and a
:class:`LabelPooler` turns a collated batch of references into targets in the training process,
on the GPU if you like, with one batched read and one scatter-add.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from relabel_store.errors import RecordNotFoundError
from relabel_store.loaders.crops import track_crops
from relabel_store.pooling import BatchPooler, CropBox, PoolingSpec, pool, stack_boxes
from relabel_store.reader import RelabelStore

__all__ = ["LabelPooler", "RelabelDataset", "keys_from_paths", "pool_rows", "resolve_rows"]

Missing = Literal["error", "original"]

# From this many rows on, one BatchPooler call beats per-row pool() on CPU (measured crossover
# ~20 rows: BatchPooler has a fixed cost of ~0.4 ms per call).
_BATCH_POOLING_MIN = 24


def keys_from_paths(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Store keys for image files: the file stem (``.../n01440764_10026.JPEG`` -> the stem)."""
    return [Path(p).stem for p in paths]


def _default_keys(base: Any) -> list[str]:
    samples = getattr(base, "samples", None)  # torchvision ImageFolder / DatasetFolder
    if samples is not None:
        return keys_from_paths([s[0] for s in samples])
    filename = getattr(base, "filename", None)  # timm ImageDataset
    if callable(filename):
        return keys_from_paths([filename(i, absolute=True) for i in range(len(base))])
    raise TypeError(
        f"cannot find the file paths of {type(base).__name__} to derive store keys; pass "
        "key_fn=lambda index: '<key of sample index>' (keys are file stems such as "
        "'n01440764_10026')"
    )


def resolve_rows(
    store: RelabelStore, keys: Sequence[str], missing: Missing = "error"
) -> np.ndarray:
    """Row (position in key order) of every key, vectorised; -1 for absent keys if allowed."""
    if not keys:
        return np.zeros(0, np.int64)
    encoded = np.array([k.encode() for k in keys])
    table = store.keys
    pos = np.searchsorted(table, encoded).astype(np.int64)
    found = pos < len(table)
    found[found] = table[pos[found]] == encoded[found]
    if not found.all():
        absent = [keys[i] for i in np.flatnonzero(~found)[:5]]
        if missing == "error":
            raise RecordNotFoundError(
                f"{int((~found).sum())} of {len(keys)} samples have no record in store "
                f"{store.source.location} (first: {absent}). Check that the store was generated "
                "for this dataset and that key_fn derives the same keys, or pass "
                "missing='original' to fall back to the dataset's own one-hot label."
            )
        pos[~found] = -1
    return pos


class RelabelDataset(Dataset):
    """``base[i] -> (image, label)`` becomes ``(transform(image), soft_target)``.

    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes.
    - ``transform``: the user's own image transform (torchvision v2 / v1, timm, or a
      :class:`~relabel_store.loaders.ReturnsCropBox`); its crop box and flip are recovered.
    - ``key_fn(index) -> key``: overrides keys derived from the base dataset's file paths.
    - ``spec``: pooling variant, output grid and original-label mixing (:class:`PoolingSpec`).
    - ``missing``: ``"error"`` (default) refuses samples without a record at construction;
      ``"original"`` gives them the one-hot of the dataset's label instead.
    - ``pooling``: ``"sample"`` pools in the DataLoader worker and returns a (C,) float32
      target; ``"batch"`` returns a reference dict for :class:`LabelPooler`.
    """

    def __init__(
        self,
        base: Any,
        store: RelabelStore | str | os.PathLike[str],
        transform: Any = None,
        *,
        key_fn: Callable[[int], str] | None = None,
        spec: PoolingSpec | None = None,
        missing: Missing = "error",
        pooling: Literal["sample", "batch"] = "sample",
    ) -> None:
        if missing not in ("error", "original"):
            raise ValueError(f"missing must be 'error' or 'original', got {missing!r}")
        if pooling not in ("sample", "batch"):
            raise ValueError(f"pooling must be 'sample' or 'batch', got {pooling!r}")
        if not isinstance(store, RelabelStore):
            from relabel_store.api import load_relabel

            store = load_relabel(store)
        self.base = base
        self.store = store
        self.spec = spec or PoolingSpec()
        self.pooling = pooling
        self.num_classes = store.metadata.num_classes
        self.track = track_crops(transform)
        keys = [key_fn(i) for i in range(len(base))] if key_fn else _default_keys(base)
        self.rows = resolve_rows(store, keys, missing)

    def __len__(self) -> int:
        return len(self.base)

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        """A whole batch (DataLoader calls this when it exists): images first, then every
        record in one read and one pooling call, which keeps the pooling code hot in the CPU's
        caches instead of interleaving it with image decoding."""
        if self.pooling == "batch":
            return [self[i] for i in indices]
        images, boxes, labels = [], [], []
        for index in indices:
            image, label = self.base[index]
            image, box = self.track(image)
            images.append(image)
            boxes.append(box)
            labels.append(int(label))
        targets = pool_rows(
            self.store, self.rows[indices], boxes, np.asarray(labels), spec=self.spec
        )
        return list(zip(images, targets, strict=True))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, label = self.base[index]
        image, box = self.track(image)
        row = int(self.rows[index])
        if self.pooling == "batch":
            return image, {
                "row": row,
                "box": torch.tensor((box.x0, box.y0, box.x1, box.y1), dtype=torch.float64),
                "flipped": box.flipped,
                "label": int(label),
            }
        return image, torch.from_numpy(self.target(row, box, int(label)))

    def target(self, row: int, box: CropBox, label: int) -> np.ndarray:
        """The soft target of store row ``row`` (or the one-hot ``label`` when row is -1)."""
        if row < 0:
            return _one_hot(label, self.num_classes, self.spec)
        rec = self.store.get_row(row)
        return pool(
            rec.indices, rec.values, box, num_classes=self.num_classes, spec=self.spec, label=label
        )


def pool_rows(
    store: RelabelStore,
    rows: np.ndarray,
    boxes: Sequence[CropBox],
    labels: np.ndarray,
    *,
    spec: PoolingSpec,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Targets (B, C) (or (B, oh, ow, C)) for store rows (-1: fall back to the one-hot label).

    Reads the records in one call; pools them with one :class:`BatchPooler` call for large
    batches, with :func:`pool` per row for small ones. ``names`` label rows in errors.
    """
    n, c = len(rows), store.metadata.num_classes
    grid = () if spec.output_size == 1 else spec.grid
    present = np.flatnonzero(rows >= 0)
    records = store.get_rows(rows[present]) if len(present) else None
    out = torch.empty((n, *grid, c), dtype=torch.float32)
    if records is not None and len(present) >= _BATCH_POOLING_MIN:
        coords, flipped = stack_boxes([boxes[i] for i in present.tolist()])
        pooled = BatchPooler(c, spec)(
            torch.from_numpy(records.indices),
            torch.from_numpy(records.values),  # float16 or float32; pooled in float32
            coords,
            flipped,
            torch.from_numpy(np.asarray(labels)[present]),
        )
        if len(present) == n:
            return pooled
        out[torch.from_numpy(present)] = pooled
    elif records is not None:
        for j, i in enumerate(present.tolist()):
            out[i] = torch.from_numpy(
                pool(
                    records.indices[j],
                    records.values[j],
                    boxes[i],
                    num_classes=c,
                    spec=spec,
                    label=int(labels[i]),
                )
            )
    for i in np.flatnonzero(rows < 0).tolist():  # missing="original"
        out[i] = torch.from_numpy(
            _one_hot(int(labels[i]), c, spec, names[i] if names is not None else None)
        )
    return out


def _one_hot(
    label: int, num_classes: int, spec: PoolingSpec, name: str | None = None
) -> np.ndarray:
    if not 0 <= label < num_classes:
        raise RecordNotFoundError(
            f"{f'key {name!r}' if name else 'a sample'} has no record in the store and no "
            f"usable label ({label}) to fall back to"
        )
    out = np.zeros((*spec.grid, num_classes) if spec.output_size != 1 else num_classes, np.float32)
    out[..., label] = 1.0
    return out


class LabelPooler(torch.nn.Module):
    """Targets for a collated batch of ``RelabelDataset(pooling="batch")`` references.

    Reads the batch's records in one call and pools them with :class:`BatchPooler` on
    ``device``: ``targets = pooler(refs)`` right after ``images, refs = next(loader)``.
    """

    def __init__(
        self,
        store: RelabelStore,
        spec: PoolingSpec | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.spec = spec or PoolingSpec()
        self.num_classes = store.metadata.num_classes
        self.pooler = BatchPooler(self.num_classes, self.spec)
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def forward(self, refs: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = refs["row"].numpy()
        labels = refs["label"].to(self.device)
        present = rows >= 0
        h, w = self.store.metadata.grid
        k = self.store.metadata.k
        idx = np.zeros((len(rows), h, w, k), np.int64)
        val = np.zeros((len(rows), h, w, k), self.store.metadata.values_dtype)
        if present.any():
            batch = self.store.get_rows(rows[present])
            idx[present] = batch.indices
            val[present] = batch.values
        pin = self.device.type == "cuda"
        indices = torch.from_numpy(idx)
        values = torch.from_numpy(val)
        if pin:
            indices, values = indices.pin_memory(), values.pin_memory()
        out = self.pooler(
            indices.to(self.device, non_blocking=pin),
            values.to(self.device, non_blocking=pin).float(),
            refs["box"].to(self.device),
            refs["flipped"].to(self.device),
            labels,
        )
        if not present.all():
            fallback = torch.from_numpy(~present).to(self.device)
            for i in torch.nonzero(fallback).flatten().tolist():
                label = int(labels[i])
                out[i] = torch.from_numpy(_one_hot(label, self.num_classes, self.spec)).to(out)
        return out
