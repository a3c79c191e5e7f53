"""Poolers: targets for a collated batch of references, pooled in the training step.

``pooling="batch"`` loaders return a row, a box and a flip per sample, so DataLoader workers do no
label work. :class:`LabelPooler` reads the batch's records in one call and pools them with
:class:`~relabel_store.pooling.batched.BatchPooler`; :class:`ResidentPooler` gathers them from
:class:`~relabel_store.loaders.DeviceMaps` already on the device instead (no store read, no
host-to-device copy of maps): same references in, same targets out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from relabel_store.errors import ArgumentTypeError
from relabel_store.loaders._core import one_hot
from relabel_store.loaders.maps import DeviceMaps, widen_ids
from relabel_store.pooling import PoolingSpec
from relabel_store.pooling.batched import BatchPooler
from relabel_store.read.api import load_relabel
from relabel_store.read.reader import RelabelStore

__all__ = ["LabelPooler", "ResidentPooler"]

# Leave this much of a device's free memory to the model and its activations when checking.
_HEADROOM = 0.9


def _is_loader(source: Any) -> bool:
    """Whether ``source`` is a loader (RelabelDataset, RelabelStream, ...): a store, a pooling
    spec and the match of its labels with the store's classes."""
    return (
        isinstance(getattr(source, "store", None), RelabelStore)
        and isinstance(getattr(source, "spec", None), PoolingSpec)
        and hasattr(source, "label_map")
    )


class LabelPooler(torch.nn.Module):
    """Targets for a collated batch of ``pooling="batch"`` references.

    Reads the batch's records in one call and pools them with :class:`BatchPooler` on
    ``device``: ``targets = pooler(refs)`` right after ``images, refs = next(loader)``.
    ``source`` is the loader that made the references (a :class:`RelabelDataset` or a
    :class:`~relabel_store.loaders.RelabelStream`: its store and spec are used, and its labels
    are checked against the store's classes when ``spec`` mixes them in) or a store.
    """

    def __init__(
        self,
        source: Any,
        spec: PoolingSpec | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if spec is not None and not isinstance(spec, PoolingSpec):
            raise ArgumentTypeError(f"spec must be a PoolingSpec, got {type(spec).__name__}")
        if _is_loader(source):
            self.store = source.store
            self.spec = spec or source.spec
            if self.spec.original_weight > 0:
                source.label_map.require(
                    f"PoolingSpec(original_weight={self.spec.original_weight})"
                )
        else:
            self.store = load_relabel(source)
            self.spec = spec or PoolingSpec()
        self.num_classes = self.store.metadata.num_classes
        self.pooler = BatchPooler(self.num_classes, self.spec, validate=False)  # see _check
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def forward(self, refs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Targets (B, C) (or (B, oh, ow, C)) on ``device`` for collated references ``refs``:
        ``row`` (B,) store rows (-1: the one-hot of ``label``), ``box`` (B, 4) normalised
        boxes and ``flipped`` (B,), or ``region`` (B, 3, 3) region matrices (pipelines that
        rotate or shear), ``label`` (B,) store class ids (-1: unknown), on the CPU."""
        rows = np.asarray(refs["row"]).astype(np.int64, copy=False)
        labels = torch.as_tensor(refs["label"]).to(torch.int64)
        device, pinned = self.device, self.device.type == "cuda"
        if "region" in refs:
            regions = torch.as_tensor(refs["region"]).to(torch.float64)
            self.pooler.check(None, labels)  # regions: BatchPooler checks them on the host
            indices, values = self._records(rows)
            out = self.pooler(
                indices,
                values,
                labels=labels.to(device, non_blocking=pinned),
                regions=regions,
            )
        else:
            boxes = torch.as_tensor(refs["box"]).to(torch.float64)
            self._check(boxes, labels)
            indices, values = self._records(rows)
            out = self.pooler(
                indices,
                values,
                boxes.to(device, non_blocking=pinned),
                torch.as_tensor(refs["flipped"]).to(device, non_blocking=pinned),
                labels.to(device, non_blocking=pinned),
            )
        for i in np.flatnonzero(rows < 0).tolist():
            label = int(labels[i])
            out[i] = torch.from_numpy(one_hot(label, self.num_classes, self.spec)).to(out)
        return out

    def _check(self, boxes: torch.Tensor, labels: torch.Tensor) -> None:
        """Check boxes and labels here, on the CPU: the pooler runs without checks, since
        reading a verdict back from a GPU would stall the training step."""
        self.pooler.check(boxes, labels)

    def _records(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The records of ``rows`` on ``device`` (zeros for -1), read in one call."""
        present = rows >= 0
        h, w = self.store.metadata.grid
        k = self.store.metadata.k
        pinned = self.device.type == "cuda"
        shape = (len(rows), h, w, k)
        stored = getattr(torch, self.store.metadata.values_dtype)  # float16, or float32
        indices = torch.zeros(shape, dtype=torch.int16, pin_memory=pinned)
        values = torch.zeros(shape, dtype=stored, pin_memory=pinned)
        if present.any():
            batch = self.store.get_rows(rows[present])
            idx, val = indices.numpy(), values.numpy()
            idx[present] = batch.indices.view(np.int16)  # the same bits; widened on the device
            val[present] = batch.values
        return (
            widen_ids(indices.to(self.device, non_blocking=pinned), self.num_classes),
            values.to(self.device, non_blocking=pinned),
        )


class ResidentPooler(LabelPooler):
    """A :class:`~relabel_store.loaders.LabelPooler` whose maps live on a device.

    ``pooler = ResidentPooler(dataset, device="cuda")`` loads every map of the dataset's store
    onto the GPU once (:meth:`DeviceMaps.load`); ``targets = pooler(refs)`` then gathers the
    batch's maps there and pools them, the same numbers as ``LabelPooler`` and per-sample
    pooling. ``maps`` reuses maps already loaded (they must be this store's); ``dtype`` and
    ``pin_memory`` go to :meth:`DeviceMaps.load` (``maps_device="cpu", pin_memory=True``
    keeps them in host memory and pools on ``device``).
    """

    def __init__(
        self,
        source: Any,
        spec: PoolingSpec | None = None,
        device: torch.device | str | None = None,
        *,
        maps: DeviceMaps | None = None,
        maps_device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(source, spec, device)
        if maps is None:
            where = maps_device if maps_device is not None else self.device
            maps = DeviceMaps.load(self.store, where, dtype=dtype, pin_memory=pin_memory)
        elif not isinstance(maps, DeviceMaps):
            raise ArgumentTypeError(f"maps must be DeviceMaps, got {type(maps).__name__}")
        else:
            maps.check_store(self.store)
        self.maps = maps

    def _records(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maps.gather(torch.from_numpy(rows), self.device)
