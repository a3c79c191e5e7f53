"""Hugging Face ``datasets``: a batch transform that adds ReLabel soft targets to image rows.

``relabel_transform(store, transform)`` returns a callable for ``Dataset.set_transform`` /
``Dataset.with_transform`` (called once per batch: a DataLoader fetches a batch through
``Dataset.__getitems__``) and for ``IterableDataset.map(..., batched=True)``. For every batch it

1. decodes the image column (PIL images, ``Image(decode=False)`` cells ``{"bytes", "path"}`` or
   file paths) to RGB, the same way ``relabel-store generate`` decoded the images it annotated;
2. derives each row's store key (from ``key_column``, or from the image's file path) and maps
   keys to store rows with :func:`~relabel_store.loaders.pytorch.resolve_rows`, so a missing
   key fails before any augmentation work;
3. runs the user's transform, recovering each crop box and flip with
   :func:`~relabel_store.loaders.crops.track_crops` (the code the PyTorch loader uses);
4. reads the batch's records in one call and pools them into soft targets: with
   :class:`~relabel_store.pooling.BatchPooler` for batches of ``relabel_store.loaders.pytorch._BATCH_POOLING_MIN`` rows or
   more, with :func:`~relabel_store.pooling.pool` per row below that (measured on CPU, one
   thread, 15x15x5 maps, 1000 classes, random crops: the batched pooler costs ~0.4 ms per call
   plus ~7-15 us per row, per-row pooling ~27 us per row).

Keys from paths: the file stem (``.../n01440764_10026.JPEG`` -> ``n01440764_10026``); when that
is not in the store and the stem ends in ``_<synset>`` (``n`` + 8 digits, the naming of the
ImageNet files on the Hub, e.g. ``n01440764_10026_n01440764.JPEG`` or
``ILSVRC2012_val_00000001_n01751748.JPEG``), the stem without that suffix.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from relabel_store.errors import RecordNotFoundError
from relabel_store.inputs import decode_image, to_rgb
from relabel_store.loaders.crops import track_crops
from relabel_store.loaders.pytorch import Missing, keys_from_paths, pool_rows, resolve_rows
from relabel_store.pooling import PoolingSpec
from relabel_store.reader import RelabelStore

__all__ = ["RelabelTransform", "relabel_transform"]

_SYNSET_SUFFIX = re.compile(r"^(.+)_n\d{8}$")


class RelabelTransform:
    """A ``datasets`` batch transform: the user's image transform plus ReLabel soft targets.

    ``ds.set_transform(relabel_transform(store, train_tf))`` (or ``ds.with_transform``,
    or ``iterable_ds.map(..., batched=True, remove_columns=[...])`` when streaming).

    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes
      (local path, Hub repo, fsspec URL, registered name).
    - ``transform``: the user's image transform (torchvision v2 / v1, timm, or a
      :class:`~relabel_store.loaders.ReturnsCropBox`); None leaves images as RGB PIL images.
    - ``image_column``: holds ``datasets.Image`` values (decoded or ``decode=False``) or paths.
    - ``key_column``: a column of store keys; None (default) derives keys from the image file
      paths, which needs ``Image(decode=False)`` when the dataset embeds image bytes.
    - ``label_column``: the original integer label, used by ``missing="original"`` and
      ``spec.original_weight``; None or an absent column means unknown.
    - ``pixel_values_column`` / ``target_column``: output names, ``"pixel_values"`` and
      ``"labels"`` as in ``transformers`` image classification.
    - ``keep_columns``: False (default) returns only the two outputs; True also passes every
      input column but the image column through; a list passes those columns.
    - ``spec``: pooling variant, output grid and original-label mixing (:class:`PoolingSpec`).
    - ``missing``: ``"error"`` (default) raises :class:`RecordNotFoundError` naming the key of
      a row without a record; ``"original"`` gives that row the one-hot of its label.

    Calling it with a batch (a mapping of column name -> list of values, as ``datasets`` passes
    it) returns a dict with ``pixel_values_column`` (a list of transformed images),
    ``target_column`` (a float32 tensor (B, C), or (B, oh, ow, C) for a larger pooling grid)
    and the kept columns.
    """

    def __init__(
        self,
        store: RelabelStore | str | os.PathLike[str],
        transform: Any = None,
        *,
        image_column: str = "image",
        key_column: str | None = None,
        label_column: str | None = "label",
        pixel_values_column: str = "pixel_values",
        target_column: str = "labels",
        keep_columns: bool | Sequence[str] = False,
        spec: PoolingSpec | None = None,
        missing: Missing = "error",
    ) -> None:
        if missing not in ("error", "original"):
            raise ValueError(f"missing must be 'error' or 'original', got {missing!r}")
        if pixel_values_column == target_column:
            raise ValueError(
                f"pixel_values_column and target_column are both {target_column!r}; "
                "name them differently"
            )
        if not isinstance(store, RelabelStore):
            from relabel_store.api import load_relabel

            store = load_relabel(store)
        self.store = store
        self.track = track_crops(transform)
        self.image_column = image_column
        self.key_column = key_column
        self.label_column = label_column
        self.pixel_values_column = pixel_values_column
        self.target_column = target_column
        self.keep_columns = keep_columns if isinstance(keep_columns, bool) else list(keep_columns)
        self.spec = spec or PoolingSpec()
        self.missing = missing
        self.num_classes = store.metadata.num_classes

    def __repr__(self) -> str:
        return (
            f"RelabelTransform({self.store!r}, image_column={self.image_column!r}, "
            f"key_column={self.key_column!r}, spec={self.spec}, missing={self.missing!r})"
        )

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        if self.image_column not in batch:
            raise KeyError(
                f"image column {self.image_column!r} is not in the batch (columns: "
                f"{list(batch)}); pass image_column=..."
            )
        cells = batch[self.image_column]
        images, paths = [], []
        for cell in cells:
            image, path = _load(cell, self.image_column)
            images.append(image)
            paths.append(path)
        rows, keys = self._rows(batch, paths)
        labels = self._labels(batch, len(images))
        pixels, boxes = [], []
        for image in images:
            pixel, box = self.track(image)
            pixels.append(pixel)
            boxes.append(box)
        targets = self._pool(rows, boxes, labels, keys)
        out: dict[str, Any] = {}
        if self.keep_columns is True:
            out.update((k, v) for k, v in batch.items() if k != self.image_column)
        elif self.keep_columns:
            for name in self.keep_columns:
                if name not in batch:
                    raise KeyError(f"keep_columns: {name!r} is not in the batch ({list(batch)})")
                out[name] = batch[name]
        out[self.pixel_values_column] = pixels
        out[self.target_column] = targets
        return out

    # -- keys -------------------------------------------------------------------------------------

    def _rows(
        self, batch: Mapping[str, Sequence[Any]], paths: Sequence[str | None]
    ) -> tuple[np.ndarray, list[str]]:
        """Store rows of a batch (-1: no record, only with ``missing="original"``) and keys."""
        if self.key_column is not None:
            if self.key_column not in batch:
                raise KeyError(
                    f"key column {self.key_column!r} is not in the batch (columns: {list(batch)})"
                )
            keys = [_as_key(k) for k in batch[self.key_column]]
            return self._resolve(keys, paths, resolved=None), keys
        absent = [i for i, p in enumerate(paths) if not p]
        if absent:
            raise ValueError(
                f"{len(absent)} of {len(paths)} images in column {self.image_column!r} carry no "
                "file path to derive a store key from (decoded images lose it when the dataset "
                "embeds the image bytes). Cast the column with "
                f"ds = ds.cast_column({self.image_column!r}, datasets.Image(decode=False)), or "
                "name a column holding the keys with key_column=..."
            )
        keys = keys_from_paths([p.split("::", 1)[0] for p in paths])  # type: ignore[union-attr]
        rows = resolve_rows(self.store, keys, "original")
        retry = {
            i: m.group(1)
            for i in np.flatnonzero(rows < 0).tolist()
            if (m := _SYNSET_SUFFIX.match(keys[i]))
        }
        if retry:  # ImageNet files on the Hub: <stem>_<synset>.JPEG
            found = resolve_rows(self.store, list(retry.values()), "original")
            for (i, key), row in zip(retry.items(), found.tolist(), strict=True):
                if row >= 0:
                    rows[i], keys[i] = row, key
        return self._resolve(keys, paths, resolved=rows), keys

    def _resolve(
        self, keys: list[str], paths: Sequence[str | None], resolved: np.ndarray | None
    ) -> np.ndarray:
        rows = resolve_rows(self.store, keys, "original") if resolved is None else resolved
        if self.missing == "error" and (rows < 0).any():
            absent = np.flatnonzero(rows < 0)
            i = int(absent[0])
            where = f" (image {paths[i]!r})" if paths[i] else ""
            raise RecordNotFoundError(
                f"key {keys[i]!r}{where} is not in store {self.store.source.location} "
                f"({len(self.store)} records); {len(absent)} of {len(keys)} rows of this batch "
                f"have no record (keys: {[keys[j] for j in absent[:5].tolist()]}). Check that "
                "the store was generated for this dataset and that the keys match (file stems "
                "such as 'n01440764_10026', or key_column=...), or pass missing='original' to "
                f"fall back to the one-hot of the label column {self.label_column!r}."
            )
        return rows

    # -- targets ----------------------------------------------------------------------------------

    def _labels(self, batch: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        if self.label_column is None or self.label_column not in batch:
            return np.full(n, -1, np.int64)
        return np.array([-1 if v is None else int(v) for v in batch[self.label_column]], np.int64)

    def _pool(
        self, rows: np.ndarray, boxes: list[Any], labels: np.ndarray, keys: list[str]
    ) -> torch.Tensor:
        return pool_rows(self.store, rows, boxes, labels, spec=self.spec, names=keys)


# The documented entry point, named like the other ``datasets`` transform factories.
relabel_transform = RelabelTransform


def _as_key(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _load(cell: Any, column: str) -> tuple[Image.Image, str | None]:
    """An RGB image and its file path (None when unknown) from one image-column cell."""
    if isinstance(cell, Image.Image):
        return to_rgb(cell), getattr(cell, "filename", None) or None
    if isinstance(cell, Mapping):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        data, path = cell.get("bytes"), cell.get("path")
        if data is not None:
            return _decode_bytes(data), path
        if path:
            return _open_path(path), path
        raise ValueError(f"a cell of column {column!r} has neither image bytes nor a path")
    if isinstance(cell, str | os.PathLike):
        path = os.fspath(cell)
        return _open_path(path), path
    raise TypeError(
        f"column {column!r} holds {type(cell).__name__}; expected datasets.Image values "
        "(PIL images or {'bytes', 'path'} dicts) or file paths"
    )


def _decode_bytes(data: bytes) -> Image.Image:
    """What :func:`~relabel_store.inputs.decode_image` does for bytes (the generator's decoding),
    without its defensive copy: nothing here closes the in-memory file under the image."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return to_rgb(image)


def _open_path(path: str) -> Image.Image:
    if "://" in path:  # remote or chained (zip://...::hf://...): read through fsspec
        import fsspec

        with fsspec.open(path, "rb") as f:
            return _decode_bytes(f.read())
    return decode_image(path)[0]
