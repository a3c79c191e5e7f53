"""Input datasets for ``relabel-store generate``.

Three kinds of source, all exposing the same sorted view (row ``i`` is the ``i``-th key in
ascending code-point order, the order in which the writer stores rows):

* :class:`ImageFolderInputs` — ImageNet layout ``<root>/<class>/<file>`` (recursive inside a class
  folder). Key = file stem, or the path below the root with ``key_mode="relpath"``
  (:mod:`relabel_store.format.keys`); label = index of the class folder in sorted folder order (or in
  an explicit ``class_names`` list), class names = folder names.
* :class:`ImageFilesInputs` — a plain folder of images (recursive) or a text file listing image
  paths, one per line (relative paths are taken from the list file's folder; ``path<TAB>label``
  gives a label). Labels are ``-1`` (unknown) unless listed.
* :class:`HFDatasetInputs` — a Hugging Face ``datasets`` dataset (``load_from_disk`` path, a name
  for ``load_dataset``, or a ``Dataset`` object) with an image column. Key = stem of the image's
  file path (:mod:`relabel_store.format.keys`), or a named key column; label column optional.

:func:`open_inputs` picks the kind from a path or name. Duplicate keys raise :class:`InputError`
before any work starts.

:class:`InputDataset` is the map-style ``torch.utils.data.Dataset`` over a source (optionally a
subset of rows, e.g. one shard). Decoding happens in the DataLoader workers; every image mode is
converted to RGB (:func:`relabel_store.images.to_rgb`), and a file that cannot be decoded never raises: its item has
``image=None`` and ``error`` set to the reason. :func:`collate_inputs` separates those failures
from the batch. Per-row data is held in numpy arrays, not Python lists, so forked workers do not
copy it page by page through reference counting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ConfigurationError, InputError

with requires_extra("generate", "relabel_store.write.inputs"):
    import torch
    from PIL import Image
    from torch.utils.data import Dataset

    from relabel_store.images import IMAGE_EXTENSIONS, decode_image, image_paths, image_signature
from relabel_store.format.keys import KeyMode, check_key_mode, key_from_path

__all__ = [
    "HFDatasetInputs",
    "ImageFilesInputs",
    "ImageFolderInputs",
    "InputBatch",
    "InputDataset",
    "InputFailure",
    "InputItem",
    "InputSource",
    "collate_inputs",
    "open_inputs",
]

# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _as_bytes_array(strings: Sequence[str]) -> np.ndarray:
    encoded = [s.encode("utf-8") for s in strings]
    return np.array(encoded, dtype=np.bytes_) if encoded else np.zeros(0, dtype="S1")


class InputSource:
    """Records of an input dataset, sorted by key.

    Row ``i`` has :meth:`key`, :meth:`label` (``-1`` when unknown) and :meth:`location` (a file
    path, or ``"<dataset>[<index>]"`` for datasets rows); :meth:`read` returns what
    :func:`decode_image` takes. Subclasses fill ``_keys`` / ``_labels`` (numpy arrays, already
    sorted) and implement :meth:`location` / :meth:`read`.
    """

    kind: str = "?"
    class_names: list[str] | None = None
    #: How keys were derived from file paths (:mod:`relabel_store.format.keys`); None: from a column.
    key_mode: KeyMode | None = "stem"

    _keys: np.ndarray
    _labels: np.ndarray

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> list[str]:
        """All keys, ascending (a new list on every call)."""
        return [k.decode("utf-8") for k in self._keys.tolist()]

    @property
    def labels(self) -> np.ndarray:
        """All labels (int32, ``-1`` = unknown), in key order."""
        return self._labels

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def key(self, row: int) -> str:
        return self._keys[row].decode("utf-8")

    def label(self, row: int) -> int:
        return int(self._labels[row])

    def location(self, row: int) -> str:
        raise NotImplementedError

    def read(self, row: int) -> bytes | str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "records": len(self),
            "num_classes": self.num_classes,
            "key_mode": self.key_mode,
        }

    def _sort(self, keys: list[str], labels: Sequence[int], extra: list[np.ndarray]) -> list:
        """Store keys and labels sorted by key; returns ``extra`` in the same order."""
        if not keys:
            raise InputError(f"no images found in {self._where()}")
        key_array = _as_bytes_array(keys)
        order = np.argsort(key_array, kind="stable")  # UTF-8 byte order == code-point order
        self._keys = key_array[order]
        self._labels = np.asarray(labels, dtype=np.int32)[order]
        return [e[order] for e in extra]

    def _check_unique(self) -> None:
        """Raise :class:`InputError` naming a few duplicates when keys repeat."""
        dup = np.flatnonzero(self._keys[1:] == self._keys[:-1])
        if not dup.size:
            return
        count = len({self._keys[i] for i in dup.tolist()})
        examples = [
            f"{self.key(i)!r} ({self.location(i)} and {self.location(i + 1)})"
            for i in dup[:5].tolist()
        ]
        raise InputError(
            f"{count} duplicate key(s) in {self._where()}; keys name the rows of the store and "
            f"must be unique. For example: {'; '.join(examples)}. {self._duplicate_fix()}"
        )

    def _duplicate_fix(self) -> str:
        if self.key_mode == "stem":
            return (
                "When different folders hold files of the same name (Places365-style "
                "00000001.jpg), key them by their path relative to the dataset root: "
                "relabel-store generate --key-mode relpath (key_mode='relpath'), and the same "
                "key_mode in the loaders."
            )
        return "Remove the duplicates, or give each image a unique key (key_column=...)."

    def _where(self) -> str:
        return self.kind


class _FileSource(InputSource):
    """Sources whose rows are files.

    :meth:`location` is the path as the source names it (relative to the folder for folder
    sources, as written for list files: portable in error reports); :meth:`read` resolves it
    against ``root``.
    """

    root: Path | None = None
    _paths: np.ndarray

    def location(self, row: int) -> str:
        return self._paths[row].decode("utf-8")

    def read(self, row: int) -> str:
        path = self.location(row)
        if self.root is None or os.path.isabs(path):
            return path
        return os.path.join(self.root, path)


def _keys_of(rels: Sequence[str], key_mode: KeyMode) -> list[str]:
    """Store keys of files given relative to the dataset root."""
    try:
        check_key_mode(key_mode)
        return [key_from_path(r, key_mode) for r in rels]
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan(folder: Path) -> list[str]:
    """Image files below ``folder`` (recursive, hidden entries skipped), relative, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, folder)
        for name in sorted(filenames):
            if _is_image_name(name):
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                found.append(rel.replace(os.sep, "/"))
    return found


class ImageFolderInputs(_FileSource):
    """ImageNet layout: ``<root>/<class folder>/**/<image>``; keys from paths (``key_mode``)."""

    kind = "imagefolder"
    root: Path

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        class_names: Sequence[str] | None = None,
        key_mode: KeyMode = "stem",
    ) -> None:
        self.root = Path(root)
        self.key_mode = key_mode
        if not self.root.is_dir():
            raise InputError(f"{self.root} is not a folder")
        folders = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")
        )
        if not folders:
            raise InputError(f"{self.root} has no class folders (expected <root>/<class>/<image>)")
        names = list(class_names) if class_names is not None else folders
        if len(set(names)) != len(names):
            raise InputError("class_names has duplicates")
        index = {name: i for i, name in enumerate(names)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise InputError(
                f"class folders not in class_names: {unknown[:10]}"
                + (f" ({len(unknown)} in all)" if len(unknown) > 10 else "")
            )
        self.class_names = names
        rels: list[str] = []
        labels: list[int] = []
        for folder in folders:
            for rel in _scan(self.root / folder):
                rels.append(f"{folder}/{rel}")
                labels.append(index[folder])
        keys = _keys_of(rels, key_mode)
        (self._paths,) = self._sort(keys, labels, [_as_bytes_array(rels)])
        self._check_unique()

    def _where(self) -> str:
        return f"image folder {self.root}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": self.root.name}


class ImageFilesInputs(_FileSource):
    """Images without class folders: a folder scanned recursively, or a list of paths."""

    kind = "files"

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        root: str | os.PathLike[str] | None = None,
        labels: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        key_mode: KeyMode = "stem",
        description: str = "image list",
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.key_mode = key_mode
        self._description = description
        self.class_names = list(class_names) if class_names is not None else None
        rels = [os.fspath(p).replace(os.sep, "/") for p in paths]
        if labels is None:
            labels = [-1] * len(rels)
        elif len(labels) != len(rels):
            raise InputError(f"{len(labels)} labels for {len(rels)} paths")
        keys = _keys_of(rels, key_mode)
        (self._paths,) = self._sort(keys, labels, [_as_bytes_array(rels)])
        self._check_unique()

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], *, key_mode: KeyMode = "stem"):
        """Every image file below ``root`` (recursive); labels unknown."""
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root} is not a folder")
        return cls(_scan(root), root=root, key_mode=key_mode, description=f"folder {root}")

    @classmethod
    def from_list(cls, list_file: str | os.PathLike[str], *, key_mode: KeyMode = "stem"):
        """A text file of image paths, one per line; ``path<TAB>label`` sets a label.

        Blank lines and lines starting with ``#`` are skipped; relative paths are relative to
        the list file's folder (and stay relative in :meth:`location`).
        """
        list_file = Path(list_file)
        try:
            text = list_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read image list {list_file}: {exc}") from exc
        base = list_file.parent
        paths: list[str] = []
        labels: list[int] = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            label = -1
            if "\t" in line:
                line, _, label_text = line.rpartition("\t")
                try:
                    label = int(label_text)
                except ValueError as exc:
                    raise InputError(
                        f"{list_file}:{number}: label {label_text!r} is not an integer"
                    ) from exc
            paths.append(line.strip())
            labels.append(label)
        return cls(
            paths,
            root=base,
            labels=labels,
            key_mode=key_mode,
            description=f"image list {list_file}",
        )

    def _where(self) -> str:
        return self._description


class HFDatasetInputs(InputSource):
    """A Hugging Face ``datasets.Dataset`` with an image column (``Image`` feature or paths).

    ``dataset``: a ``Dataset``, a ``DatasetDict`` (with ``split``), a ``save_to_disk`` folder, or
    a name for ``datasets.load_dataset`` (with ``split``). Keys come from ``key_column`` when
    given, else from the stem of each image's file path. ``label_column="auto"`` uses a
    ``label`` / ``labels`` integer column when there is one; ``None`` means no labels.
    """

    kind = "hf-datasets"

    def __init__(
        self,
        dataset: Any,
        *,
        split: str | None = None,
        image_column: str = "image",
        key_column: str | None = None,
        label_column: str | None = "auto",
        name: str | None = None,
    ) -> None:
        with requires_extra("hf", "reading a Hugging Face dataset (--hf-dataset)"):
            import datasets

        self.name = name
        ds = self._resolve(dataset, split)
        self.split = split
        features = ds.features
        if image_column not in features:
            raise InputError(
                f"image column {image_column!r} not in the dataset (columns: {list(features)})"
            )
        feature = features[image_column]
        if isinstance(feature, datasets.Image):
            images = ds.select_columns([image_column]).cast_column(
                image_column, datasets.Image(decode=False)
            )
        elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            images = ds.select_columns([image_column])
        else:
            raise InputError(
                f"column {image_column!r} is {feature!r}; an Image feature or file paths "
                "are required"
            )
        self.image_column = image_column
        self.key_mode = None if key_column is not None else "stem"
        self.key_column = key_column
        self._images = images
        keys = self._keys_from(ds, images, image_column, key_column)
        labels, self.class_names = self._labels_from(ds, label_column)
        rows = np.arange(len(ds), dtype=np.int64)
        (self._rows,) = self._sort(keys, labels, [rows])
        self._check_unique()

    def _resolve(self, dataset: Any, split: str | None):
        import datasets

        if isinstance(dataset, (str, os.PathLike)):
            spec = os.fspath(dataset)
            self.name = self.name or spec
            try:
                if _looks_like_saved_dataset(Path(spec)):
                    dataset = datasets.load_from_disk(spec)
                else:  # a Hub name, or a local folder of data files
                    dataset = datasets.load_dataset(spec, split=split)
            except Exception as exc:  # datasets raises many types (not found, offline, format)
                raise InputError(
                    f"cannot open dataset {spec!r}: {type(exc).__name__}: {exc}"
                ) from exc
        if isinstance(dataset, (datasets.DatasetDict, Mapping)):
            if split is None:
                raise InputError(
                    f"the dataset has splits {list(dataset)}; choose one with split=..."
                )
            if split not in dataset:
                raise InputError(f"split {split!r} not in the dataset (splits: {list(dataset)})")
            dataset = dataset[split]
        if not isinstance(dataset, datasets.Dataset):
            raise InputError(
                f"expected a datasets.Dataset, got {type(dataset).__name__} "
                "(iterable/streaming datasets are not supported)"
            )
        return dataset

    @staticmethod
    def _keys_from(ds, images, image_column: str, key_column: str | None) -> list[str]:
        if key_column is not None:
            if key_column not in ds.features:
                raise InputError(f"key column {key_column!r} not in {list(ds.features)}")
            return [str(k) for k in ds.with_format("arrow")[key_column].to_pylist()]
        paths = image_paths(images, image_column)
        missing = sum(1 for path in paths if not path)
        if missing:
            raise InputError(
                f"{missing} image(s) of column {image_column!r} have no file path to take a key "
                "from; name a key column with key_column=..."
            )
        return [key_from_path(path) for path in paths]  # type: ignore[arg-type]

    @staticmethod
    def _labels_from(ds, label_column: str | None) -> tuple[list[int], list[str] | None]:
        import datasets

        n = len(ds)
        if label_column == "auto":
            label_column = next(
                (
                    c
                    for c in ("label", "labels")
                    if c in ds.features
                    and (
                        isinstance(ds.features[c], datasets.ClassLabel)
                        or (
                            isinstance(ds.features[c], datasets.Value)
                            and ds.features[c].dtype.startswith(("int", "uint"))
                        )
                    )
                ),
                None,
            )
        if label_column is None:
            return [-1] * n, None
        if label_column not in ds.features:
            raise InputError(f"label column {label_column!r} not in {list(ds.features)}")
        feature = ds.features[label_column]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        values = ds.with_format("arrow")[label_column].to_pylist()
        try:
            labels = [-1 if v is None else int(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise InputError(f"label column {label_column!r} is not integer: {exc}") from exc
        return labels, names

    def location(self, row: int) -> str:
        return f"{self.name or 'dataset'}[{int(self._rows[row])}]"

    def read(self, row: int) -> bytes | str:
        value = self._images[int(self._rows[row])][self.image_column]
        if isinstance(value, str):
            return value
        if value is None:
            raise InputError("the image cell is empty")
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            return value["path"]
        raise InputError("the image cell has neither bytes nor a path")

    def _where(self) -> str:
        return f"dataset {self.name or ''} split {self.split or ''}".strip()

    def describe(self) -> dict[str, Any]:
        name = self.name
        if name and os.path.isabs(name):  # a local folder: keep its name, not the machine's path
            name = Path(name).name
        described = {**super().describe(), "name": name, "split": self.split}
        if self.key_column is not None:  # loaders name it when they refuse path-derived keys
            described["key_column"] = self.key_column
        return described


def _looks_like_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "state.json"))


def open_inputs(
    spec: str | os.PathLike[str] | Any,
    *,
    kind: str = "auto",
    split: str | None = None,
    image_column: str = "image",
    key_column: str | None = None,
    label_column: str | None = "auto",
    class_names: Sequence[str] | None = None,
    key_mode: KeyMode = "stem",
) -> InputSource:
    """Open an input source. ``kind``: ``auto``, ``imagefolder``, ``folder``, ``list`` or ``hf``.

    ``auto``: a ``datasets`` object or a ``save_to_disk`` folder -> ``hf``; a file -> ``list``;
    a folder whose top level holds only sub-folders -> ``imagefolder``; another folder ->
    ``folder``; anything else is taken as a dataset name for ``datasets.load_dataset``.
    """
    if kind not in ("auto", "imagefolder", "folder", "list", "hf"):
        raise InputError(f"unknown input kind {kind!r}")
    if not isinstance(spec, (str, os.PathLike)):
        _stem_keys_only(key_mode)
        return HFDatasetInputs(
            spec,
            split=split,
            image_column=image_column,
            key_column=key_column,
            label_column=label_column,
        )
    path = Path(spec)
    if kind == "auto":
        if path.is_file():
            kind = "list"
        elif path.is_dir():
            entries = [e for e in os.scandir(path) if not e.name.startswith(".")]
            if _looks_like_saved_dataset(path):
                kind = "hf"
            elif entries and all(e.is_dir() for e in entries):
                kind = "imagefolder"
            else:
                kind = "folder"
        elif os.sep in str(spec) or str(spec).startswith((".", "~")):
            raise InputError(
                f"no such file or folder: {spec}. Give an image folder (ImageNet layout or "
                "plain), a text file listing image paths, or a Hugging Face dataset name."
            )
        else:
            kind = "hf"
    if kind == "imagefolder":
        return ImageFolderInputs(path, class_names=class_names, key_mode=key_mode)
    if kind == "folder":
        return ImageFilesInputs.from_folder(path, key_mode=key_mode)
    if kind == "list":
        return ImageFilesInputs.from_list(path, key_mode=key_mode)
    _stem_keys_only(key_mode)
    return HFDatasetInputs(
        os.fspath(spec),
        split=split,
        image_column=image_column,
        key_column=key_column,
        label_column=label_column,
    )


def _stem_keys_only(key_mode: str) -> None:
    if key_mode != "stem":
        raise InputError(
            f"key_mode={key_mode!r} applies to image folders and file lists; a Hugging Face "
            "dataset is keyed by its image file stems or by a key column (key_column=...)"
        )


# --------------------------------------------------------------------------------------------
# The torch Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputItem:
    """One record as a worker produced it; ``image`` is None and ``error`` set on failure."""

    row: int
    key: str
    location: str
    label: int
    image: Any
    size: tuple[int, int] | None
    error: str | None = None
    #: The whole decoded image's content signature (``InputDataset(signatures=True)``).
    signature: np.ndarray | None = None


@dataclass(frozen=True)
class InputFailure:
    """A record whose image could not be used: the caller records it and skips the row."""

    row: int
    key: str
    location: str
    reason: str


@dataclass
class InputBatch:
    """Collated good items plus the failures of the same batch."""

    rows: torch.Tensor  # int64 (B,)
    keys: list[str]
    labels: torch.Tensor  # int64 (B,)
    # (B, 3, h, w) when every image has one shape; else a list of (3, h_i, w_i) images (aspect-
    # preserving annotation: the annotator groups them by shape); None when every item failed
    images: torch.Tensor | list[torch.Tensor] | None
    sizes: torch.Tensor  # int32 (B, 2): original (height, width)
    failures: list[InputFailure] = field(default_factory=list)
    #: uint8 (B, SIGNATURE_BYTES) content signatures, when the dataset computed them.
    signatures: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> InputBatch:  # called by DataLoader(pin_memory=True)
        if self.images is None:
            return self
        if isinstance(self.images, list):
            return replace(self, images=[image.pin_memory() for image in self.images])
        return replace(self, images=self.images.pin_memory())


class InputDataset(Dataset):
    """Map-style dataset over an :class:`InputSource` (or a subset of its rows).

    ``dataset[i]`` decodes row ``rows[i]`` (all rows when ``rows`` is None) into an
    :class:`InputItem` with ``image = transform(rgb_pil_image)``. Decode and transform failures
    are returned as items with ``image=None`` and the reason in ``error``; they never raise.
    ``signatures``: also the content signature of the whole decoded image, before the transform
    (:func:`relabel_store.images.image_signature`, what loaders check images against).
    """

    def __init__(
        self,
        source: InputSource,
        transform: Callable[[Image.Image], Any] | None = None,
        rows: Iterable[int] | None = None,
        *,
        signatures: bool = False,
    ) -> None:
        self.source = source
        self.transform = transform
        self.signatures = signatures
        if rows is None:
            self.rows = np.arange(len(source), dtype=np.int64)
        else:
            self.rows = np.asarray(list(rows), dtype=np.int64)
            if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= len(source)):
                raise InputError(f"rows must lie in 0..{len(source) - 1}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> InputItem:
        row = int(self.rows[index])
        source = self.source
        key, label = source.key(row), source.label(row)
        try:
            location = source.location(row)
        except Exception as exc:  # pragma: no cover - sources compute this from their own arrays
            location = f"row {row}"
            return InputItem(row, key, location, label, None, None, _reason(exc))
        try:
            image, size = decode_image(source.read(row))
        except Exception as exc:  # any decoder failure is data, not a crash
            return InputItem(row, key, location, label, None, None, _reason(exc))
        signature = image_signature(image) if self.signatures else None
        if self.transform is not None:
            try:
                image = self.transform(image)
            except Exception as exc:
                return InputItem(
                    row, key, location, label, None, size, "transform: " + _reason(exc)
                )
        return InputItem(row, key, location, label, image, size, signature=signature)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _stack_signatures(items: Sequence[InputItem]) -> torch.Tensor | None:
    signatures = [it.signature for it in items if it.signature is not None]
    if not items or len(signatures) != len(items):
        return None
    return torch.from_numpy(np.stack(signatures))


def collate_inputs(items: Sequence[InputItem]) -> InputBatch:
    """``collate_fn`` for :class:`InputDataset`: stacks good items (keeps them as a list when
    their shapes differ), lists failures apart."""
    good = [it for it in items if it.error is None]
    failures = [
        InputFailure(it.row, it.key, it.location, it.error or "") for it in items if it.error
    ]
    images: torch.Tensor | list[torch.Tensor] | None = None
    if good:
        first = good[0].image
        if isinstance(first, torch.Tensor):
            if all(it.image.shape == first.shape for it in good):
                images = torch.stack([it.image for it in good])
            else:
                images = [it.image for it in good]
        else:
            raise InputError(
                "collate_inputs needs tensor images: give InputDataset a transform "
                "(e.g. the annotator's transform)"
            )
    return InputBatch(
        rows=torch.tensor([it.row for it in good], dtype=torch.int64),
        keys=[it.key for it in good],
        labels=torch.tensor([it.label for it in good], dtype=torch.int64),
        images=images,
        sizes=torch.tensor([it.size for it in good], dtype=torch.int32).reshape(-1, 2),
        failures=failures,
        signatures=_stack_signatures(good),
    )
