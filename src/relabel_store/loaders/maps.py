"""Label maps held in memory on one device: a whole store's maps as two tensors.

A whole store fits on one GPU: ImageNet's 1,281,167 maps of 15 x 15 x 5 class ids (uint16) and
logits (float16) are 5.8 GB. :class:`DeviceMaps` loads them shard by shard (one shard's records in
host memory at a time), after checking that the device has room. CPU memory works as the
"device" too, pinned for fast copies of a gathered batch to a GPU. Loaders pool from them
(``maps=``) and :class:`~relabel_store.loaders.ResidentPooler` gathers from them in the step.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from relabel_store.errors import ArgumentTypeError, ConfigurationError, InsufficientMemoryError
from relabel_store.read.api import load_relabel
from relabel_store.read.reader import RelabelStore

__all__ = ["DeviceMaps", "widen_ids"]

# Leave this much of a device's free memory to the model and its activations when checking.
_HEADROOM = 0.9


class DeviceMaps:
    """Every record's label map of one store, as two tensors on one device.

    ``indices`` (N, H, W, K) holds the class ids (int16 tensors holding the stored uint16 bit
    patterns), ``values`` (N, H, W, K) the logits (as stored, or as :meth:`load` was told); row ``i`` is
    the store's row ``i`` in key order (what loaders' references carry). Build with
    :meth:`load`.
    """

    def __init__(self, store: RelabelStore, indices: torch.Tensor, values: torch.Tensor) -> None:
        expected = (len(store), *store.metadata.grid, store.metadata.k)
        if tuple(indices.shape) != expected or tuple(values.shape) != expected:
            raise ConfigurationError(
                f"maps of shape {tuple(indices.shape)} / {tuple(values.shape)} do not fit store "
                f"{store.source.location} ({expected}); build them with DeviceMaps.load(store)"
            )
        self.store = store
        self.indices = indices
        self.values = values
        self.digest = store.manifest.digest if store.manifest is not None else None

    @classmethod
    def load(
        cls,
        store: RelabelStore | str | os.PathLike[str],
        device: torch.device | str = "cpu",
        *,
        dtype: torch.dtype | None = None,
        pin_memory: bool = False,
        check_memory: bool = True,
    ) -> DeviceMaps:
        """Read every map of ``store`` onto ``device``, one shard file at a time.

        ``dtype`` is the logits' dtype on the device: ``torch.float16`` or ``torch.float32``;
        by default as stored (float16 in stores ``generate`` writes, half the memory of
        float32). Pooling computes in float32 either way. ``pin_memory``
        (``device="cpu"`` only) puts the maps in page-locked memory, from which each gathered
        batch copies to a GPU asynchronously. With ``check_memory``, a device without room
        (after 10% headroom on a GPU) raises :class:`InsufficientMemoryError` before
        anything is allocated.
        """
        store = load_relabel(store)
        device = torch.device(device)
        if dtype is None:
            dtype = getattr(torch, store.metadata.values_dtype)
        if dtype not in (torch.float16, torch.float32):
            raise ArgumentTypeError(f"dtype must be torch.float16 or torch.float32, got {dtype}")
        if pin_memory and device.type != "cpu":
            raise ConfigurationError(
                f"pin_memory=True keeps the maps in page-locked host memory; it needs "
                f"device='cpu', got {device}"
            )
        if pin_memory and not torch.cuda.is_available():
            raise ConfigurationError(
                "pin_memory=True needs CUDA (page-locked memory exists for copies to a GPU), "
                "and torch sees no GPU; use pin_memory=False"
            )
        shape = (len(store), *store.metadata.grid, store.metadata.k)
        need = int(np.prod(shape)) * (2 + dtype.itemsize)
        if check_memory:
            _check_room(device, need, pin_memory, store)
        indices = torch.empty(shape, dtype=torch.int16, device=device, pin_memory=pin_memory)
        values = torch.empty(shape, dtype=dtype, device=device, pin_memory=pin_memory)
        for rows, ids, logits in store.shard_blocks():
            where = torch.from_numpy(rows).to(device)
            indices.index_copy_(0, where, torch.from_numpy(ids.view(np.int16)).to(device))
            values.index_copy_(0, where, torch.from_numpy(logits).to(device, dtype))
        return cls(store, indices, values)

    def check_store(self, store: RelabelStore) -> None:
        """Refuse to stand in for ``store`` unless these are its maps (the same store, or one
        with the same manifest digest): their rows would be another store's records."""
        if self.store is store or (
            self.digest is not None
            and store.manifest is not None
            and self.digest == store.manifest.digest
        ):
            return
        raise ConfigurationError(
            f"the maps were loaded from store {self.store.source.location}, not from "
            f"{store.source.location} (their manifests differ): their rows would be another "
            "store's records. Load them from the loader's store: DeviceMaps.load(dataset.store)."
        )

    def records(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The maps of ``rows`` (key order, all >= 0) as numpy ``(indices uint16, values)``,
        like :meth:`RelabelStore.get_rows` but a copy out of memory instead of a decode: what
        DataLoader workers pool from when the maps are in host memory (``device="cpu"``)."""
        if self.device.type != "cpu":
            raise ConfigurationError(
                f"the maps are on {self.device}; DataLoader workers pool from maps in host "
                "memory (DeviceMaps.load(store, 'cpu')). For maps on a GPU, pool in the "
                "training step with ResidentPooler."
            )
        where = torch.from_numpy(np.asarray(rows, np.int64))
        ids = self.indices.index_select(0, where).numpy().view(np.uint16)
        return ids, self.values.index_select(0, where).numpy()

    @property
    def device(self) -> torch.device:
        return self.indices.device

    @property
    def nbytes(self) -> int:
        """Bytes the two tensors take on their device."""
        return sum(t.numel() * t.element_size() for t in (self.indices, self.values))

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __repr__(self) -> str:
        return (
            f"DeviceMaps({self.store.source.location!r}, rows={len(self)}, device={self.device}, "
            f"values={self.values.dtype}, {self.nbytes / 2**30:.2f} GiB)"
        )

    def gather(
        self, rows: torch.Tensor, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The maps of ``rows`` (B,) (rows of -1 give row 0's map: callers replace those), as
        ``(indices int32, values)`` on ``device`` (default: the maps' own)."""
        target = torch.device(device) if device is not None else self.device
        if not len(self):  # a store without records: every row is -1
            shape = (len(rows), *self.indices.shape[1:])
            return (
                torch.zeros(shape, dtype=torch.int32, device=target),
                torch.zeros(shape, dtype=self.values.dtype, device=target),
            )
        where = rows.to(self.device, torch.int64).clamp_min(0)
        ids = self.indices.index_select(0, where)
        vals = self.values.index_select(0, where)
        if target != self.device:
            pinned = target.type == "cuda" and self.device.type == "cpu"
            if pinned:
                ids, vals = ids.pin_memory(), vals.pin_memory()
            ids = ids.to(target, non_blocking=pinned)
            vals = vals.to(target, non_blocking=pinned)
        return widen_ids(ids, self.store.metadata.num_classes), vals


def _check_room(device: torch.device, need: int, pinned: bool, store: RelabelStore) -> None:
    free = _free_bytes(device)
    if free is None or need <= free * (_HEADROOM if device.type != "cpu" else 1.0):
        return
    gib = 2**30
    instead = (
        "Keep them in host memory instead (DeviceMaps.load(store, 'cpu', pin_memory=True): "
        "each batch's maps are then copied to the GPU), or pool in the DataLoader workers."
        if device.type != "cpu"
        else "Pool in the DataLoader workers (RelabelDataset's default) instead."
    )
    raise InsufficientMemoryError(
        f"the label maps of store {store.source.location} take {need / gib:.2f} GiB, and "
        f"{device}{' (pinned)' if pinned else ''} has {free / gib:.2f} GiB free. {instead} "
        "Pass check_memory=False to try anyway."
    )


def _free_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (MemAvailable for the host), or None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as info:
                for line in info:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def widen_ids(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids held as int16 bit patterns of the stored uint16 (torch's uint16 lacks ops on
    some devices) as int32 values."""
    wide = ids.to(torch.int32)
    return wide.bitwise_and_(0xFFFF) if num_classes > 2**15 else wide
