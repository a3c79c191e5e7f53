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

Keys from paths are derived by :func:`relabel_store.keys.key_from_path`, as ``relabel-store
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
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from relabel_store.errors import ConfigurationError
from relabel_store.images import decode_cell, image_paths
from relabel_store.keys import KeyMode, key_from_path
from relabel_store.label_space import ClassMap, match_labels
from relabel_store.loaders._samples import (
    KeyTally,
    Missing,
    check_images,
    open_loader,
    pool_rows,
    require_labels,
    resolve_rows,
)
from relabel_store.loaders.crops import track_crops
from relabel_store.pooling import PoolingSpec
from relabel_store.reader import RelabelStore

__all__ = ["DatasetRows", "RelabelTransform", "relabel_transform"]


class relabel_transform:
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
        )
        self.check_sizes = opened.check_sizes
        if key_column is None:
            _check_path_key_mode(opened.key_mode)
        self.store, self.spec = opened.store, opened.spec
        self.key_mode = opened.key_mode
        self._keys_from = opened.keys_from
        self._tally = KeyTally()
        self.track = track_crops(transform)
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
            raise KeyError(
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
        if self.check_sizes:
            check_images(self.store, rows, images, keys)
        labels = self._labels(batch, len(images))
        pixels, boxes = [], []
        for image in images:
            pixel, box = self.track(image)
            pixels.append(pixel)
            boxes.append(box)
        targets = pool_rows(self.store, rows, boxes, labels, spec=self.spec, names=keys)
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


def _check_path_key_mode(key_mode: KeyMode) -> None:
    """Refuse a key mode a ``datasets`` dataset cannot derive keys in from its file paths."""
    if key_mode != "stem":
        raise ConfigurationError(
            f"key_mode={key_mode!r} keys files by their path below a dataset root, which a "
            "datasets.Dataset does not have (its images' paths are cache or archive paths); "
            "name a column holding the keys with key_column=..."
        )


#: The class's name in relabel-store 0.1 (when ``relabel_transform`` was a function returning
#: it), kept for code that names the type.
RelabelTransform = relabel_transform


class DatasetRows(TorchDataset):
    """A ``datasets.Dataset`` read as ``(RGB PIL image, label)`` samples, for RelabelDataset.

    Images are decoded as ``relabel-store generate`` decoded them (:func:`~relabel_store.images.decode_cell`); keys come
    from the image file names or ``key_column``; ``classes`` are the label column's
    ``ClassLabel`` names (None without one); a missing label is -1. The rows are read from an
    unformatted view of the dataset, so the caller's formatting does not matter; a transform
    set on it (``set_transform``/``with_transform``) is refused, since RelabelDataset must run
    the image transform itself to see the crop.
    """

    def __init__(
        self,
        dataset: Any,
        image_column: str = "image",
        label_column: str | None = "label",
        key_column: str | None = None,
    ) -> None:
        import datasets

        if dataset.format["type"] == "custom":
            raise ConfigurationError(
                "the datasets.Dataset has a transform (set_transform/with_transform), which "
                "would run before RelabelDataset could see the crop. Pass the image transform "
                "to RelabelDataset instead and give it the dataset without one: "
                "RelabelDataset(ds.with_format(None), store, train_transform)."
            )
        data = dataset.with_format(None)
        features = data.features
        for role, column in (("image", image_column), ("key", key_column)):
            if column is not None and column not in features:
                raise ConfigurationError(
                    f"{role} column {column!r} is not in the dataset (columns: {list(features)}); "
                    f"pass {role}_column=..."
                )
        feature = features[image_column]
        if isinstance(feature, datasets.Image):
            if feature.decode:  # decode ourselves: the file name (the key) survives
                data = data.cast_column(image_column, datasets.Image(decode=False))
        elif not (isinstance(feature, datasets.Value) and "string" in feature.dtype):
            raise ConfigurationError(
                f"column {image_column!r} is {feature!r}; an Image feature or file paths are "
                "required (pass image_column=...)"
            )
        if label_column is not None and label_column not in features:
            label_column = None  # unknown labels
        label = features[label_column] if label_column is not None else None
        self.classes = list(label.names) if isinstance(label, datasets.ClassLabel) else None
        self.data = data
        self.image_column = image_column
        self.label_column = label_column
        self.key_column = key_column

    def __len__(self) -> int:
        return len(self.data)

    def _sample(self, cell: Any, label: Any) -> tuple[Image.Image, int]:
        return decode_cell(cell, self.image_column)[0], -1 if label is None else int(label)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.data[int(index)]
        return self._sample(row[self.image_column], row.get(self.label_column or ""))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Image.Image, int]]:
        batch = self.data[list(indices)]
        labels = batch[self.label_column] if self.label_column else [None] * len(indices)
        return [
            self._sample(cell, label)
            for cell, label in zip(batch[self.image_column], labels, strict=True)
        ]

    def keys(self, key_mode: KeyMode) -> tuple[list[str], list[str] | None]:
        """Store keys of every row and the file paths they come from (None from a column)."""
        if self.key_column is not None:
            column = self.data.with_format("arrow")[self.key_column].to_pylist()
            return [_as_key(k) for k in column], None
        _check_path_key_mode(key_mode)
        paths = image_paths(self.data, self.image_column)
        absent = sum(1 for path in paths if not path)
        if absent:
            raise ConfigurationError(
                f"{absent} images of column {self.image_column!r} carry no file path to derive "
                "a store key from; name a column holding the keys with key_column=..."
            )
        files = [str(path) for path in paths]  # every one present
        return [key_from_path(f) for f in files], files


def _as_key(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
