"""Range mode: sparse access to a remote store without downloading whole shards.

Small files (metadata, keys, rows, labels, sizes) go through the same verified cache as in cache
mode. Shard files are served by :class:`RangeBlob`: every slice the reader asks for is one ranged
request, with no read-ahead. A shard's index (the tail the reader parses first) is kept on disk
under ``ranges/``, keyed by the shard's sha256, so each shard's index crosses the network once per
machine; after that, a record costs one ranged request per record array. A shard that is already
whole in the cache (from cache mode, or ``relabel-store pull``) is read locally at no cost.

Range mode cannot check a shard's sha256 (it never sees the whole file); what it reads is still
checked by the format's own checksums: the shard index's crc32c and each record's zstd frame
checksum. Use cache mode for training.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from relabel_store._io import atomic_write_bytes
from relabel_store.errors import CorruptDataError
from relabel_store.format import MANIFEST_NAME
from relabel_store.manifest import ManifestEntry, safe_relpath
from relabel_store.sources import Blob
from relabel_store.sources.cached import RANGES_DIR, ShardCacheSource
from relabel_store.sources.local import map_file

#: Suffix reads up to this size (shard indexes: 16 bytes per record + 4) are kept on disk.
MAX_CACHED_TAIL = 1 << 20


class RangeSource(ShardCacheSource):
    """Like :class:`ShardCacheSource`, but shards are read by ranged requests, not downloaded."""

    def open_blob(self, path: str) -> Blob | None:
        safe_relpath(path)
        if path == MANIFEST_NAME:
            return self._manifest_raw
        entry = self._entries.get(path)
        if entry is None:
            return None
        if self._cached(entry):
            return map_file(self.root / entry.path)
        return RangeBlob(self, entry)

    def _tail_path(self, entry: ManifestEntry, start: int) -> Path:
        return self.directory / RANGES_DIR / f"{entry.sha256}.{entry.size - start}.tail"


class RangeBlob:
    """One remote shard file: ``len()`` from the manifest, each slice one ranged request."""

    def __init__(self, source: RangeSource, entry: ManifestEntry) -> None:
        self._source = source
        self._entry = entry
        self._tail: tuple[int, bytes] | None = None  # (start, bytes start:size)
        self.requests = 0

    def __len__(self) -> int:
        return self._entry.size

    def __getitem__(self, item: slice) -> bytes:
        if not isinstance(item, slice):
            raise TypeError("RangeBlob supports slices only")
        size = self._entry.size
        start, stop, step = item.indices(size)
        if step != 1:
            raise ValueError("RangeBlob supports contiguous slices only")
        if stop <= start:
            return b""
        tail = self._tail
        if tail is not None and start >= tail[0]:
            return tail[1][start - tail[0] : stop - tail[0]]
        suffix = stop == size and size - start <= MAX_CACHED_TAIL
        if suffix:
            cached = self._read_tail(start)
            if cached is not None:
                return cached
        data = self._source.remote.read_range(self._entry.path, start, stop)
        self.requests += 1
        if len(data) != stop - start:
            raise CorruptDataError(
                f"{self._source.location}/{self._entry.path}: asked for bytes {start}:{stop}, "
                f"got {len(data)} bytes; the remote file is not the one the manifest describes "
                f"({size} bytes)."
            )
        if suffix:
            self._tail = (start, data)
            with contextlib.suppress(OSError):  # the disk copy is an optimisation only
                path = self._source._tail_path(self._entry, start)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data)
        return data

    def _read_tail(self, start: int) -> bytes | None:
        path = self._source._tail_path(self._entry, start)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(data) != self._entry.size - start:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        self._tail = (start, data)
        return data
