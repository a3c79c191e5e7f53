"""Hugging Face ``datasets``: a batch transform that adds ReLabel soft targets to image rows.

``relabel_transform(store, transform)`` returns a callable for ``Dataset.set_transform`` /
``Dataset.with_transform`` (called once per batch: a DataLoader fetches a batch through
``Dataset.__getitems__``) and for ``IterableDataset.map(..., batched=True)``. For every batch it

1. decodes the image column (PIL images, ``Image(decode=False)`` cells ``{"bytes", "path"}`` or
   file paths) to RGB with :func:`relabel_store.images.decode_cell`, the way ``relabel-store
   generate`` decoded the images it annotated (without applying EXIF orientation);
2. derives each row's store key (from ``key_column``, or from the image's file path) and maps
   keys to store rows (:meth:`RelabelStore.rows_of`), so a missing key fails before any
   augmentation work, and refuses images whose shape is not their record's;
3. runs the user's transform, recovering each crop box and flip with
   :func:`~relabel_store.loaders.crops.track_crops` (the code the PyTorch loader uses);
4. reads the batch's records in one call and pools each into its soft target, as every loader
   does (the same sample gets the same target whatever the batch).

Keys from paths are derived by :func:`relabel_store.format.keys.key_from_path`, as ``relabel-store
generate`` derived them: the file stem, with the Hub's ImageNet suffix ``_<wnid>``
(``n01440764_10026_n01440764.JPEG``, ``ILSVRC2012_val_00000001_n01751748.JPEG``) dropped.

For map-style training, ``RelabelDataset(ds, store, transform)`` reads a ``datasets.Dataset``
through :class:`DatasetRows` instead: a torch dataset that formatting calls cannot strip of its
targets, with every key and class checked at construction. ``Dataset.set_transform`` holds one
transform only: a later ``set_format``/``with_format``/``set_transform`` replaces this one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from relabel_store.errors import ColumnNotFoundError, ConfigurationError
from relabel_store.format.keys import KeyMode, key_from_path
from relabel_store.format.label_space import ClassMap, match_labels
from relabel_store.images import decode_cell
from relabel_store.loaders._bases import as_key, check_path_key_mode
from relabel_store.loaders._core import (
    ImageChecks,
    KeyTally,
    Missing,
    SampleSteps,
    open_loader,
    require_labels,
    resolve_rows,
)
from relabel_store.loaders.crops import track_crops
from relabel_store.pooling import PoolingSpec
from relabel_store.read.reader import RelabelStore

__all__ = ["RelabelTransform", "relabel_transform"]


class RelabelTransform:
    """A ``datasets`` batch transform: the user's image transform plus ReLabel soft targets.

    ``ds.set_transform(relabel_transform(store, train_tf))`` (or ``ds.with_transform``,
    or ``iterable_ds.map(..., batched=True, remove_columns=[...])`` when streaming).

    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes
      (local path, Hub repo, fsspec URL, registered name).
    - ``transform``: the user's image transform (torchvision v2 / v1, timm, or a
      :class:`~relabel_store.loaders.ReturnsCropBox`); None leaves images as RGB PIL images.
    - ``image_column``: holds ``datasets.Image`` values (decoded or ``decode=False``) or paths.
      ``datasets`` turns a photo by its EXIF orientation when it decodes it, ``generate`` does
      not: ``Image(decode=False)`` cells are decoded as ``generate`` decoded them, and a
      decoded image whose shape is not its record's is refused.
    - ``key_column``: a column of store keys (needed for stores generated with
      ``--key-column``); None (default) derives keys from the image file paths in
      ``key_mode`` (``"stem"``, the only mode a dataset without a root folder has), which
      needs ``Image(decode=False)`` when the dataset embeds image bytes.
    - ``label_column``: the original integer label, used by ``missing="original"`` and
      ``spec.original_weight``; None or an absent column means unknown. Those two mix the label
      in at the store's class for it, so they need ``class_names`` (the label column's
      ``ClassLabel`` names, ``ds.features["label"].names``, matched with the store's class
      identifiers) or ``class_map`` (see :class:`~relabel_store.loaders.RelabelDataset`).
    - ``pixel_values_column`` / ``target_column``: output names, ``"pixel_values"`` and
      ``"labels"`` as in ``transformers`` image classification. Neither may name a column of
      the dataset: were this transform ever replaced (``with_format`` and ``set_format`` do
      that), the training loop would read the dataset's own column without an error.
    - ``keep_columns``: False (default) returns only the two outputs; True also passes every
      input column but the image column through; a list passes those columns.
    - ``spec``: pooling variant, output grid and original-label mixing (:class:`PoolingSpec`).
    - ``missing``: ``"error"`` (default) raises :class:`RecordNotFoundError` naming the key of
      a row without a record; ``"original"`` gives that row the one-hot of its label (and
      refuses keys of which none is in the store: derived another way than the store's).
    - ``check_sizes``: as for :class:`~relabel_store.loaders.RelabelDataset` (True: refuse an
      image whose shape is not its record's).
    - ``check_images``: as for ``RelabelDataset`` (``"sample"``: the first 16 images of every
      process, then one in 1000; ``"all"``, ``"off"``, or a rate in (0, 1]).
    - ``check_crops``: as for :class:`~relabel_store.loaders.RelabelDataset` (True: confirm
      the first samples of every process from their pixels).

    Calling it with a batch (a mapping of column name -> list of values, as ``datasets`` passes
    it) returns a dict with ``pixel_values_column`` (a list of transformed images),
    ``target_column`` (a float32 tensor (B, C), or (B, oh, ow, C) for a larger pooling grid)
    and the kept columns. A sample's target does not depend on the batch it comes in.
    """

    def __init__(
        self,
        store: RelabelStore | str | os.PathLike[str],
        transform: Any = None,
        *,
        image_column: str = "image",
        key_column: str | None = None,
        key_mode: KeyMode | None = None,
        label_column: str | None = "label",
        pixel_values_column: str = "pixel_values",
        target_column: str = "labels",
        keep_columns: bool | Sequence[str] = False,
        spec: PoolingSpec | None = None,
        missing: Missing = "error",
        class_names: Sequence[str] | None = None,
        class_map: ClassMap | None = None,
        check_sizes: bool = True,
        check_images: ImageChecks = "sample",
        check_crops: bool | int = True,
    ) -> None:
        if pixel_values_column == target_column:
            raise ConfigurationError(
                f"pixel_values_column and target_column are both {target_column!r}; "
                "name them differently"
            )
        if target_column in (label_column, image_column, key_column):
            raise ConfigurationError(
                f"target_column={target_column!r} is also an input column; were this transform "
                "replaced (with_format/set_format do that), training would read that column "
                "without an error. Name the soft targets differently (the default: 'labels')."
            )
        opened = open_loader(
            store,
            spec=spec,
            missing=missing,
            key_mode=key_mode,
            key_column=key_column,
            other_keys="key_column= (the column holding them)",
            check_sizes=check_sizes,
            check_images=check_images,
        )
        self.steps = SampleSteps(opened, "sample", track_crops(transform, check_crops=check_crops))
        if key_column is None:
            check_path_key_mode(opened.key_mode)
        self.store, self.spec = opened.store, opened.spec
        self.key_mode = opened.key_mode
        self._keys_from = opened.keys_from
        self._tally = KeyTally()
        self.image_column = image_column
        self.key_column = key_column
        self.label_column = label_column
        self.pixel_values_column = pixel_values_column
        self.target_column = target_column
        self.keep_columns = keep_columns if isinstance(keep_columns, bool) else list(keep_columns)
        self.missing: Missing = missing
        self.num_classes = self.store.metadata.num_classes
        self.label_map = match_labels(
            self.store.metadata,
            class_names,
            class_map,
            dataset=f"label column {label_column!r}",
            unnamed=f"the names of the classes of label column {label_column!r} were not given "
            f"(class_names=ds.features[{label_column!r}].names)",
        )
        require_labels(self.label_map, self.spec, missing, None)

    def __repr__(self) -> str:
        return (
            f"relabel_transform({self.store!r}, image_column={self.image_column!r}, "
            f"key_column={self.key_column!r}, key_mode={self.key_mode!r}, spec={self.spec}, "
            f"missing={self.missing!r})"
        )

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        if self.image_column not in batch:
            raise ColumnNotFoundError(
                f"image column {self.image_column!r} is not in the batch (columns: "
                f"{list(batch)}); pass image_column=..."
            )
        for name in (self.target_column, self.pixel_values_column):
            if name in batch:
                raise ConfigurationError(
                    f"the dataset has a column {name!r}, which this transform writes; were "
                    "the transform replaced (with_format/set_format do that), training would "
                    f"read the dataset's own {name!r} without an error. Pass "
                    "target_column=/pixel_values_column= names the dataset does not use."
                )
        images, paths = [], []
        for cell in batch[self.image_column]:
            image, path = decode_cell(cell, self.image_column)
            images.append(image)
            paths.append(path)
        rows, keys = self._rows(batch, paths)
        self.steps.check(rows, images, keys)
        labels = self._labels(batch, len(images))
        pixels, boxes = [], []
        for image in images:
            pixel, box = self.steps.transform(image)
            pixels.append(pixel)
            boxes.append(box)
        targets = self.steps.targets(rows, boxes, labels, keys)
        out: dict[str, Any] = {}
        if self.keep_columns is True:
            out.update((k, v) for k, v in batch.items() if k != self.image_column)
        elif self.keep_columns:
            for name in self.keep_columns:
                if name not in batch:
                    raise ColumnNotFoundError(
                        f"keep_columns: {name!r} is not in the batch ({list(batch)})"
                    )
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
                raise ColumnNotFoundError(
                    f"key column {self.key_column!r} is not in the batch (columns: {list(batch)})"
                )
            keys = [as_key(k) for k in batch[self.key_column]]
            from_paths = None
        else:
            absent = [i for i, p in enumerate(paths) if not p]
            if absent:
                raise ConfigurationError(
                    f"{len(absent)} of {len(paths)} images in column {self.image_column!r} "
                    "carry no file path to derive a store key from (decoded images lose it when "
                    "the dataset embeds the image bytes). Cast the column with "
                    f"ds = ds.cast_column({self.image_column!r}, datasets.Image(decode=False)), "
                    "or name a column holding the keys with key_column=..."
                )
            keys = [key_from_path(p, self.key_mode) for p in paths]  # type: ignore[arg-type]
            from_paths = paths
        rows = resolve_rows(
            self.store,
            keys,
            self.missing,
            self._keys_from,
            from_paths,
            whole=False,
            fallback=f"the one-hot of the label column {self.label_column!r}",
        )
        self._tally.add(self.store, rows, keys, self._keys_from)
        return rows, keys

    # -- targets ----------------------------------------------------------------------------------

    def _labels(self, batch: Mapping[str, Sequence[Any]], n: int) -> np.ndarray:
        """The batch's labels as store class ids (-1: unknown)."""
        if self.label_column is None or self.label_column not in batch:
            return np.full(n, -1, np.int64)
        labels = [-1 if v is None else int(v) for v in batch[self.label_column]]
        return self.label_map.to_store(np.array(labels, np.int64))


def relabel_transform(store: Any, transform: Any = None, **options: Any) -> RelabelTransform:
    """A :class:`RelabelTransform` for ``Dataset.set_transform``: ``store``, ``transform`` and
    the keyword ``options`` as its constructor takes them."""
    return RelabelTransform(store, transform, **options)
