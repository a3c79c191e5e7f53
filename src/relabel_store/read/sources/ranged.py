"""Range mode: sparse access to a remote store without downloading whole shards.

Small files (metadata, keys, rows, labels, sizes) go through the same verified cache as in cache
mode. Shard files are served by :class:`RangeBlob`: every slice the reader asks for is one ranged
request, with no read-ahead. A shard's index (the tail the reader parses first) is kept on disk
under the entry's ``ranges/``, keyed by the shard's sha256, so each shard's index crosses the
network once per machine; after that, a record costs one ranged request per record array. A shard
that is already whole in the cache (from cache mode, or ``relabel-store pull``) is read locally.

Range mode cannot check a shard's sha256 (it never sees the whole file); what it reads is still
checked by the format's own checksums: the shard index's crc32c (checked before the index is kept
on disk, and again whenever a kept one is read back) and each record's zstd frame checksum. Use
cache mode for training.
"""

from __future__ import annotations

import contextlib

from relabel_store.errors import ArgumentTypeError, ConfigurationError, CorruptDataError
from relabel_store.format._io import open_regular
from relabel_store.format._layout import parse_shard_index
from relabel_store.format.manifest import ManifestEntry, safe_relpath
from relabel_store.format.metadata import MANIFEST_NAME
from relabel_store.read.sources import Blob
from relabel_store.read.sources.cached import ShardCacheSource
from relabel_store.read.sources.local import map_open_file

__all__ = ["MAX_CACHED_TAIL", "RangeBlob", "RangeSource"]

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
            with open_regular(self.root, entry.path) as f:  # never through a link
                return map_open_file(f)
        return RangeBlob(self, entry)


class RangeBlob:
    """One remote shard file: ``len()`` from the manifest, each slice one ranged request."""

    def __init__(self, source: RangeSource, entry: ManifestEntry) -> None:
        self._source = source
        self._entry = entry
        self._where = f"{source.location}/{entry.path}"
        self._tail: tuple[int, bytes] | None = None  # (start, bytes start:size)
        self.requests = 0

    def __len__(self) -> int:
        return self._entry.size

    def __getitem__(self, item: slice) -> bytes:
        if not isinstance(item, slice):
            raise ArgumentTypeError("RangeBlob supports slices only")
        size = self._entry.size
        start, stop, step = item.indices(size)
        if step != 1:
            raise ConfigurationError("RangeBlob supports contiguous slices only")
        if stop <= start:
            return b""
        tail = self._tail
        if tail is not None and start >= tail[0]:
            return tail[1][start - tail[0] : stop - tail[0]]
        keep = stop == size and size - start <= MAX_CACHED_TAIL and _is_index_size(size - start)
        if keep:
            kept = self._read_kept_tail(start)
            if kept is not None:
                return kept
        data = self._source.remote.read_range(self._entry.path, start, stop)
        self.requests += 1
        if len(data) != stop - start:
            raise CorruptDataError(
                f"{self._where}: asked for bytes {start}:{stop}, got {len(data)} bytes; the "
                f"remote file is not the one the manifest describes ({size} bytes)."
            )
        if keep:
            _check_index(data, self._where)  # raises before anything is kept
            self._tail = (start, data)
            with contextlib.suppress(OSError):  # the disk copy is an optimisation only
                self._source.entry.write_tail(self._entry.sha256, size - start, data)
        return data

    def _read_kept_tail(self, start: int) -> bytes | None:
        """The shard index kept on disk, if it is there and passes its crc32c; a kept copy that
        fails is deleted (and fetched again by the caller)."""
        entry = self._source.entry
        length = self._entry.size - start
        data = entry.read_tail(self._entry.sha256, length)
        if data is None:
            return None
        try:
            _check_index(data, self._where)
        except CorruptDataError:
            with contextlib.suppress(OSError):
                entry.tail_path(self._entry.sha256, length).unlink()
            return None
        self._tail = (start, data)
        return data


def _is_index_size(n: int) -> bool:
    """Whether ``n`` bytes can be a shard index: 16 per inner chunk plus a 4-byte crc32c."""
    return n >= 20 and (n - 4) % 16 == 0


def _check_index(data: bytes, where: str) -> None:
    parse_shard_index(data, (len(data) - 4) // 16, where)
