"""What RelabelDataset needs to know about the dataset it wraps, found once at construction.

- Whether the base dataset transforms its own images (torchvision ``transform``/``transforms``,
  timm ``transform``): then RelabelDataset would see an image that was already cropped and pool
  the wrong box. :func:`take_over_transform` takes such a transform over when that is
  unambiguous and refuses otherwise.
- The file path, and so the store key, of every sample (:func:`sample_paths`).
- The names of the dataset's classes, to match its labels with the store's classes
  (:func:`class_names`).

Known layouts: torchvision ``DatasetFolder``/``ImageFolder`` (and other ``VisionDataset`` s for
transforms), timm ``ImageDataset``, ``torch.utils.data.Subset`` and ``ConcatDataset`` of those;
Hugging Face ``datasets.Dataset`` bases are read through
:class:`relabel_store.loaders.hf.DatasetRows`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from PIL import Image
from torch.utils.data import ConcatDataset, Subset
from torch.utils.data import Dataset as TorchDataset

from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.format.keys import KeyMode, key_from_path
from relabel_store.images import decode_cell, image_paths

__all__ = ["class_names", "keys_of", "sample_paths", "take_over_transform", "target_transform"]

_PASS_IT = (
    "Pass the transform to RelabelDataset instead and build the dataset without one: "
    "RelabelDataset(ImageFolder(root), store, train_transform)."
)


def _is_timm_dataset(base: Any) -> bool:
    return type(base).__module__.startswith("timm.data") and hasattr(base, "reader")


def _is_vision_dataset(base: Any) -> bool:
    from torchvision.datasets import VisionDataset

    return isinstance(base, VisionDataset)


def _own_transform(base: Any) -> tuple[Any, bool]:
    """``(transform, takeable)``: the image transform ``base`` applies itself (None if none),
    and whether RelabelDataset can take it over by clearing it on a copy of ``base``."""
    from torchvision.datasets.vision import StandardTransform

    transform = getattr(base, "transform", None)
    joint = getattr(base, "transforms", None)
    # torchvision derives `transforms` from `transform` and `target_transform`; anything else
    # is a joint (image, target) transform, not ours to split.
    if joint is not None and not isinstance(joint, StandardTransform):
        return joint, False
    known = _is_vision_dataset(base) or _is_timm_dataset(base)
    return transform, transform is not None and known


def take_over_transform(base: Any, transform: Any) -> tuple[Any, Any]:
    """``(base, transform)`` with every image transform moved out of ``base``, or a refusal.

    A transform on the base dataset runs before RelabelDataset sees the image, so the crop
    would be invisible (the whole image pooled for every crop) or cropped twice. When only the
    base has one and it is a torchvision or timm dataset, a copy of the base without it is
    returned with that transform; otherwise :class:`ConfigurationError` names the fix.
    """
    if isinstance(base, Subset):
        inner, transform = take_over_transform(base.dataset, transform)
        if inner is not base.dataset:
            base = copy.copy(base)
            base.dataset = inner
        return base, transform
    if isinstance(base, ConcatDataset):
        for part in base.datasets:
            if _own_transform(part)[0] is not None:
                raise ConfigurationError(
                    f"a dataset inside the ConcatDataset ({type(part).__name__}) transforms its "
                    f"own images, so RelabelDataset cannot see the crops. {_PASS_IT}"
                )
        return base, transform
    own, takeable = _own_transform(base)
    if own is None:
        return _without_retries(base), transform
    name = type(base).__name__
    if transform is not None:
        raise ConfigurationError(
            f"the base dataset ({name}) already transforms its images and RelabelDataset got a "
            "transform too: the target would be pooled for the wrong box (a crop of a crop). "
            + _PASS_IT
        )
    if not takeable:
        raise ConfigurationError(
            f"the base dataset ({name}) transforms its images itself ({type(own).__name__}), so "
            f"RelabelDataset cannot see the crop box. {_PASS_IT}"
        )
    from torchvision.datasets.vision import StandardTransform

    base = copy.copy(base)  # never change the user's own object
    base.transform = None
    if isinstance(getattr(base, "transforms", None), StandardTransform):
        base.transforms = StandardTransform(None, base.transforms.target_transform)
    return _without_retries(base), own


def _without_retries(base: Any) -> Any:
    """timm's ImageDataset replaces an unreadable image by the next one; RelabelDataset would
    then pair that image with the skipped sample's target. On a copy, fail instead."""
    if _is_timm_dataset(base) and getattr(base, "_max_retries", 1) != 1:
        base = copy.copy(base)
        base._max_retries = 1
    return base


def target_transform(base: Any) -> Any:
    """The label transform ``base`` (or a dataset inside it) applies, or None."""
    if isinstance(base, Subset):
        return target_transform(base.dataset)
    if isinstance(base, ConcatDataset):
        return next((t for d in base.datasets if (t := target_transform(d)) is not None), None)
    return getattr(base, "target_transform", None)


# -- paths and keys -------------------------------------------------------------------------------


def sample_paths(base: Any) -> tuple[list[str], str | None] | None:
    """``(paths, root)`` of every sample, or None when ``base`` does not say.

    ``root`` is the folder relative paths start from (``key_mode="relpath"``); None when the
    samples of a ConcatDataset have different roots.
    """
    if isinstance(base, Subset):
        inner = sample_paths(base.dataset)
        if inner is None:
            return None
        paths, root = inner
        return [paths[i] for i in base.indices], root
    if isinstance(base, ConcatDataset):
        parts = [sample_paths(d) for d in base.datasets]
        if any(p is None for p in parts):
            return None
        roots = {p[1] for p in parts if p is not None}
        paths = [path for p in parts if p is not None for path in p[0]]
        return paths, roots.pop() if len(roots) == 1 else None
    samples = getattr(base, "samples", None)  # torchvision ImageFolder / DatasetFolder
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple | list):
        return [os.fspath(s[0]) for s in samples], os.fspath(base.root)
    if _is_timm_dataset(base) and callable(getattr(base, "filenames", None)):
        root = getattr(base.reader, "root", None)
        paths = [os.fspath(p) for p in base.filenames(absolute=True)]
        return paths, os.fspath(root) if root is not None else None
    return None


def keys_of(base: Any, key_mode: KeyMode) -> tuple[list[str], list[str]]:
    """Store keys of every sample of ``base`` from its file paths, and the paths."""
    found = sample_paths(base)
    if found is None:
        raise ArgumentTypeError(
            f"cannot find the file paths of {type(base).__name__} to derive store keys; pass "
            "key_fn=lambda index: '<key of sample index>' (keys are file stems such as "
            "'n01440764_10026')"
        )
    paths, root = found
    if key_mode == "relpath" and root is None:
        raise ConfigurationError(
            f"key_mode='relpath' needs one dataset root, and the datasets inside "
            f"{type(base).__name__} have several; pass key_fn=... instead"
        )
    return [key_from_path(p, key_mode, root=root) for p in paths], paths


# -- classes --------------------------------------------------------------------------------------


def class_names(base: Any) -> Sequence[str] | None:
    """The name of each class of ``base`` in label order (folder names, wnids), or None."""
    if isinstance(base, Subset):
        return class_names(base.dataset)
    if isinstance(base, ConcatDataset):
        names = [class_names(d) for d in base.datasets]
        first = names[0] if names else None
        return first if first is not None and all(n == first for n in names) else None
    mapping = getattr(base, "class_to_idx", None)
    if mapping is None and _is_timm_dataset(base):
        mapping = getattr(base.reader, "class_to_idx", None)
    if isinstance(mapping, dict) and mapping:
        by_index = {int(i): str(name) for name, i in mapping.items()}
        if sorted(by_index) == list(range(len(mapping))):
            return [by_index[i] for i in range(len(mapping))]
        return None
    classes = getattr(base, "classes", None)
    if isinstance(classes, list | tuple) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def check_path_key_mode(key_mode: KeyMode) -> None:
    """Refuse a key mode a ``datasets`` dataset cannot derive keys in from its file paths."""
    if key_mode != "stem":
        raise ConfigurationError(
            f"key_mode={key_mode!r} keys files by their path below a dataset root, which a "
            "datasets.Dataset does not have (its images' paths are cache or archive paths); "
            "name a column holding the keys with key_column=..."
        )


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
            return [as_key(k) for k in column], None
        check_path_key_mode(key_mode)
        paths = image_paths(self.data, self.image_column)
        absent = sum(1 for path in paths if not path)
        if absent:
            raise ConfigurationError(
                f"{absent} images of column {self.image_column!r} carry no file path to derive "
                "a store key from; name a column holding the keys with key_column=..."
            )
        files = [str(path) for path in paths]  # every one present
        return [key_from_path(f) for f in files], files


def as_key(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
