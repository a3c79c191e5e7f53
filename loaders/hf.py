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
   :class:`~relabel_store.torch_pooling.BatchPooler` for batches of ``relabel_store.loaders.pytorch._BATCH_POOLING_MIN`` rows or
   more, with :func:`~relabel_store.pooling.pool` per row below that (measured on CPU, one
   thread, 15x15x5 maps, 1000 classes, random crops: the batched pooler costs ~0.4 ms per call
   plus ~7-15 us per row, per-row pooling ~27 us per row).

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

from relabel_store.errors import (
    ArgumentTypeError,
    ConfigurationError,
    InputError,
    RecordNotFoundError,
)
from relabel_store.images import decode_image, to_rgb
from relabel_store.keys import KeyMode, key_from_path
from relabel_store.loaders._classes import ClassMap, match_labels
from relabel_store.loaders.crops import track_crops
from relabel_store.loaders.pytorch import Missing, open_store, pool_rows, resolve_rows
from relabel_store.pooling import PoolingSpec
from relabel_store.reader import RelabelStore

__all__ = ["DatasetRows", "RelabelTransform", "image_paths", "relabel_transform"]


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
        class_names: Sequence[str] | None = None,
        class_map: ClassMap | None = None,
    ) -> None:
        if missing not in ("error", "original"):
            raise ConfigurationError(f"missing must be 'error' or 'original', got {missing!r}")
        if spec is not None and not isinstance(spec, PoolingSpec):
            raise ArgumentTypeError(f"spec must be a PoolingSpec, got {type(spec).__name__}")
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
        self.store = open_store(store)
        self.track = track_crops(transform)
        self.image_column = image_column
        self.key_column = key_column
        self.label_column = label_column
        self.pixel_values_column = pixel_values_column
        self.target_column = target_column
        self.keep_columns = keep_columns if isinstance(keep_columns, bool) else list(keep_columns)
        self.spec = spec or PoolingSpec()
        self.missing = missing
        self.num_classes = self.store.metadata.num_classes
        self.label_map = match_labels(
            self.store.metadata,
            class_names,
            class_map,
            dataset=f"label column {label_column!r}",
            unnamed=f"the names of the classes of label column {label_column!r} were not given "
            f"(class_names=ds.features[{label_column!r}].names)",
        )
        uses = [
            use
            for use, needed in (
                (
                    f"PoolingSpec(original_weight={self.spec.original_weight})",
                    self.spec.original_weight > 0,
                ),
                ("missing='original'", missing == "original"),
            )
            if needed
        ]
        if uses:
            self.label_map.require(" and ".join(uses))

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
        for name in (self.target_column, self.pixel_values_column):
            if name in batch:
                raise ConfigurationError(
                    f"the dataset has a column {name!r}, which this transform writes; were "
                    "the transform replaced (with_format/set_format do that), training would "
                    f"read the dataset's own {name!r} without an error. Pass "
                    "target_column=/pixel_values_column= names the dataset does not use."
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
            return self._resolve(keys, paths, resolved=None), keys
        absent = [i for i, p in enumerate(paths) if not p]
        if absent:
            raise ConfigurationError(
                f"{len(absent)} of {len(paths)} images in column {self.image_column!r} carry no "
                "file path to derive a store key from (decoded images lose it when the dataset "
                "embeds the image bytes). Cast the column with "
                f"ds = ds.cast_column({self.image_column!r}, datasets.Image(decode=False)), or "
                "name a column holding the keys with key_column=..."
            )
        keys = [key_from_path(p) for p in paths]  # type: ignore[arg-type]
        rows = resolve_rows(self.store, keys, "original", paths)
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
        """The batch's labels as store class ids (-1: unknown)."""
        if self.label_column is None or self.label_column not in batch:
            return np.full(n, -1, np.int64)
        labels = [-1 if v is None else int(v) for v in batch[self.label_column]]
        return self.label_map.to_store(np.array(labels, np.int64))


# The documented entry point, named like the other ``datasets`` transform factories.
relabel_transform = RelabelTransform


class DatasetRows(TorchDataset):
    """A ``datasets.Dataset`` read as ``(RGB PIL image, label)`` samples, for RelabelDataset.

    Images are decoded as ``relabel-store generate`` decoded them (:func:`_load`); keys come
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
        return _load(cell, self.image_column)[0], -1 if label is None else int(label)

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
        if key_mode != "stem":
            raise ConfigurationError(
                f"key_mode={key_mode!r} keys files by their path below a dataset root, which a "
                "datasets.Dataset does not have; name a column holding the keys with "
                "key_column=..."
            )
        paths = image_paths(self.data, self.image_column)
        absent = sum(1 for path in paths if not path)
        if absent:
            raise ConfigurationError(
                f"{absent} images of column {self.image_column!r} carry no file path to derive "
                "a store key from; name a column holding the keys with key_column=..."
            )
        files = [str(path) for path in paths]  # every one present
        return [key_from_path(f) for f in files], files


def image_paths(dataset: Any, column: str) -> list[str | None]:
    """The file path of every image of ``column`` (``Image`` values or path strings), read from
    Arrow without decoding an image; None where a row has none."""
    paths: list[str | None] = []
    images = dataset.select_columns([column]).with_format("arrow")
    for batch in images.iter(batch_size=8192):
        values = batch.column(column)
        if str(values.type).startswith("struct"):
            values = values.combine_chunks() if hasattr(values, "chunks") else values
            values = values.field("path")
        paths.extend(values.to_pylist())
    return paths


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
            return decode_image(data)[0], path
        if path:
            return _open_path(path), path
        raise InputError(f"a cell of column {column!r} has neither image bytes nor a path")
    if isinstance(cell, str | os.PathLike):
        path = os.fspath(cell)
        return _open_path(path), path
    raise ArgumentTypeError(
        f"column {column!r} holds {type(cell).__name__}; expected datasets.Image values "
        "(PIL images or {'bytes', 'path'} dicts) or file paths"
    )


def _open_path(path: str) -> Image.Image:
    if "://" in path:  # remote or chained (zip://...::hf://...): read through fsspec
        import fsspec

        with fsspec.open(path, "rb") as f:
            return decode_image(f.read())[0]
    return decode_image(path)[0]
