"""Read a finalized store: records by key or row, one at a time or in batches, fast.

The reader parses the Zarr v3 layout itself (see ``_layout``), caches each shard's index and a
memory map of the shard file, and decodes one inner chunk per array per record. Keys are held as
one sorted fixed-width bytes array (about 25 bytes per key, shared copy-on-write by forked
DataLoader workers) and looked up by binary search, never through a Python dict.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from relabel_store._layout import MISSING, ArrayLayout, Decoded, parse_shard_index
from relabel_store.errors import (
    CorruptDataError,
    FormatError,
    IncompleteStoreError,
    RecordNotFoundError,
    RowOutOfRangeError,
    StoreNotFoundError,
)
from relabel_store.format import (
    INDICES,
    KEYS,
    LABELS,
    MANIFEST_NAME,
    ROWS,
    SIZES,
    VALUES,
    StoreMetadata,
    read_group_attribute,
)
from relabel_store.manifest import Manifest
from relabel_store.sources import Blob, Source
from relabel_store.sources.local import LocalSource

_MAX_OPEN_SHARDS = 512


class Record(NamedTuple):
    """One image's label map: top-k ``indices`` (H, W, K) and their logits ``values``."""

    key: str
    indices: np.ndarray
    values: np.ndarray
    label: int
    size: tuple[int, int]


class RecordBatch(NamedTuple):
    """Records stacked along a leading batch axis."""

    keys: list[str]
    indices: np.ndarray  # (B, H, W, K) uint16
    values: np.ndarray  # (B, H, W, K) float16, or float32 (metadata.values_dtype)
    labels: np.ndarray  # (B,) int32
    sizes: np.ndarray  # (B, 2) int32, (height, width)


class _ShardedArray:
    """Random access to the records of one sharded array through a bounded shard cache."""

    def __init__(self, source: Source, layout: ArrayLayout) -> None:
        if layout.inner_shape is None or layout.inner_shape[0] != 1:
            raise FormatError(
                f"{source.location}/{layout.name}: expected one inner chunk per record"
            )
        if tuple(layout.inner_shape[1:]) != tuple(layout.shape[1:]):
            raise FormatError(
                f"{source.location}/{layout.name}: inner chunk must hold a whole record"
            )
        self.source = source
        self.layout = layout
        self.per_shard = layout.chunk_shape[0]
        self.record_shape = tuple(layout.shape[1:])
        self.nbytes = int(np.prod(self.record_shape)) * layout.dtype.itemsize
        self.tail = 16 * self.per_shard + 4
        self.suffix = layout.separator + layout.separator.join("0" * len(self.record_shape))
        self._shards: OrderedDict[int, tuple[Blob | None, list[int], list[int], str]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def _shard(self, s: int) -> tuple[Blob | None, list[int], list[int], str]:
        entry = self._shards.get(s)
        if entry is not None:
            return entry
        with self._lock:
            key = f"{self.layout.name}/c{self.layout.separator}{s}{self.suffix}"
            where = f"{self.source.location}/{key}"
            blob = self.source.open_blob(key)
            if blob is None:  # an absent shard holds only fill values
                entry = (None, [], [], where)
            else:
                index = parse_shard_index(
                    blob[len(blob) - self.tail : len(blob)], self.per_shard, where
                )
                entry = (blob, index[:, 0].tolist(), index[:, 1].tolist(), where)
            self._shards[s] = entry
            while len(self._shards) > _MAX_OPEN_SHARDS:
                self._shards.popitem(last=False)
            return entry

    def raw(self, row: int) -> Decoded | None:
        """The decoded bytes of one record, or None when it holds only fill values."""
        s, j = divmod(row, self.per_shard)
        blob, offsets, sizes, where = self._shard(s)
        if blob is None or offsets[j] == MISSING:
            return None
        off = offsets[j]
        return self.layout.decode(blob[off : off + sizes[j]], where)

    def _bad_size(self, row: int, raw: Decoded) -> CorruptDataError:
        return CorruptDataError(
            f"{self._shard(row // self.per_shard)[3]}: record {row} decoded to {len(raw)} bytes, "
            f"expected {self.nbytes}; the file is damaged. Run `relabel-store verify`."
        )

    def get(self, row: int) -> np.ndarray:
        raw = self.raw(row)
        if raw is None:
            return np.full(self.record_shape, self.layout.fill_value, self.layout.dtype)
        if len(raw) != self.nbytes:
            raise self._bad_size(row, raw)
        return np.frombuffer(raw, dtype=self.layout.dtype).reshape(self.record_shape)

    def get_many(self, rows: Sequence[int]) -> np.ndarray:
        out = np.empty((len(rows), *self.record_shape), dtype=self.layout.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for i, row in enumerate(rows):
            raw = self.raw(row)
            if raw is None:
                out[i] = self.layout.fill_value
            elif len(raw) != self.nbytes:
                raise self._bad_size(row, raw)
            else:
                flat[i] = np.frombuffer(raw, dtype=np.uint8)
        return out

    def drop_cache(self) -> None:
        self._shards.clear()


class RelabelStore:
    """A finalized relabel-store store, opened for reading.

    ``store[key]`` and ``store.get(key)`` return a :class:`Record`; ``store.get_row(i)`` the
    i-th record in key order; ``store.get_many(keys)`` a :class:`RecordBatch`. Open with
    :func:`relabel_store.load_relabel` or ``RelabelStore.open(path)``.
    """

    def __init__(self, source: Source, *, allow_incomplete: bool = False) -> None:
        self.source = source
        self._allow_incomplete = allow_incomplete
        where = source.location
        group = source.read("zarr.json")
        if group is None:
            raise StoreNotFoundError(
                f"no relabel-store store at {where}: it has no zarr.json. Check the path, or "
                "create a store with `relabel-store generate`."
            )
        self.metadata = StoreMetadata.from_json(read_group_attribute(group, where), where=where)
        manifest_raw = source.read(MANIFEST_NAME)
        if not allow_incomplete and (not self.metadata.complete or manifest_raw is None):
            raise IncompleteStoreError(
                f"store {where} is incomplete: it was never finalized (generation still running "
                "or interrupted). Re-run the same `relabel-store generate` command to resume and "
                "finish it, or open it with allow_incomplete=True to inspect what is there."
            )
        self.manifest = (
            Manifest.from_bytes(manifest_raw, where=f"{where}/{MANIFEST_NAME}")
            if manifest_raw is not None
            else None
        )
        self._indices = _ShardedArray(source, self._layout(INDICES))
        self._values = _ShardedArray(source, self._layout(VALUES))
        if self._values.layout.dtype.name != self.metadata.values_dtype:
            raise FormatError(
                f"store {where} says its values are {self.metadata.values_dtype} but the values "
                f"array holds {self._values.layout.dtype.name}; the store is damaged"
            )
        # The per-key index (written by finalize): sorted keys, their physical rows, labels, sizes.
        if self.metadata.complete:
            keys = self._index(KEYS)
            self._keys = np.ascontiguousarray(keys).view(f"S{keys.shape[1]}").reshape(-1)
            self._rows = self._index(ROWS).astype(np.int64)
            self._labels = self._index(LABELS).astype(np.int32)
            self._sizes = self._index(SIZES).astype(np.int32)
        else:
            self._keys = np.zeros(0, "S1")
            self._rows = np.zeros(0, np.int64)
            self._labels = np.zeros(0, np.int32)
            self._sizes = np.zeros((0, 2), np.int32)

    def _index(self, name: str) -> np.ndarray:
        return self._layout(name).read_regular(self.source.read, self.source.location)

    def _layout(self, name: str) -> ArrayLayout:
        raw = self.source.read(f"{name}/zarr.json")
        if raw is None:
            raise FormatError(f"store {self.source.location} has no array {name!r}; it is damaged")
        return ArrayLayout.parse(name, raw, self.source.location)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, allow_incomplete: bool = False) -> RelabelStore:
        """Open a store in a local directory."""
        if not Path(path).is_dir():
            raise StoreNotFoundError(
                f"no relabel-store store at {path}: not a directory. Check the path, or create "
                "one with `relabel-store generate`."
            )
        return cls(LocalSource(path), allow_incomplete=allow_incomplete)

    # -- lookup ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> np.ndarray:
        """All keys, sorted, as a read-only fixed-width bytes array (decode with ``.decode()``)."""
        view = self._keys.view()
        view.flags.writeable = False
        return view

    def _find(self, key: str) -> int:
        k = key.encode()
        i = int(np.searchsorted(self._keys, k))
        if i < len(self._keys) and self._keys[i] == k:
            return i
        return -1

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) >= 0

    def index_of(self, key: str) -> int:
        """The position of ``key`` in key order (what :meth:`get_row` takes)."""
        i = self._find(key)
        if i < 0:
            raise RecordNotFoundError(
                f"key {key!r} is not in store {self.source.location} ({len(self)} records). "
                "Keys are file stems such as 'n01440764_10026'; check how your dataset's keys "
                "are derived (key_fn=...)."
            )
        return i

    def _check_row(self, i: object) -> int:
        if not isinstance(i, int | np.integer) or not 0 <= i < len(self):
            raise RowOutOfRangeError(
                f"row {i!r} is out of range for store {self.source.location}: valid rows are "
                f"0 <= row < {len(self)}"
            )
        return int(i)

    # -- records --------------------------------------------------------------------------------

    def get(self, key: str) -> Record:
        return self._record(self.index_of(key))

    __getitem__ = get

    def get_row(self, i: int) -> Record:
        return self._record(self._check_row(i))

    def _record(self, i: int) -> Record:
        p = int(self._rows[i])
        h, w = self._sizes[i]
        return Record(
            self._keys[i].decode(),
            self._indices.get(p),
            self._values.get(p),
            int(self._labels[i]),
            (int(h), int(w)),
        )

    def get_many(self, keys: Iterable[str]) -> RecordBatch:
        """Records for many keys at once (one allocation per array)."""
        return self.get_rows([self.index_of(k) for k in keys])

    def get_rows(self, rows: Iterable[int]) -> RecordBatch:
        """Records for many rows (positions in key order) at once."""
        idx = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows))
        if idx.size and (
            idx.dtype.kind not in "iu" or idx.ndim != 1 or idx.min() < 0 or idx.max() >= len(self)
        ):
            bad = next((i for i in idx.ravel().tolist() if not 0 <= i < len(self)), idx)
            self._check_row(bad)
        idx = idx.astype(np.int64, copy=False)
        phys = self._rows[idx].tolist()
        return RecordBatch(
            [k.decode() for k in self._keys[idx].tolist()],
            self._indices.get_many(phys),
            self._values.get_many(phys),
            self._labels[idx],
            self._sizes[idx],
        )

    def close(self) -> None:
        self._indices.drop_cache()
        self._values.drop_cache()
        self.source.close()

    def __reduce__(self) -> tuple[object, ...]:
        # Memory maps and locks do not pickle; a spawned DataLoader worker reopens the source.
        return (_reopen, (self.source, self._allow_incomplete))

    def __enter__(self) -> RelabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"RelabelStore({self.source.location!r}, records={len(self)}, grid={m.grid}, "
            f"k={m.k}, classes={m.num_classes})"
        )


def _reopen(source: Source, allow_incomplete: bool) -> RelabelStore:
    return RelabelStore(source, allow_incomplete=allow_incomplete)
