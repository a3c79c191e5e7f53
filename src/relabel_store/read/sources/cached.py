"""Cache mode: a remote store read through a verified, shared, on-disk cache of whole files.

The first touch of a file (a shard, or a small metadata/array file) downloads it whole into the
cache entry, checks its size and sha256 against the store's manifest, and only then makes it
visible under its final name (temp file in the same folder + ``os.replace``). Later reads are
memory-mapped local reads, exactly as for a local store. A per-file ``flock`` makes concurrent
threads, DataLoader workers and processes on one node wait for one download instead of starting
their own; nobody ever sees a half-written file, and a download that fails its check is deleted
and reported, never cached. A download never reads more than the manifest's size plus one byte,
and temporary files of killed downloads are removed when the store is next opened.

Only files the manifest lists are ever fetched or written: the manifest was parsed (every path
checked by :func:`~relabel_store.format.manifest.safe_relpath`) before this source exists, and any other
path reads as absent without a request. Nothing in the cache is read through a symlink.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from relabel_store._parallel import run_all
from relabel_store.errors import CorruptDataError
from relabel_store.format._io import (
    atomic_write_bytes,
    atomic_write_stream,
    open_regular,
    regular_file_stat,
    size_and_sha256,
)
from relabel_store.format._lock import file_lock
from relabel_store.format.manifest import Manifest, ManifestEntry, safe_relpath
from relabel_store.format.metadata import (
    INDICES,
    KEYS,
    LABELS,
    MANIFEST_NAME,
    ROWS,
    SIZES,
    VALUES,
)
from relabel_store.read.cache import FILE_MODE, FILES_DIR, CacheEntry, private_folder
from relabel_store.read.sources import Blob, Remote, Source
from relabel_store.read.sources.local import map_open_file

__all__ = ["ShardCacheSource", "write_verified"]

_PREFETCH_THREADS = 8


class ShardCacheSource(Source):
    """Reads a remote store through its verified cache entry.

    ``manifest_raw`` is the store's ``manifest.json`` as fetched from the remote (or from the
    cache); it is parsed and checked here and written into the entry if not there yet.
    """

    def __init__(self, remote: Remote, entry: CacheEntry, manifest_raw: bytes) -> None:
        self._setup(remote, entry, manifest_raw)
        cached = self._cached_manifest()  # checks the entry's folders: a link raises
        if cached != manifest_raw:
            entry.folder(FILES_DIR)
            atomic_write_bytes(self.root / MANIFEST_NAME, manifest_raw, mode=FILE_MODE)
        with contextlib.suppress(OSError):  # housekeeping only; a read-only cache still works
            entry.remove_abandoned_temps()

    def _setup(self, remote: Remote, entry: CacheEntry, manifest_raw: bytes) -> None:
        self.remote = remote
        self.location = remote.location
        self.entry = entry
        self._manifest_raw = manifest_raw
        self.manifest = Manifest.from_bytes(manifest_raw, where=f"{remote.location}/manifest.json")
        self._entries = self.manifest.by_path()
        self._init_state()

    def _cached_manifest(self) -> bytes | None:
        self.entry.folder(create=False)
        if not private_folder(self.entry.root, self.root, create=False):
            return None
        try:
            with open_regular(self.root, MANIFEST_NAME) as f:
                return f.read()
        except FileNotFoundError:
            return None

    @property
    def root(self) -> Path:
        """The local folder the store's verified files are cached in (a store layout)."""
        return self.entry.files

    # -- per-process state (dropped by pickle, rebuilt after a fork) ------------------------------

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._complete = False
        self._prefetched = False
        self._state_lock = threading.Lock()
        self.downloads = 0  # files this process downloaded (and verified)
        self.bytes_downloaded = 0

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: locks may be held by threads that don't exist here
            self._init_state()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "directory": str(self.entry.directory),
            "root": str(self.entry.root),
            "manifest_raw": self._manifest_raw,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        entry = CacheEntry(state["directory"], state.get("root"))
        self._setup(state["remote"], entry, state["manifest_raw"])

    # -- Source interface -----------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        safe_relpath(path)
        if path == MANIFEST_NAME:
            return self._manifest_raw
        if path not in self._entries:
            return None
        self._prefetch_small()
        if self.ensure(path) is None:
            return None
        with open_regular(self.root, path) as f:  # never through a link
            return f.read()

    def open_blob(self, path: str) -> Blob | None:
        safe_relpath(path)
        if path == MANIFEST_NAME:
            return self._manifest_raw
        if self.ensure(path) is None:
            return None
        with open_regular(self.root, path) as f:  # never through a link
            return map_open_file(f)

    def list_files(self) -> list[str]:
        return sorted([*self._entries, MANIFEST_NAME])

    def local_root(self) -> str | None:
        """The cache folder once every file of the store is in it, else None."""
        self._check_pid()
        if not self._complete:
            self._complete = all(self._cached(e) for e in self._entries.values())
        return str(self.root) if self._complete else None

    def close(self) -> None:
        self.remote.close()

    # -- the cache ------------------------------------------------------------------------------

    def _cached(self, entry: ManifestEntry) -> bool:
        if not private_folder(self.entry.root, self.root, create=False):
            return False
        st = regular_file_stat(self.root, entry.path)
        return st is not None and st.st_size == entry.size

    def is_cached(self, path: str) -> bool:
        """Whether store file ``path`` is in the cache (verified when it was written)."""
        entry = self._entries.get(path)
        return entry is not None and self._cached(entry)

    def ensure(self, path: str) -> Path | None:
        """The verified local copy of ``path``, downloading it first if needed; None when the
        manifest does not list it (such a file does not exist in the store)."""
        entry = self._entries.get(path)
        if entry is None:
            return None
        final = self.root / entry.path
        if self._cached(entry):
            return final
        self._check_pid()
        self.entry.folder(FILES_DIR)
        with file_lock(self.entry.lock_path(entry.path), mode=FILE_MODE):
            if self._cached(entry):  # another thread or process finished it while we waited
                return final
            self._download(entry, final)
        return final

    def _download(self, entry: ManifestEntry, final: Path) -> None:
        def fill(out: BinaryIO) -> None:
            self.remote.download(entry.path, out, entry.size + 1)

        write_verified(self.root, entry, self.location, fill, mode=FILE_MODE)
        with self._state_lock:
            self.downloads += 1
            self.bytes_downloaded += entry.size

    def _prefetch_small(self) -> None:
        """Fetch the files a reader needs at open (metadata, keys, rows, labels, sizes) in
        parallel, once: fetching them one by one would make opening a large remote store wait
        for one round trip per file."""
        self._check_pid()
        if self._prefetched:
            return
        self._prefetched = True
        todo = [p for p, e in self._entries.items() if _read_at_open(p) and not self._cached(e)]
        self.fetch(todo)

    def fetch(
        self,
        paths: list[str] | None = None,
        *,
        threads: int = _PREFETCH_THREADS,
        done: Callable[[ManifestEntry], None] | None = None,
    ) -> int:
        """Download (and verify) ``paths``, or every file of the store; return how many files
        are in the cache afterwards. The first error is raised after the others finished.
        ``done`` is called (from the worker threads) with each file's entry once it is cached."""
        todo = sorted(self._entries) if paths is None else list(paths)

        def one(path: str) -> None:
            self.ensure(path)
            if done is not None and path in self._entries:
                done(self._entries[path])

        run_all(one, todo, threads)
        return len(todo)


def _read_at_open(path: str) -> bool:
    """Whether the reader reads store file ``path`` when it opens the store: the group's and the
    arrays' ``zarr.json`` and the key index's chunks. Anything else a manifest lists (shards
    come record by record; extra files, however many, only through ``pull`` or ``verify``) is
    not fetched at open."""
    name, _, rest = path.partition("/")
    if path == "zarr.json" or (name in (*_INDEX_ARRAYS, INDICES, VALUES) and rest == "zarr.json"):
        return True
    return name in _INDEX_ARRAYS and rest.startswith("c.") and "/" not in rest


_INDEX_ARRAYS = (KEYS, ROWS, LABELS, SIZES)


def write_verified(
    root: Path,
    entry: ManifestEntry,
    location: str,
    fill: Callable[[BinaryIO], None],
    *,
    mode: int | None = None,
) -> None:
    """Create ``root/entry.path`` from ``fill`` (which writes the bytes into a temp file beside
    it) only if they match ``entry``'s size and sha256; otherwise delete them and raise
    :class:`CorruptDataError` naming ``location``/path. Readers never see a partial file.

    Nothing is written through a symlink: a link (or other non-regular file) on the way to the
    file raises :class:`~relabel_store.errors.UnsafePathError`.
    """
    final = root / entry.path
    regular_file_stat(root, entry.path)  # refuses links on the way, before anything is created
    if mode is None:
        final.parent.mkdir(parents=True, exist_ok=True)
    else:  # the cache: private folders
        private_folder(root, final.parent)
    regular_file_stat(root, entry.path)  # ... and after the folders exist

    def check(tmp: Path) -> None:
        size, digest = size_and_sha256(tmp)
        if size != entry.size or digest != entry.sha256:
            got = (
                f"more than the manifest's {entry.size} bytes (stopped reading there)"
                if size > entry.size
                else f"{size} bytes with sha256 {digest}"
            )
            raise CorruptDataError(
                f"{location}/{entry.path}: downloaded {got}, but the manifest says {entry.size} "
                f"bytes with sha256 {entry.sha256}. The download was discarded and nothing was "
                "cached. The remote copy is damaged or was changed under its pinned revision; "
                "tell the store's publisher (re-running `relabel-store push` from the verified "
                "local store repairs it)."
            )

    atomic_write_stream(final, fill, check, mode=mode)
