"""Read a finalized store: records by key or row, one at a time or in batches, fast.

The reader parses the Zarr v3 layout itself (see ``_layout``), caches each shard's index and a
memory map of the shard file, and decodes one inner chunk per array per record. Keys are held as
one sorted fixed-width bytes array (about 25 bytes per key, shared copy-on-write by forked
DataLoader workers) and looked up by binary search, never through a Python dict.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from relabel_store.errors import (
    ArgumentTypeError,
    CorruptDataError,
    FormatError,
    IncompleteStoreError,
    RecordNotFoundError,
    RelabelStoreError,
    RowOutOfRangeError,
    StoreNotFoundError,
)
from relabel_store.format._codecs import BatchPlan, BatchRefused, Decoded, decode_plans
from relabel_store.format._io import sha256_bytes
from relabel_store.format._layout import MISSING, ArrayLayout, parse_shard_index
from relabel_store.format._shards import cores_per_process
from relabel_store.format.manifest import Manifest, ManifestEntry
from relabel_store.format.metadata import (
    INDICES,
    KEYS,
    LABELS,
    MANIFEST_NAME,
    MAX_INDEX_CHUNK_ROWS,
    MAX_KEY_BYTES,
    MAX_KEY_TABLE_BYTES,
    ROWS,
    SIGNATURE_ATTR,
    SIGNATURE_BYTES,
    SIGNATURE_KIND,
    SIGNATURES,
    SIZES,
    VALUES,
    StoreMetadata,
    read_group_attribute,
)
from relabel_store.read import _key_index
from relabel_store.read.cache import default_cache_dir
from relabel_store.read.sources import Blob, Source
from relabel_store.read.sources.local import LocalSource
from relabel_store.read.sources.ranged import RangeSource

__all__ = ["Record", "RecordBatch", "RelabelStore"]

#: Open files kept free for the rest of the process when sizing the shard cache.
_SPARE_FILES = 256
#: Shards of each array kept open when read by ranged requests: each holds its index in memory
#: (16 B a record: 64 KB for a shard of 4,096), 64 MB a store at most.
_REMOTE_SHARDS_HELD = 512
#: Records decoded in one batch: enough that handing work to threads is noise, few enough that
#: a whole-store read holds little beyond its output.
_BATCH = 1024


_NO_SPANS = memoryview(b"").cast("Q")
#: A cached shard: its file (None: never written), where it is, and its (offset, nbytes) index
#: as a flat memoryview of uint64 (entry j at 2j, 2j + 1), read without numpy's per-call cost.
_ShardEntry = tuple[Blob | None, str, memoryview]


def _open_shards_allowed(shards: int, arrays: int) -> int:
    """How many shards of each array stay open (memory-mapped; each holds one open file).

    All of them where the process may hold that many files: reopening an evicted shard costs
    ~90 µs (a safe open of each path component, the mapping, the index checksum), which a
    random read of a store larger than the cache pays almost every time (ImageNet-21k: 3,212
    shards). The soft limit on open files is raised towards the hard one when the store needs
    it (never lowered); where it cannot go high enough, the cache holds what fits beside
    :data:`_SPARE_FILES` files for the rest of the process."""
    want = shards * arrays + _SPARE_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            target = want if hard == resource.RLIM_INFINITY else min(want, hard)
            if target > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
    except (ValueError, OSError):  # a platform or sandbox that refuses: keep what we have
        pass
    if soft == resource.RLIM_INFINITY:
        return shards
    return max(16, min(shards, (soft - _SPARE_FILES) // arrays))


#: Copying a chunk out of a mapped file slower than this means its pages came from the disk
#: (a page-cache hit costs ~1 µs).
_COLD_SECONDS = 20e-6


def _will_need(spans: Sequence[tuple[Blob, int, int]]) -> None:
    """Ask the kernel to read the pages of every chunk of mapped files now, all at once."""
    page = mmap.PAGESIZE
    for blob, off, size in spans:
        if isinstance(blob, mmap.mmap):
            start = off - off % page
            with contextlib.suppress(OSError, ValueError):
                blob.madvise(mmap.MADV_WILLNEED, start, off + size - start)


def _spans(index: np.ndarray) -> memoryview:
    """A shard index as a flat memoryview of native uint64 (a view, no copy, where the host is
    little-endian as the file is)."""
    native = np.ascontiguousarray(index, dtype=np.dtype("=u8")).reshape(-1)
    return native.view(np.uint8).data.cast("Q")


_max = np.maximum.reduce  # ndarray.max() without its Python wrapper: ~1 µs less a call
_ROW_TYPES = (int, np.integer)


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
    """Random access to the records of one sharded array through a bounded shard cache.

    ``listed`` is the manifest's files (None for an unfinished store): a shard it lists must be
    there at its size, and one it does not list was never written (zarr leaves out shards that
    hold only fill values), so it is never opened.
    """

    def __init__(
        self,
        source: Source,
        layout: ArrayLayout,
        listed: Mapping[str, ManifestEntry] | None,
        max_open: int,
    ) -> None:
        self.source = source
        self.max_open = max_open
        self.layout = layout
        self.listed = listed
        self.per_shard = layout.chunk_shape[0]
        self.record_shape = tuple(layout.shape[1:])
        self.nbytes = int(np.prod(self.record_shape)) * layout.dtype.itemsize
        self.tail = 16 * self.per_shard + 4
        # shard -> _ShardEntry: the index is a view into the memory-mapped file where the
        # source maps files (no per-worker copy), else 16 B a chunk.
        self._shards: OrderedDict[int, _ShardEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._prefetch = False  # the last batch waited for the disk (see gather)

    def _shard(self, s: int) -> _ShardEntry:
        entry = self._shards.get(s)
        if entry is not None:
            return entry
        with self._lock:
            key = self.layout.chunk_key((s, *[0] * len(self.record_shape)))
            where = f"{self.source.location}/{key}"
            listed = None if self.listed is None else self.listed.get(key)
            blob = None
            if self.listed is None or listed is not None:
                blob = self.source.open_blob(key)
            if blob is None:
                if listed is not None:
                    raise _damaged(where, "the manifest lists this shard but it is missing")
                entry = (None, where, _NO_SPANS)  # never written: only fill values
            else:
                if listed is not None and len(blob) != listed.size:
                    raise _damaged(
                        where, f"{len(blob)} bytes on disk, the manifest says {listed.size}"
                    )
                if len(blob) < self.tail:
                    raise _damaged(where, "the shard is too short to hold its index")
                start = len(blob) - self.tail
                tail = memoryview(blob)[start:] if isinstance(blob, mmap.mmap) else blob[start:]
                entry = (blob, where, _spans(parse_shard_index(tail, self.per_shard, where)))
            self._shards[s] = entry
            while len(self._shards) > self.max_open:
                self._shards.popitem(last=False)
            return entry

    def raw(self, row: int) -> Decoded | None:
        """The decoded bytes of one record, or None when it holds only fill values."""
        s, j = divmod(row, self.per_shard)
        blob, where, spans = self._shard(s)
        if blob is None or (off := spans[2 * j]) == MISSING:
            return None
        return self.layout.codecs.decode(blob[off : off + spans[2 * j + 1]], where)

    def _bad_size(self, row: int, raw: Decoded) -> CorruptDataError:
        return CorruptDataError(
            f"{self._shard(row // self.per_shard)[1]}: record {row} decoded to {len(raw)} bytes, "
            f"expected {self.nbytes}; the file is damaged. Run `relabel-store verify`."
        )

    def get(self, row: int) -> np.ndarray:
        raw = self.raw(row)
        if raw is None:
            return np.full(self.record_shape, self.layout.fill_value, self.layout.dtype)
        if len(raw) != self.nbytes:
            raise self._bad_size(row, raw)
        return np.frombuffer(raw, dtype=self.layout.dtype).reshape(self.record_shape)

    def get_many(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Records ``rows`` (physical rows), stacked (see :func:`_read_batch`)."""
        return _read_batch((self,), np.asarray(rows, dtype=np.int64).reshape(-1))[0]

    def gather(self, phys: np.ndarray, flat: np.ndarray) -> tuple[list[bytes], list[int]]:
        """The encoded chunks of records ``phys``, in that order, and for each the position in
        ``phys`` it belongs to. Records holding only the fill value (no chunk) are written to
        ``flat`` (one row of bytes per record) at once.

        Each chunk is found through its shard's index read as a memoryview (~0.6 µs a record):
        a random batch of a large store touches a different shard for almost every record,
        where grouping by shard costs ~5 µs a record. Where the chunks' pages are not in memory
        (a store larger than the page cache, a first epoch), copying them out of the mapped
        files waits for one disk read after another; after such a batch (over
        :data:`_COLD_SECONDS` a record) the next ones first ask the kernel for every chunk's
        pages at once (``madvise(MADV_WILLNEED)``, reads in flight together: 2-3.5x faster on
        this machine's disk), until a batch is warm again."""
        shards, within = np.divmod(phys, self.per_shard)
        cache, load = self._shards, self._shard
        spans_of: list[tuple[Blob, int, int]] = []
        placed: list[int] = []
        fill: list[int] = []
        for pos, s, j in zip(range(len(phys)), shards.tolist(), within.tolist(), strict=True):
            blob, _, spans = cache.get(s) or load(s)
            if blob is None or spans[2 * j] == MISSING:
                fill.append(pos)
                continue
            spans_of.append((blob, spans[2 * j], spans[2 * j + 1]))
            placed.append(pos)
        started = time.perf_counter()
        if self._prefetch:
            _will_need(spans_of)
        frames = [blob[off : off + size] for blob, off, size in spans_of]
        if spans_of:
            self._prefetch = (time.perf_counter() - started) / len(spans_of) > _COLD_SECONDS
        if fill:
            value = np.full(self.record_shape, self.layout.fill_value, self.layout.dtype)
            flat[fill] = value.reshape(-1).view(np.uint8)
        return frames, placed

    def decode_one_by_one(self, phys: np.ndarray, flat: np.ndarray, placed: list[int]) -> None:
        """Decode records ``phys[placed]`` into ``flat[placed]`` one at a time (the slow path,
        whose errors name the damaged file)."""
        for pos in placed:
            row = int(phys[pos])
            raw = self.raw(row)
            if raw is None or len(raw) != self.nbytes:
                raise self._bad_size(row, raw if raw is not None else b"")
            flat[pos] = np.frombuffer(raw, dtype=np.uint8)

    def drop_cache(self) -> None:
        self._shards.clear()


def _read_batch(arrays: Sequence[_ShardedArray], phys: np.ndarray) -> list[np.ndarray]:
    """Records ``phys`` (physical rows) of every array, stacked, one array each.

    The chunks are gathered in order and decoded :data:`_BATCH` records at a time, every
    array's frames in one job list that the process's cores (the calling thread among them)
    check, decode and unshuffle mostly outside the GIL, straight into the output rows
    (:func:`~relabel_store.format._codecs.decode_plans`). Chunks the batch path refuses (a
    damaged one, a frame of an uncommon kind) are decoded record by record, which names the
    damaged file.
    """
    outs = [np.empty((len(phys), *a.record_shape), dtype=a.layout.dtype) for a in arrays]
    flats = [out.reshape(len(phys), -1).view(np.uint8) for out in outs]
    for start in range(0, len(phys), _BATCH):
        part = phys[start : start + _BATCH]
        todo: list[tuple[_ShardedArray, np.ndarray, list[int], BatchPlan, np.ndarray]] = []
        for array, flat in zip(arrays, flats, strict=True):
            rows = flat[start : start + len(part)]
            frames, placed = array.gather(part, rows)
            if not frames:
                continue
            try:
                plan = array.layout.codecs.plan_batch(frames)
            except BatchRefused:
                array.decode_one_by_one(part, rows, placed)
                continue
            # Every record has a chunk (the usual case): decoded straight into its rows.
            into = (
                rows
                if len(placed) == len(part)
                else np.empty((len(placed), rows.shape[1]), np.uint8)
            )
            todo.append((array, rows, placed, plan, into))
        try:
            decode_plans([t[3] for t in todo], cores_per_process(), [t[4] for t in todo])
        except BatchRefused:
            for array, rows, placed, _, _ in todo:
                array.decode_one_by_one(part, rows, placed)
            continue
        for _, rows, placed, _, into in todo:
            if into is not rows:
                rows[placed] = into
    return outs


class _FiniteCheck:
    """Whether an array of little-endian floats holds only finite numbers. A float is NaN or
    infinite exactly when its exponent bits are all ones: many values are tested with numpy
    (the bits masked, one max); one record's by the top byte of each value, which holds the
    sign and the exponent's high bits (all five of float16's), in one strided copy and one
    ``bytes.translate`` (~2x faster than numpy's calls on 1,125 values). A float32 or float64
    top byte holds only 7 exponent bits, so a suspect byte there is settled by the bit test.
    """

    #: Up to this many values, the byte scan; above, numpy's vector loops win.
    SCAN_BELOW = 8192

    def __init__(self, dtype: np.dtype) -> None:
        if dtype.kind != "f" or dtype.byteorder == ">" or dtype.itemsize not in (2, 4, 8):
            raise FormatError(f"values must be little-endian floats, got {dtype}")
        self.step = dtype.itemsize
        self.bits = np.dtype(f"<u{dtype.itemsize}")
        exponent = {2: (5, 10), 4: (8, 23), 8: (11, 52)}[dtype.itemsize]
        self.mask = self.bits.type(((1 << exponent[0]) - 1) << exponent[1])
        top = 0x7C if dtype.itemsize == 2 else 0x7F
        # The top bytes that prove their value finite; translate() deletes them.
        self.finite_tops = bytes(b for b in range(256) if b & top != top)
        self.exact_tops = dtype.itemsize == 2

    def __call__(self, values: np.ndarray) -> bool:
        if values.size < self.SCAN_BELOW:
            tops = values.tobytes()[self.step - 1 :: self.step]
            if not tops.translate(None, self.finite_tops):
                return True
            if self.exact_tops:
                return False
        if not values.flags.c_contiguous:
            values = np.ascontiguousarray(values)
        return bool((values.view(self.bits) & self.mask).max(initial=0) < self.mask)


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
        manifest_raw = source.read(MANIFEST_NAME)
        self.manifest = (
            Manifest.from_bytes(manifest_raw, where=f"{where}/{MANIFEST_NAME}")
            if manifest_raw is not None
            else None
        )
        # A finalized store is exactly its manifest: every file read at open is checked against
        # it (size and sha256), and a file it lists must exist.
        self._listed = self.manifest.by_path() if self.manifest is not None else None
        self._check_listed("zarr.json", group)
        attrs = read_group_attribute(group, where)
        self.metadata = m = StoreMetadata.from_json(attrs, where=where)
        if not allow_incomplete and (not m.complete or manifest_raw is None):
            raise IncompleteStoreError(
                f"store {where} is incomplete: it was never finalized (generation still running "
                "or interrupted). Re-run the same `relabel-store generate` command to resume and "
                "finish it, or open it with allow_incomplete=True to inspect what is there."
            )
        record = (m.rows, *m.grid, m.k)
        shards = -(-m.rows // m.shard_records) if m.shard_records > 0 else 1
        if isinstance(source, RangeSource):  # a remote shard holds its index in memory
            open_shards = min(shards, _REMOTE_SHARDS_HELD)
        else:  # a mapped shard holds an open file
            open_shards = _open_shards_allowed(shards, arrays=2)
        self._indices = _ShardedArray(
            source, self._layout(INDICES, record, "u", (2,)), self._listed, open_shards
        )
        self._values = _ShardedArray(
            source, self._layout(VALUES, record, "f", (2, 4)), self._listed, open_shards
        )
        # Ids are uint16: with 65536 classes every id is in range (see _values_ok).
        self._id_limit = m.num_classes if m.num_classes <= 0xFFFF else None
        self._finite = _FiniteCheck(self._values.layout.dtype)
        if self._values.layout.dtype.name != m.values_dtype:
            raise FormatError(
                f"store {where} says its values are {m.values_dtype} but the values array holds "
                f"{self._values.layout.dtype.name}; the store is damaged"
            )
        # The per-key index (written by finalize): sorted keys, their physical rows, labels, sizes.
        if m.complete:
            n = m.record_count
            self._check_claims(m)
            self._keys, self._rows, self._labels, self._sizes = self._key_index(n)
            if n and not (self._rows.min() >= 0 and self._rows.max() < m.rows):
                raise _damaged(
                    f"{where}/{ROWS}", f"a row number is outside 0..{m.rows - 1} (metadata rows)"
                )
        else:
            self._keys = np.zeros(0, "S1")
            self._rows = np.zeros(0, np.int64)
            self._labels = np.zeros(0, np.int32)
            self._sizes = np.zeros((0, 2), np.int32)
        self._n = len(self._keys)
        self._signatures: np.ndarray | None = None
        self._signatures_read = False

    def _key_index(self, n: int) -> _key_index.Index:
        """Keys, physical rows, labels and sizes in key order: memory-mapped from the cache for
        a large store (see :mod:`relabel_store.read._key_index`), else decoded into memory."""
        cached = None
        if _key_index.wanted(n) and self.manifest is not None:
            with contextlib.suppress(OSError, RelabelStoreError, ImportError):
                cached = _key_index.index_path(default_cache_dir(), self.manifest.digest)
        where = f"{self.source.location}/{KEYS}"
        if cached is not None:
            index = _key_index.load(cached, n)
            if index is not None:
                # Checked in full before it was cached; here a sample, so that a later open
                # stays well under a second at 13M keys (the full pass took 0.6 s under load).
                # A lookup by key compares the key it finds, so it never returns another's.
                _check_key_order(index[0][_key_index.sample_positions(n)], where)
                return index
        keys = self._index(KEYS, (n, None), "u", 1)
        index = (
            np.ascontiguousarray(keys).view(f"S{keys.shape[1]}").reshape(-1),
            # Held in the narrowest exact dtype: ImageNet's index takes ~32 MB, not ~50.
            _narrowed(self._index(ROWS, (n,), "i", 8), np.int32),
            _narrowed(self._index(LABELS, (n,), "i", 4), np.int16),
            _narrowed(self._index(SIZES, (n, 2), "i", 4), np.uint16),
        )
        del keys
        _check_key_order(index[0], where)
        if cached is not None:
            try:  # shared by every process from now on: map the file just written
                _key_index.save(cached, index)
                index = _key_index.load(cached, n) or index
            except OSError:  # a read-only cache: this process holds its own copy
                pass
        _release_freed_memory()
        return index

    def _check_claims(self, m: StoreMetadata) -> None:
        """Refuse record counts and shard sizes the manifest's files cannot hold, before the key
        index is decoded or allocated: every record lives in a shard of ``indices``, and every
        shard file holds an index of 16 bytes per record of a full shard. A store claiming 10^9
        records with three small shards fails here, not after allocating gigabytes. (zarr leaves
        out a shard file holding only fill values; a shard of records is in one array at least,
        as top-k ids are distinct and a record of all-zero ids and logits is never written.)"""
        if self._listed is None:
            return
        tail = 16 * m.shard_records + 4
        held: set[str] = set()  # shard numbers with a file in either array
        for path, entry in self._listed.items():
            name, _, rest = path.partition("/")
            if name in (INDICES, VALUES) and rest != "zarr.json":
                held.add(rest)
                if entry.size < tail:
                    raise _damaged(
                        f"{self.source.location}/{path}",
                        f"the manifest lists it at {entry.size} bytes, too few to hold the index "
                        f"of a shard of {m.shard_records} records ({tail} bytes)",
                    )
        shards = len(held)
        if m.record_count > shards * m.shard_records:
            raise _damaged(
                f"{self.source.location}/zarr.json",
                f"the metadata claims {m.record_count} records, but the manifest lists "
                f"{shards} shard(s), which hold at most {shards * m.shard_records}",
            )

    def _check_listed(self, path: str, data: bytes | None) -> bytes | None:
        """``data`` (the bytes of ``path``; None when it is absent) if they are what the
        manifest lists; unchecked in an unfinished store, which has no manifest yet."""
        if self._listed is None:
            return data
        where = f"{self.source.location}/{path}"
        entry = self._listed.get(path)
        if entry is None:
            raise _damaged(where, "the manifest does not list this file")
        if data is None:
            raise _damaged(where, "the manifest lists this file but it is missing")
        if len(data) != entry.size or sha256_bytes(data) != entry.sha256:
            raise _damaged(where, "its content differs from the manifest's size and sha256")
        return data

    def _read_listed(self, path: str, *, required: bool = False) -> bytes | None:
        """A small file, checked against the manifest. A file the manifest does not list was
        never written (zarr leaves out chunks holding only fill values) and is not read: None,
        or an error when the file is ``required``."""
        if self._listed is not None and path not in self._listed:
            if required:
                raise _damaged(
                    f"{self.source.location}/{path}",
                    "the key index needs this chunk but the manifest does not list it (the "
                    "arrays claim more records than the store holds)",
                )
            return None
        return self._check_listed(path, self.source.read(path))

    def _index(self, name: str, shape: tuple[int | None, ...], kind: str, size: int) -> np.ndarray:
        """One array of the key index, its layout checked against the metadata first, so a
        store claiming more than it holds fails before anything is allocated."""
        layout = self._layout(name, shape, kind, (size,))
        rows = layout.chunk_shape[0]
        # A chunk never holds more rows than the array (finalize writes min(n, 2^18)): a chunk
        # claiming more would decode to bytes no record needs.
        most = max(1, min(layout.shape[0], MAX_INDEX_CHUNK_ROWS))
        if not (rows <= most and layout.chunk_shape[1:] == layout.shape[1:]):
            raise self._bad_layout(name, f"chunks {layout.chunk_shape} (at most {most} rows)")
        nbytes = int(np.prod(layout.shape, dtype=np.int64)) * layout.dtype.itemsize
        if nbytes > MAX_KEY_TABLE_BYTES:
            raise self._bad_layout(
                name, f"{nbytes} bytes when decoded (at most {MAX_KEY_TABLE_BYTES} are read)"
            )
        # Every chunk of `keys` holds keys (never only fill values), so the manifest lists each:
        # read them all, refusing a missing one, before the other arrays allocate for N rows.
        required = name == KEYS
        return layout.read_regular(
            lambda key: self._read_listed(key, required=required),
            self.source.location,
            threads=cores_per_process(),
        )

    def _layout(
        self, name: str, shape: tuple[int | None, ...], kind: str, sizes: tuple[int, ...]
    ) -> ArrayLayout:
        """The layout of array ``name``, refused unless its shape is ``shape`` (None: any
        width up to MAX_KEY_BYTES) and its dtype of ``kind`` with an item size in ``sizes``."""
        raw = self._read_listed(f"{name}/zarr.json")
        if raw is None:
            raise FormatError(f"store {self.source.location} has no array {name!r}; it is damaged")
        layout = ArrayLayout.parse(name, raw, self.source.location)
        got = layout.shape
        if len(got) != len(shape) or any(
            g != e if e is not None else not 1 <= g <= MAX_KEY_BYTES
            for g, e in zip(got, shape, strict=False)
        ):
            want = tuple(f"1..{MAX_KEY_BYTES}" if e is None else e for e in shape)
            raise self._bad_layout(name, f"shape {got}, but its metadata implies {want}")
        if layout.dtype.kind != kind or layout.dtype.itemsize not in sizes:
            raise self._bad_layout(name, f"dtype {layout.dtype}")
        if layout.separator != ".":  # chunk files elsewhere would all read as fill values
            raise self._bad_layout(name, f"chunk key separator {layout.separator!r}, not '.'")
        m = self.metadata
        record = got[1:]
        if name in (INDICES, VALUES) and (
            layout.chunk_shape != (m.shard_records, *record) or layout.inner_shape != (1, *record)
        ):
            raise self._bad_layout(
                name,
                f"shards {layout.chunk_shape} of inner chunks {layout.inner_shape}; the format "
                f"has shards of {m.shard_records} records and one record per inner chunk",
            )
        return layout

    def _bad_layout(self, name: str, what: str) -> FormatError:
        return FormatError(
            f"{self.source.location}/{name}/zarr.json: the array has {what}, which does not fit "
            "the store's metadata (records, grid, k, shard size); the store is damaged or not "
            "a relabel-store store. Re-download or regenerate it."
        )

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
        return self._n

    @property
    def keys(self) -> np.ndarray:
        """All keys, sorted, as a read-only fixed-width bytes array (decode with ``.decode()``);
        :meth:`get`, :meth:`get_many`, :meth:`rows_of` and ``in`` take its entries as they are."""
        view = self._keys.view()
        view.flags.writeable = False
        return view

    @property
    def sizes(self) -> np.ndarray:
        """(height, width) of every record's original image, in key order (read-only, int32)."""
        view = self._sizes.view()
        view.flags.writeable = False
        return view

    @property
    def has_signatures(self) -> bool:
        """Whether the store holds a content signature of every record's image (format 1.3:
        written by ``generate``, ``import --images`` or ``relabel-store sign``)."""
        if self._signatures_read:
            return self._signatures is not None
        path = f"{SIGNATURES}/zarr.json"
        if self._listed is not None:
            return path in self._listed
        return self.source.read(path) is not None

    @property
    def signatures(self) -> np.ndarray | None:
        """(N, SIGNATURE_BYTES) uint8 content signatures in key order (read-only), or None when
        the store has none. Read on first use (64 bytes a record: 82 MB for ImageNet; read it
        before forking DataLoader workers and they share it). A signature recipe this version
        does not know is refused (:class:`FormatError`)."""
        if not self._signatures_read:
            self._signatures = self._read_signatures()
            self._signatures_read = True
        if self._signatures is None:
            return None
        view = self._signatures.view()
        view.flags.writeable = False
        return view

    def _read_signatures(self) -> np.ndarray | None:
        if not self.metadata.complete or not self.has_signatures:
            return None
        where = f"{self.source.location}/{SIGNATURES}"
        raw = self._read_listed(f"{SIGNATURES}/zarr.json")
        try:
            attrs = json.loads(raw or b"{}").get("attributes") or {}
            kind = (attrs.get(SIGNATURE_ATTR) or {}).get("kind")
        except (ValueError, AttributeError):
            raise _damaged(f"{where}/zarr.json", "it is not a JSON object") from None
        if kind != SIGNATURE_KIND:
            raise FormatError(
                f"{where} holds image signatures of kind {kind!r}; this relabel-store reads "
                f"{SIGNATURE_KIND!r} only. Upgrade "
                "relabel-store (pip install -U relabel-store), or pass check_images='off' to "
                "the loader to train without the image check."
            )
        return self._index(SIGNATURES, (self.metadata.record_count, SIGNATURE_BYTES), "u", 1)

    def rows_of(self, keys: Sequence[str | bytes]) -> np.ndarray:
        """The position in key order (what :meth:`get_rows` takes) of every key, int64, by one
        vectorised binary search of the sorted key table; -1 where a key has no record. Keys
        are ``str``, or ``bytes`` as :attr:`keys` holds them (UTF-8)."""
        if not len(keys):
            return np.zeros(0, np.int64)
        encoded = np.array([_key_bytes(k) for k in keys])
        table = self._keys
        too_long = None
        if encoded.itemsize > table.itemsize:
            # No record has a key this long. Searching with a wider dtype would make numpy
            # convert the whole table (6 ms a call at ImageNet scale): cut to the table's width
            # instead, and let no cut key match.
            too_long = np.char.str_len(encoded) > table.itemsize
            encoded = encoded.astype(table.dtype)
        pos = np.searchsorted(table, encoded).astype(np.int64)
        found = pos < len(table)
        found[found] = table[pos[found]] == encoded[found]
        if too_long is not None:
            found &= ~too_long
        pos[~found] = -1
        return pos

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | bytes) and self.rows_of([key])[0] >= 0

    def index_of(self, key: str | bytes) -> int:
        """The position of ``key`` (``str``, or ``bytes`` from :attr:`keys`) in key order (what
        :meth:`get_row` takes)."""
        i = int(self.rows_of([key])[0])
        if i < 0:
            raise self.missing_keys([_key_text(key)], 1)
        return i

    def missing_keys(
        self, absent: Sequence[str], total: int, fix: str | None = None, count: int | None = None
    ) -> RecordNotFoundError:
        """The error for keys without a record: ``count`` (default: ``len(absent)``) of
        ``total`` keys looked up, the first of ``absent`` named, and ``fix`` (by default: how
        keys are derived) after them."""
        where = f"store {self.source.location} ({len(self)} records)"
        count = len(absent) if count is None else count
        if total == 1:
            head = f"key {absent[0]!r} is not in {where}"
        else:
            first = list(absent[:5])
            head = f"{count} of {total} keys are not in {where} (first: {first})"
        return RecordNotFoundError(f"{head}. {fix or _KEY_FIX}")

    def _check_row(self, i: object) -> int:
        if not isinstance(i, _ROW_TYPES) or not 0 <= i < self._n:
            raise RowOutOfRangeError(
                f"row {i!r} is out of range for store {self.source.location}: valid rows are "
                f"0 <= row < {len(self)}"
            )
        return int(i)

    # -- records --------------------------------------------------------------------------------

    def get(self, key: str | bytes) -> Record:
        """The record of ``key``: a ``str``, or an entry of :attr:`keys` as it is (``bytes``)."""
        return self._record(self.index_of(key))

    __getitem__ = get

    def get_row(self, i: int) -> Record:
        return self._record(self._check_row(i))

    def _record(self, i: int) -> Record:
        p = int(self._rows[i])
        indices, values = self._indices.get(p), self._values.get(p)
        if not self._values_ok(indices, values):
            self._check_values(np.array([i]), indices[None], values[None])
        h, w = self._sizes[i].tolist()
        return Record(self._keys[i].decode(), indices, values, int(self._labels[i]), (h, w))

    def _values_ok(self, indices: np.ndarray, values: np.ndarray) -> bool:
        """Whether every class id is below ``num_classes`` and every logit finite: one integer
        reduction and one byte scan (:class:`_FiniteCheck`), ~5 µs a record on its own and
        ~0.3 µs a record in batches."""
        limit = self._id_limit
        if limit is not None and indices.size and _max(indices, axis=None) >= limit:
            return False
        return self._finite(values)

    def _check_values(self, rows: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
        """Refuse records (``rows``: positions in key order, stacked on the first axis) holding
        a class id outside ``0..num_classes-1`` or a logit that is NaN or infinite: pooled, they
        would give wrong or NaN targets without a word. One vectorised pass (~1 µs a record);
        the writer never writes such values, so they mean a hostile or damaged store."""
        if self._values_ok(indices, values):
            return
        c = self.metadata.num_classes
        flat_ids = indices.reshape(len(rows), -1)
        bad = (flat_ids >= c).any(axis=1) | ~np.isfinite(values.reshape(len(rows), -1)).all(axis=1)
        j = int(np.flatnonzero(bad)[0])
        i = int(rows[j])
        if (flat_ids[j] >= c).any():
            what = f"class id {int(flat_ids[j].max())}, outside 0..{c - 1}"
        else:
            what = "a logit that is NaN or infinite"
        shard = int(self._rows[i]) // self.metadata.shard_records
        raise CorruptDataError(
            f"{self.source.location}: record {self._keys[i].decode(errors='replace')!r} (row {i}, "
            f"shard {shard}) holds {what}; relabel-store never writes such values, so the store "
            f"is damaged or hostile ({int(bad.sum())} of {len(rows)} records read). Do not "
            "train on it: regenerate it, or ask its publisher."
        )

    def get_many(self, keys: Iterable[str | bytes]) -> RecordBatch:
        """Records for many keys at once (one allocation per array); keys as :meth:`get` takes
        them (a slice of :attr:`keys` too)."""
        keys = list(keys)
        rows = self.rows_of(keys)
        if (rows < 0).any():
            absent = [_key_text(keys[i]) for i in np.flatnonzero(rows < 0)]
            raise self.missing_keys(absent, len(keys))
        return self.get_rows(rows)

    def get_rows(self, rows: Iterable[int]) -> RecordBatch:
        """Records for many rows (positions in key order) at once."""
        idx = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows))
        if idx.size and (
            idx.dtype.kind not in "iu" or idx.ndim != 1 or idx.min() < 0 or idx.max() >= len(self)
        ):
            bad = next((i for i in idx.ravel().tolist() if not 0 <= i < len(self)), idx)
            self._check_row(bad)
        idx = idx.astype(np.int64, copy=False)
        indices, values = _read_batch((self._indices, self._values), self._rows[idx])
        self._check_values(idx, indices, values)
        return RecordBatch(
            [k.decode() for k in self._keys[idx].tolist()],
            indices,
            values,
            self._labels[idx].astype(np.int32),
            self._sizes[idx].astype(np.int32),
        )

    def shard_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every record, one shard file at a time, in storage order: ``(rows, indices,
        values)`` with ``rows`` the records' positions in key order (what :meth:`get_row`
        takes). Reading a whole store this way touches each shard once, in sequence, and holds
        one shard's records at a time (loading every map into memory, for example)."""
        order = np.argsort(self._rows, kind="stable")  # key positions by physical row
        shard_of = self._rows[order].astype(np.int64) // self.metadata.shard_records
        # Only shards that hold records: what the metadata's `rows` claims allocates nothing.
        starts: list[int] = np.flatnonzero(np.diff(shard_of, prepend=-1)).tolist()
        for a, b in zip(starts, [*starts[1:], len(order)], strict=True):
            rows = order[a:b]
            indices, values = _read_batch((self._indices, self._values), self._rows[rows])
            self._check_values(rows, indices, values)
            yield rows, indices, values

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


def _key_bytes(key: object) -> bytes:
    """A key as the key table holds it: UTF-8 bytes (``bytes`` and ``numpy.bytes_`` from
    :attr:`RelabelStore.keys` are taken as they are)."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):  # numpy.bytes_ too
        return bytes(key)
    raise ArgumentTypeError(
        f"a key is a str (or bytes, as RelabelStore.keys holds them), got {type(key).__name__}"
        f" {key!r}"
    )


def _key_text(key: str | bytes) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes) else key


def _narrowed(values: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    """``values`` as ``dtype`` when every value fits exactly, else unchanged."""
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        return values
    return values.astype(dtype)


def _release_freed_memory() -> None:
    """Hand the decoding buffers of the key index back to the operating system. glibc keeps up
    to twice its largest recently freed block (a 4 MB chunk of keys) in the heap otherwise:
    9 MB of a 46 MB resident index for ImageNet (benchmarks/imagenet_scale.py)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        return None


_malloc_trim = _load_malloc_trim()


def _reopen(source: Source, allow_incomplete: bool) -> RelabelStore:
    return RelabelStore(source, allow_incomplete=allow_incomplete)


_KEY_FIX = (
    "Keys are file stems such as 'n01440764_10026' (or paths below the dataset root with "
    "key_mode='relpath', or a key column's values), as `relabel-store generate` made them; "
    "check how your dataset's keys are derived (key_mode=, key_fn=, key_column=)."
)


def _check_key_order(keys: np.ndarray, where: str) -> None:
    """Refuse a key table that is not strictly ascending: every lookup is a binary search of
    it, which on unsorted or repeated keys misses records or finds another's without a word.
    One vectorised pass (~15 ms for ImageNet's 1.28M keys)."""
    if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        i = int(np.flatnonzero(keys[1:] <= keys[:-1])[0])
        first, second = keys[i].decode(errors="replace"), keys[i + 1].decode(errors="replace")
        problem = "repeats" if first == second else "is out of order after"
        raise _damaged(
            where,
            f"the keys must be sorted and unique, and key {i + 1} ({second!r}) {problem} key "
            f"{i} ({first!r})",
        )


def _damaged(where: str, problem: str) -> CorruptDataError:
    return CorruptDataError(
        f"{where}: {problem}. The store was changed or damaged after it was finalized; run "
        "`relabel-store verify` on it, then re-download or regenerate it."
    )
