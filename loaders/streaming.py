"""Iterable pipelines: ReLabel soft targets for samples streamed from tar shards and the like.

WebDataset, litdata, mosaic streaming and a user's own ``IterableDataset`` hand out samples one
at a time, with no index to resolve ahead of time: the key arrives with the sample (WebDataset's
``__key__``). :class:`RelabelStream` is a per-sample function for such pipelines::

    wds.WebDataset(urls).decode("pil").to_tuple("__key__", "jpg", "cls").map(relabel)

It turns ``(key, image[, label])`` into ``(transform(image), target)`` exactly as
:class:`~relabel_store.loaders.RelabelDataset` does for a map-style dataset: the same crop
tracking of the user's transform (validated by a dry run when it is built), the same key
derivation (:func:`relabel_store.keys.key_from_path`, in the mode the store was generated with),
the same class matching before any label is mixed in, the same ``missing`` policy and pooling,
and the same references for :class:`~relabel_store.loaders.LabelPooler` with
``pooling="batch"``.

What only a stream can get wrong is checked per sample: a key without a record (with
``missing="error"`` the sample raises :class:`~relabel_store.errors.RecordNotFoundError`
naming the key; :meth:`RelabelStream.check_keys` checks a shard list's keys ahead of the
epoch), and an image that is not the whole image its record was made from (shards written from
center-cropped images), which would give every crop the wrong box.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.keys import KeyMode, check_key_mode, key_from_path
from relabel_store.loaders._classes import ClassMap, match_labels
from relabel_store.loaders._samples import (
    check_image_sizes,
    check_maps,
    dataset_label,
    reference,
    sample_target,
)
from relabel_store.loaders.crops import image_size, track_crops
from relabel_store.loaders.pytorch import Missing, open_store, resolve_rows
from relabel_store.pooling import PoolingSpec
from relabel_store.reader import RelabelStore

if TYPE_CHECKING:
    from relabel_store.loaders.resident import DeviceMaps

__all__ = ["RelabelStream"]


class RelabelStream:
    """``(key, image[, label]) -> (transform(image), soft_target)`` for iterable pipelines.

    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes.
    - ``transform``: the user's own image transform (torchvision v2 / v1, timm, or a
      :class:`~relabel_store.loaders.ReturnsCropBox`); its crop box and flip are recovered.
      It is validated by a dry run now, on ``sample`` (one of the pipeline's images) or on a
      synthetic photo-sized image.
    - ``key_mode``: how a sample's key becomes a store key, ``"stem"`` (its last path
      component: WebDataset's ``__key__`` ``train/n01440764_10026`` gives ``n01440764_10026``)
      or ``"relpath"`` (the whole key); default: the mode the store was generated with.
      ``key_fn(key) -> store key`` replaces that derivation.
    - ``spec``, ``missing``, ``pooling``: as for
      :class:`~relabel_store.loaders.RelabelDataset`. ``missing="error"`` raises
      :class:`~relabel_store.errors.RecordNotFoundError` for the first sample without a
      record; ``"original"`` gives it the one-hot of its label.
    - ``class_names`` (the name of each label, in label order: ImageNet wnids, folder names)
      or ``class_map``: how the stream's labels index the store's classes; needed only when
      labels are mixed in (``missing="original"``, ``spec.original_weight``).
    - ``maps``: the store's maps in host memory (:class:`~relabel_store.loaders.DeviceMaps`),
      to copy records from instead of decoding them, as for ``RelabelDataset``.

    A sample is a tuple ``(key, image)`` or ``(key, image, label)``, the image a PIL image or
    a tensor as the pipeline decoded it, whole (resized with its aspect ratio kept is fine);
    the label an int (-1 or None: unknown). The result is ``(image, target)`` with a float32
    tensor target, or ``(image, reference)`` with ``pooling="batch"``.
    """

    def __init__(
        self,
        store: RelabelStore | str | os.PathLike[str],
        transform: Any = None,
        *,
        key_mode: KeyMode | None = None,
        key_fn: Callable[[str], str] | None = None,
        spec: PoolingSpec | None = None,
        missing: Missing = "error",
        pooling: Literal["sample", "batch"] = "sample",
        class_names: Sequence[str] | None = None,
        class_map: ClassMap | None = None,
        sample: Any = None,
        maps: DeviceMaps | None = None,
    ) -> None:
        if missing not in ("error", "original"):
            raise ConfigurationError(f"missing must be 'error' or 'original', got {missing!r}")
        if pooling not in ("sample", "batch"):
            raise ConfigurationError(f"pooling must be 'sample' or 'batch', got {pooling!r}")
        if spec is not None and not isinstance(spec, PoolingSpec):
            raise ArgumentTypeError(f"spec must be a PoolingSpec, got {type(spec).__name__}")
        if key_fn is not None and not callable(key_fn):
            raise ArgumentTypeError(
                f"key_fn must be a function key -> store key, got {type(key_fn).__name__}"
            )
        self.store = open_store(store)
        self.maps = check_maps(maps, self.store)
        self.spec = spec or PoolingSpec()
        self.missing: Missing = missing
        self.pooling = pooling
        self.num_classes = self.store.metadata.num_classes
        recorded = self.store.metadata.dataset.get("key_mode") or "stem"
        self.key_mode = check_key_mode(key_mode if key_mode is not None else recorded)
        self.key_fn = key_fn
        self.label_map = match_labels(
            self.store.metadata,
            class_names,
            class_map,
            dataset="the stream",
            unnamed="the names of the stream's classes were not given (class_names=...)",
        )
        uses = []
        if self.spec.original_weight > 0:
            uses.append(f"PoolingSpec(original_weight={self.spec.original_weight})")
        if missing == "original":
            uses.append("missing='original'")
        if uses:
            self.label_map.require(" and ".join(uses))
        if transform is not None and not callable(transform) and not isinstance(transform, tuple):
            raise ArgumentTypeError(
                f"transform must be callable (an image transform), got {type(transform).__name__}"
            )
        self.transform = transform
        self.track = track_crops(transform, sample=sample)

    def __repr__(self) -> str:
        return (
            f"RelabelStream({self.store!r}, key_mode={self.key_mode!r}, spec={self.spec}, "
            f"missing={self.missing!r}, pooling={self.pooling!r})"
        )

    def store_key(self, key: str | bytes) -> str:
        """The store key of a sample's key (``key_fn``, or the key mode's derivation)."""
        if isinstance(key, bytes):
            key = key.decode()
        if not isinstance(key, str):
            raise ArgumentTypeError(
                f"a sample's key must be a string (WebDataset's '__key__'), got "
                f"{type(key).__name__}; samples are (key, image) or (key, image, label) tuples"
            )
        return self.key_fn(key) if self.key_fn is not None else key_from_path(key, self.key_mode)

    def rows(self, keys: Iterable[str | bytes]) -> np.ndarray:
        """Store rows of sample keys, vectorised: -1 where there is no record (allowed with
        ``missing="original"``; with ``"error"``, a :class:`RecordNotFoundError` naming the
        first missing keys)."""
        raw = [k.decode() if isinstance(k, bytes) else k for k in keys]
        # Without key_fn, keys are file names: retry missing ones in their legacy form.
        paths = raw if self.key_fn is None else None
        return resolve_rows(self.store, [self.store_key(k) for k in raw], self.missing, paths)

    def check_keys(self, keys: Iterable[str | bytes]) -> int:
        """Check a whole stream's keys before training (any iterable of ``__key__`` values,
        such as a listing of the shards): the number of keys without a record, or
        :class:`RecordNotFoundError` for them with ``missing="error"``."""
        return int((self.rows(keys) < 0).sum())

    def __call__(self, sample: Sequence[Any]) -> tuple[Any, Any]:
        if not isinstance(sample, tuple | list) or len(sample) not in (2, 3):
            raise ArgumentTypeError(
                f"RelabelStream takes (key, image) or (key, image, label) samples, got "
                f"{type(sample).__name__}"
                + (f" of {len(sample)} items" if isinstance(sample, tuple | list) else "")
                + "; with WebDataset, .to_tuple('__key__', 'jpg', 'cls') before .map(...)"
            )
        key, image = sample[0], sample[1]
        label = dataset_label(sample[2]) if len(sample) == 3 else -1
        row = int(self.rows([key])[0])
        if row >= 0:
            check_image_sizes(self.store, np.array([row]), np.array([image_size(image)]), [key])
        store_label = int(self.label_map.to_store(np.array([label]))[0])
        image, box = self.track(image)
        if self.pooling == "batch":
            return image, reference(row, box, store_label)
        return image, torch.from_numpy(
            sample_target(self.store, row, box, store_label, self.spec, self.maps)
        )
