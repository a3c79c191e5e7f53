"""PyTorch: wrap any map-style image dataset so it returns ReLabel soft targets.

``RelabelDataset(base, store, transform)`` keeps the user's dataset and transform. For each sample
it applies the transform, recovers the crop box and flip (see :mod:`.crops`), reads the record
and pools it into a soft target. Everything that can be checked is checked at construction, not
in the middle of an epoch: keys are resolved by binary search of the store's sorted keys (a
missing key fails then), the transform is validated by a dry run, a transform on the base
dataset is taken over or refused, and the dataset's classes are matched with the store's before
any label is mixed into a target.

With ``pooling="batch"`` the dataset returns a small reference instead of the target, and a
:class:`LabelPooler` turns a collated batch of references into targets in the training process,
on the GPU if you like, with one batched read and one scatter-add.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.format.keys import KeyMode
from relabel_store.format.label_space import ClassMap, match_labels
from relabel_store.loaders import _bases
from relabel_store.loaders._core import (
    ImageChecks,
    Missing,
    Pooling,
    SampleSteps,
    check_sources,
    check_unique_keys,
    dataset_label,
    open_loader,
    pool_rows,
    require_labels,
    resolve_rows,
)
from relabel_store.loaders.crops import track_crops
from relabel_store.loaders.mixing import check_collate_once, collate_of_caller
from relabel_store.pooling import CropBox, PoolingSpec, Region
from relabel_store.read.reader import RelabelStore

if TYPE_CHECKING:
    from relabel_store.loaders.maps import DeviceMaps

__all__ = ["RelabelDataset"]


class RelabelDataset(Dataset):
    """``base[i] -> (image, label)`` becomes ``(transform(image), soft_target)``.

    - ``base``: a map-style dataset of ``(image, label)`` (torchvision ``ImageFolder``, timm
      ``ImageDataset``, a ``Subset``/``ConcatDataset`` of them, ...) or a Hugging Face
      ``datasets.Dataset`` (read through ``image_column``/``label_column``/``key_column``). A
      transform the base applies itself is taken over (torchvision, timm) or refused.
    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes.
    - ``transform``: the user's own image transform (torchvision v2 / v1, timm, or a
      :class:`~relabel_store.loaders.ReturnsCropBox`); its crop box and flip are recovered. It
      may be replaced later (``dataset.transform = ...``, as timm's ``create_loader`` does);
      every transform is validated by a dry run when it is set.
    - ``key_fn(index) -> key``: overrides keys derived from the base dataset's file paths;
      ``key_mode``: how keys come from paths, ``"stem"`` or ``"relpath"`` (default: the mode
      the store was generated with).
    - ``spec``: pooling variant, output grid and original-label mixing (:class:`PoolingSpec`).
    - ``missing``: ``"error"`` (default) refuses samples without a record at construction;
      ``"original"`` gives them the one-hot of the dataset's label instead (a dataset none of
      whose keys is in the store is refused all the same: a wrong store or key derivation).
      Stores generated with ``--key-column`` need ``key_fn`` (or ``key_column`` for a
      ``datasets.Dataset`` base).
    - ``class_map``: which store class each dataset label is, when the dataset's class names
      do not match the store's class identifiers (see :mod:`relabel_store.format.label_space`); only needed when
      labels are mixed in (``missing="original"``, ``spec.original_weight``).
    - ``pooling``: ``"sample"`` pools in the DataLoader worker and returns a (C,) float32
      target; ``"batch"`` returns a reference dict for :class:`LabelPooler`.
    - ``maps``: the store's maps in host memory (``DeviceMaps.load(store)``, before the
      workers start: forked workers share them): workers copy records out of them instead of
      decoding them from the store.
    - ``check_sizes``: True (default) refuses an image whose shape is not its record's image
      (another image, a center crop, an EXIF turn); False only for images that are their
      records' whole images squashed to another aspect ratio (downsampled ImageNet 64x64).
    - ``check_images``: compare images with their records by content (the store's image
      signatures), before the transform: ``"sample"`` (default: 8 samples when the dataset is
      built, the first 16 of every worker, then one in 1000), ``"all"``, ``"off"``, or a rate
      in (0, 1]. Another photo, an EXIF turn, a crop made before the library or a wrong key
      function is an :class:`~relabel_store.errors.ImageMismatchError`. See
      :class:`~relabel_store.loaders._core.ImageCheck`.
    - ``check_crops``: True (default) confirms the first samples of every worker from their
      pixels: each tracked step's image must show the source image under the box tracked
      so far (a step the tracker misreads is refused by name; ~1-3 ms a sample, 8 samples a
      worker); an int sets how many samples, False turns it off.

    Every image is checked against the size its record was made from (another shape: a
    :class:`~relabel_store.errors.ConfigurationError`). ``label_map`` holds how the dataset's
    labels index the store's classes (``table``: the store class id of each dataset label, -1
    for none).
    """

    def __init__(
        self,
        base: Any,
        store: RelabelStore | str | os.PathLike[str],
        transform: Any = None,
        *,
        key_fn: Callable[[int], str] | None = None,
        key_mode: KeyMode | None = None,
        spec: PoolingSpec | None = None,
        missing: Missing = "error",
        pooling: Pooling = "sample",
        class_map: ClassMap | None = None,
        image_column: str = "image",
        label_column: str | None = "label",
        key_column: str | None = None,
        maps: DeviceMaps | None = None,
        check_sizes: bool = True,
        check_images: ImageChecks = "sample",
        check_crops: bool | int = True,
    ) -> None:
        self.check_crops = check_crops
        opened = open_loader(
            store,
            spec=spec,
            missing=missing,
            pooling=pooling,
            maps=maps,
            key_fn=key_fn,
            key_mode=key_mode,
            key_column=key_column,
            other_keys="key_fn=index -> key, or key_column= for a datasets.Dataset base",
            check_sizes=check_sizes,
            check_images=check_images,
        )
        self.steps = SampleSteps(opened, pooling)
        self.store, self.spec, self.maps = opened.store, opened.spec, opened.maps
        self.pooling: Pooling = pooling
        self.num_classes = self.store.metadata.num_classes
        base = _check_base(base, image_column, label_column, key_column)
        base, transform = _bases.take_over_transform(base, transform)
        self.base = base
        keys, paths = self._keys(key_fn, opened.key_mode)
        check_unique_keys(keys, paths, opened.key_mode)
        self.rows = resolve_rows(self.store, keys, missing, opened.keys_from, paths)
        self.label_map = match_labels(
            self.store.metadata,
            _bases.class_names(base),
            class_map,
            dataset=f"the base dataset ({type(base).__name__})",
        )
        self._check_labels(missing, class_map)
        check_sources(self.steps.image_check, self.rows, lambda i: self.base[i][0], self._key_of)
        self.transform = transform
        self._collate_checked: int | None = None  # the process that checked a collate_fn

    def _keys(
        self, key_fn: Callable[[int], str] | None, key_mode: KeyMode
    ) -> tuple[list[str], list[str] | None]:
        if key_fn is not None:
            return [key_fn(i) for i in range(len(self.base))], None
        from relabel_store.loaders._bases import DatasetRows

        if isinstance(self.base, DatasetRows):
            return self.base.keys(key_mode)
        return _bases.keys_of(self.base, key_mode)

    def _check_labels(self, missing: Missing, class_map: ClassMap | None) -> None:
        """Refuse now whatever would mix a dataset label into a target at the wrong class."""
        uses = require_labels(self.label_map, self.spec, missing, int((self.rows < 0).sum()))
        if not uses:
            return
        if class_map is None and _bases.target_transform(self.base) is not None:
            raise ConfigurationError(
                f"{uses} mixes in the dataset's labels, and the base dataset "
                "changes them with a target_transform, so they cannot be matched with the "
                "store's classes by name. Remove the target_transform, or pass class_map= for "
                "the labels it produces."
            )

    # -- the transform ----------------------------------------------------------------------------

    @property
    def transform(self) -> Any:
        """The image transform; assigning one validates it and tracks its crops from then on."""
        return self._transform

    @transform.setter
    def transform(self, transform: Any) -> None:
        replacing = "_transform" in self.__dict__
        if replacing and transform is None:
            raise ConfigurationError(
                "RelabelDataset.transform was set to None after construction. timm's "
                "create_loader(input_size_choices=...) does that and then applies its "
                "transforms outside RelabelDataset, where the crop box cannot be tracked: "
                "scheduled input sizes are not supported (remove input_size_choices). To train "
                "on untransformed images, build RelabelDataset(..., transform=None)."
            )
        track = track_crops(transform, sample=self._sample_image(), check_crops=self.check_crops)
        self._check_collation(transform)
        self.steps.track = track
        self._transform = transform

    @property
    def track(self) -> Any:
        """The tracker of the transform's crops (:func:`~relabel_store.loaders.track_crops`)."""
        return self.steps.track

    def _sample_image(self) -> Any:
        """The first sample's image, untransformed: what the dry run feeds the transform."""
        if len(self.base) == 0:
            return None
        return self.base[0][0]

    def _check_collation(self, transform: Any) -> None:
        """timm's create_loader(use_prefetcher=True) collates with fast_collate and moves
        targets with PrefetchLoader: refuse what they cannot carry, naming the flag."""
        steps = list(transform) if isinstance(transform, tuple | list) else [transform]
        last = _last_step(steps[-1]) if steps else None
        if last is None or not (
            type(last).__module__.startswith("timm.data")
            and type(last).__name__ in ("MaybePILToTensor", "ToNumpy")
        ):
            return
        if self.pooling == "batch":
            raise ConfigurationError(
                "this is timm's prefetcher pipeline (create_loader(use_prefetcher=True), the "
                "default), whose PrefetchLoader moves targets as tensors; pooling='batch' "
                "returns reference dicts. Pass use_prefetcher=False to create_loader, or use "
                "pooling='sample'."
            )
        from timm.data.loader import fast_collate

        shape = (*(() if self.spec.grid == (1, 1) else self.spec.grid), self.num_classes)
        soft = torch.full(shape, 1.0 / self.num_classes)
        image = torch.zeros(3, 2, 2, dtype=torch.uint8)
        try:
            targets = fast_collate([(image, soft), (image, soft)])[1]
            carried = targets.shape == (2, *shape) and targets.is_floating_point()
        except Exception:
            carried = False
        if not carried:
            raise ConfigurationError(
                "this timm version's fast_collate (create_loader(use_prefetcher=True), the "
                "default) turns targets into class indices, which would destroy soft targets. "
                "Pass use_prefetcher=False to create_loader, or upgrade timm."
            )

    # -- samples ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.base)

    def _store_label(self, value: Any) -> int:
        return int(self.label_map.to_store(np.array([dataset_label(value)]))[0])

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        """A whole batch (DataLoader calls this when it exists): images first, then every
        record in one read, pooled one after another, which keeps the pooling code hot in the
        CPU's caches instead of interleaving it with image decoding. The targets are those
        ``dataset[i]`` gives, bit for bit."""
        if self.pooling == "batch":
            return [self[i] for i in indices]
        read_many = getattr(self.base, "__getitems__", None)
        # One image at a time, decoded and then transformed while it is still in the CPU's
        # caches (decoding a whole batch first made every transform read from memory).
        samples = read_many(indices) if read_many else (self.base[i] for i in indices)
        rows = self.rows[indices]
        images, boxes, labels = [], [], []
        for j, sample in enumerate(samples):
            self.steps.check(rows[j : j + 1], [sample[0]], self._name_of(rows[j : j + 1]))
            image, box = self.steps.transform(sample[0])
            images.append(image)
            boxes.append(box)
            labels.append(dataset_label(sample[1]))
        targets = self.steps.targets(rows, boxes, self.label_map.to_store(np.asarray(labels)))
        if images and isinstance(targets, torch.Tensor):
            self._check_collate(images[0], targets[0], every_batch=True)
        return list(zip(images, targets, strict=True))

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, label = self.base[index][:2]
        rows = self.rows[index : index + 1]
        self.steps.check(rows, [image], self._name_of(rows))
        image, box = self.steps.transform(image)
        targets = self.steps.targets(rows, [box], np.array([self._store_label(label)]))
        if not isinstance(targets, torch.Tensor):  # pooling="batch": a reference
            return image, targets[0]
        self._check_collate(image, targets[0], every_batch=False)
        return image, targets[0]

    def _check_collate(self, image: Any, target: torch.Tensor, *, every_batch: bool) -> None:
        """On the first batch a DataLoader builds in this process with a given collate_fn:
        refuse a collate_fn that would destroy the soft targets (timm's FastCollateMixup, the
        collate of its train.py with the prefetcher, makes every target class 0), by collating
        a probe batch with it (:func:`~.mixing.check_collate`).

        Finding the collate_fn walks a few stack frames: on every batch from ``__getitems__``
        (a few µs a batch), but from ``__getitem__`` (one sample at a time: a wrapping
        dataset's, or batch_size=None) only until one was checked in this process."""
        pid = os.getpid()
        if not every_batch and getattr(self, "_collate_checked", None) == pid:
            return
        collate = collate_of_caller()
        if collate is None:
            return
        if collate is not torch.utils.data.default_collate:
            check_collate_once(collate, image, target)
        self._collate_checked = pid

    def _key_of(self, index: int) -> str | None:
        row = int(self.rows[index])
        return self.store.keys[row].decode() if row >= 0 else None

    def _name_of(self, rows: np.ndarray) -> Callable[[int], str]:
        """The keys of store ``rows``, for messages about their images."""
        return lambda j: self.store.keys[int(rows[j])].decode()

    def target(self, row: int, box: CropBox | Region, label: int) -> np.ndarray:
        """The soft target of store row ``row`` (or the one-hot of ``label``, a store class id,
        when row is -1)."""
        return pool_rows(
            self.store, np.array([row]), [box], np.array([label]), spec=self.spec, maps=self.maps
        )[0].numpy()


def _check_base(base: Any, image_column: str, label_column: str | None, key_column: Any) -> Any:
    """The base dataset, read through :class:`~.hf.DatasetRows` when it is a ``datasets`` one;
    an :class:`ArgumentTypeError` for what cannot be a map-style image dataset."""
    if base is None or isinstance(base, str | bytes | os.PathLike):
        hint = " (build one first, e.g. ImageFolder(path))" if base is not None else ""
        raise ArgumentTypeError(
            "base must be a map-style dataset of (image, label) samples: torchvision "
            "ImageFolder, timm ImageDataset, a datasets.Dataset, ...; got "
            f"{type(base).__name__}{hint}"
        )
    module = type(base).__module__
    if module.startswith("datasets."):
        import datasets

        if isinstance(base, datasets.Dataset):
            from relabel_store.loaders._bases import DatasetRows

            return DatasetRows(base, image_column, label_column, key_column)
    if isinstance(base, torch.utils.data.IterableDataset) or module.startswith("datasets."):
        raise ArgumentTypeError(
            f"RelabelDataset needs a map-style dataset (len and indexing), got "
            f"{type(base).__name__}. For a streaming datasets.IterableDataset, use "
            "ids.map(relabel_transform(store, transform), batched=True)."
        )
    if not (hasattr(base, "__getitem__") and hasattr(base, "__len__")):
        raise ArgumentTypeError(
            f"base must be a map-style dataset (len and indexing), got {type(base).__name__}"
        )
    return base


def _last_step(transform: Any) -> Any:
    inner = getattr(transform, "transforms", None)
    if type(transform).__name__ == "Compose" and inner:
        return _last_step(inner[-1])
    return transform
