"""Iterable pipelines: ReLabel soft targets for samples streamed from tar shards and the like.

WebDataset, litdata, mosaic streaming and a user's own ``IterableDataset`` hand out samples one
at a time, with no index to resolve ahead of time: the key arrives with the sample (WebDataset's
``__key__``). :class:`RelabelStream` is a per-sample function for such pipelines::

    wds.WebDataset(urls).decode("pil").to_tuple("__key__", "jpg", "cls").map(relabel)

It turns ``(key, image[, label])`` into ``(transform(image), target)`` exactly as
:class:`~relabel_store.loaders.RelabelDataset` does for a map-style dataset: the same crop
tracking of the user's transform (validated by a dry run when it is built), the same key
derivation (:func:`relabel_store.format.keys.key_from_path`, in the mode the store was generated with),
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
from typing import TYPE_CHECKING, Any

import numpy as np

from relabel_store.errors import ArgumentTypeError
from relabel_store.format.keys import KeyMode, key_from_path
from relabel_store.format.label_space import ClassMap, match_labels
from relabel_store.loaders._core import (
    ImageCheck,
    ImageChecks,
    KeyTally,
    Missing,
    Pooling,
    SampleSteps,
    dataset_label,
    open_loader,
    require_labels,
    resolve_rows,
)
from relabel_store.loaders.crops import track_crops
from relabel_store.pooling import PoolingSpec
from relabel_store.read.reader import RelabelStore

if TYPE_CHECKING:
    from relabel_store.loaders.maps import DeviceMaps

__all__ = ["RelabelStream"]


class RelabelStream:
    """``(key, image[, label]) -> (transform(image), soft_target)`` for iterable pipelines.

    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes.
    - ``transform``: the user's own image transform (torchvision v2 / v1, timm, or a
      :class:`~relabel_store.loaders.ReturnsCropBox`); its crop box and flip are recovered.
      It is validated by a dry run now, on ``sample`` (one of the pipeline's images) or on a
      synthetic photo-sized image; :attr:`transform` shows it, read-only.
    - ``key_mode``: how a sample's key becomes a store key, ``"stem"`` (its last path
      component: WebDataset's ``__key__`` ``train/n01440764_10026`` gives ``n01440764_10026``)
      or ``"relpath"`` (the whole key); default: the mode the store was generated with.
      ``key_fn(key) -> store key`` replaces that derivation.
    - ``spec``, ``missing``, ``pooling``: as for
      :class:`~relabel_store.loaders.RelabelDataset`. ``missing="error"`` raises
      :class:`~relabel_store.errors.RecordNotFoundError` for the first sample without a
      record; ``"original"`` gives it the one-hot of its label, but refuses a stream whose
      first 1,000 keys are all absent from the store (a wrong store or key derivation).
    - ``class_names`` (the name of each label, in label order: ImageNet wnids, folder names)
      or ``class_map``: how the stream's labels index the store's classes; needed only when
      labels are mixed in (``missing="original"``, ``spec.original_weight``).
    - ``maps``: the store's maps in host memory (:class:`~relabel_store.loaders.DeviceMaps`),
      to copy records from instead of decoding them, as for ``RelabelDataset``.
    - ``check_sizes``: as for ``RelabelDataset`` (True: refuse an image not its record's).
    - ``check_images``: as for ``RelabelDataset`` (``"sample"``: the first 16 samples of every
      worker, then one in 1000; ``"all"``, ``"off"``, or a rate in (0, 1]).
    - ``check_crops``: as for ``RelabelDataset`` (True: confirm the first samples of every
      worker from their pixels).

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
        pooling: Pooling = "sample",
        class_names: Sequence[str] | None = None,
        class_map: ClassMap | None = None,
        sample: Any = None,
        maps: DeviceMaps | None = None,
        check_sizes: bool = True,
        check_images: ImageChecks = "sample",
        check_crops: bool | int = True,
    ) -> None:
        opened = open_loader(
            store,
            spec=spec,
            missing=missing,
            pooling=pooling,
            maps=maps,
            key_fn=key_fn,
            key_fn_is="key -> store key",
            key_mode=key_mode,
            other_keys="key_fn=key -> store key",
            check_sizes=check_sizes,
            check_images=check_images,
        )
        self.steps = SampleSteps(opened, pooling)
        self.store, self.spec, self.maps = opened.store, opened.spec, opened.maps
        self.missing: Missing = missing
        self.pooling: Pooling = pooling
        self.num_classes = self.store.metadata.num_classes
        self.key_mode = opened.key_mode
        self.key_fn = key_fn
        self._keys_from = opened.keys_from
        self._tally = KeyTally()
        self.label_map = match_labels(
            self.store.metadata,
            class_names,
            class_map,
            dataset="the stream",
            unnamed="the names of the stream's classes were not given (class_names=...)",
        )
        require_labels(self.label_map, self.spec, missing, None)
        self.steps.track = track_crops(transform, sample=sample, check_crops=check_crops)
        self._transform = transform

    @property
    def track(self) -> Any:
        """The tracker of the transform's crops (:func:`~relabel_store.loaders.track_crops`)."""
        return self.steps.track

    @property
    def image_check(self) -> ImageCheck:
        """The content check of the stream's images (:class:`~._core.ImageCheck`)."""
        return self.steps.image_check

    @property
    def transform(self) -> Any:
        """The image transform (read-only: its crops are tracked as validated at construction;
        for another transform, build another RelabelStream)."""
        return self._transform

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

    def rows(self, keys: Iterable[str | bytes], *, whole: bool = False) -> np.ndarray:
        """Store rows of sample keys, vectorised: -1 where there is no record (allowed with
        ``missing="original"``; with ``"error"``, a :class:`RecordNotFoundError` naming the
        first missing keys). ``whole``: the keys are the whole stream's, so none of them in the
        store is refused even with ``missing="original"``."""
        return self._resolve(keys, whole)[0]

    def _resolve(self, keys: Iterable[str | bytes], whole: bool) -> tuple[np.ndarray, list[str]]:
        """:meth:`rows`, and the store keys the sample keys became."""
        raw = [k.decode() if isinstance(k, bytes) else k for k in keys]
        # Without key_fn, keys are file names: retry missing ones in their legacy form.
        paths = raw if self.key_fn is None else None
        store_keys = [self.store_key(k) for k in raw]
        rows = resolve_rows(
            self.store, store_keys, self.missing, self._keys_from, paths, whole=whole
        )
        return rows, store_keys

    def check_keys(self, keys: Iterable[str | bytes]) -> int:
        """Check a whole stream's keys before training (any iterable of ``__key__`` values,
        such as a listing of the shards): the number of keys without a record, or
        :class:`RecordNotFoundError` for them with ``missing="error"``."""
        return int((self.rows(keys, whole=True) < 0).sum())

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
        keys = [key]
        rows, store_keys = self._resolve(keys, whole=False)
        self._tally.add(self.store, rows, store_keys, self._keys_from)
        self.steps.check(rows, [image], keys)
        image, box = self.steps.transform(image)
        (target,) = self.steps.targets(rows, [box], self.label_map.to_store(np.array([label])))
        return image, target
