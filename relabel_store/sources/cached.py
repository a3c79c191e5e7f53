"""Cache mode: a remote store read through a verified, shared, on-disk cache of whole files.

The first touch of a file (a shard, or a small metadata/array file) downloads it whole into the
cache directory, checks its size and sha256 against the store's manifest, and only then makes it
visible under its final name (temp file in the same folder + ``os.replace``). Later reads are
memory-mapped local reads, exactly as for a local store. A per-file ``flock`` makes concurrent
threads, DataLoader workers and processes on one node wait for one download instead of starting
their own; nobody ever sees a half-written file, and a download that fails its check is deleted
and reported, never cached.

Only files the manifest lists are ever fetched or written: the manifest was parsed (every path
checked by :func:`~relabel_store.manifest.safe_relpath`) before this source exists, and any other
path reads as absent without a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from relabel_store._io import atomic_write_bytes, size_and_sha256
from relabel_store.errors import CorruptDataError
from relabel_store.format import ERRORS_NAME, INDICES, MANIFEST_NAME, VALUES
from relabel_store.manifest import Manifest, ManifestEntry, safe_relpath
from relabel_store.sources import Blob, Source
from relabel_store.sources.local import map_file

try:  # POSIX; elsewhere atomic renames alone keep readers safe (downloads may then overlap)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FILES_DIR = "files"  # verified store files, laid out as in the store
LOCKS_DIR = "locks"  # one lock file per cached file
RANGES_DIR = "ranges"  # range mode: cached shard-index tails, keyed by the shard's sha256
_PREFETCH_THREADS = 8


class Remote(ABC):
    """Byte access to one remote store: a Hub repo at a pinned commit, or an fsspec URL.

    Implementations must pickle without open connections (they are shipped to DataLoader
    workers inside a source) and reconnect lazily, also after a fork.
    """

    #: Human-readable location (``hf://datasets/org/name@sha`` or the URL), used in errors.
    location: str

    @abstractmethod
    def fetch(self, path: str) -> bytes | None:
        """The whole (small) file, or None when the remote has no such file."""

    @abstractmethod
    def download(self, path: str, out: BinaryIO) -> None:
        """Stream the whole file into ``out``; raise when it is missing or the transfer fails."""

    @abstractmethod
    def read_range(self, path: str, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of the file (one ranged request)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Drop connections and per-process state."""


class ShardCacheSource(Source):
    """Reads a remote store through a verified cache entry directory.

    ``directory`` holds ``files/`` (the store's verified files), ``locks/`` and ``ranges/``.
    ``manifest_raw`` is the store's ``manifest.json`` as fetched from the remote (or from the
    cache); it is parsed and checked here and written into ``files/`` if not there yet.
    """

    def __init__(
        self, remote: Remote, directory: str | os.PathLike[str], manifest_raw: bytes
    ) -> None:
        self.remote = remote
        self.location = remote.location
        self.directory = Path(directory)
        self._manifest_raw = manifest_raw
        self.manifest = Manifest.from_bytes(manifest_raw, where=f"{remote.location}/manifest.json")
        self._entries = self.manifest.by_path()
        self._init_state()
        cached = self.root / MANIFEST_NAME
        if not cached.is_file() or cached.read_bytes() != manifest_raw:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, manifest_raw)

    @property
    def root(self) -> Path:
        """The local folder the store's verified files are cached in (a store layout)."""
        return self.directory / FILES_DIR

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
            "directory": str(self.directory),
            "manifest_raw": self._manifest_raw,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.remote = state["remote"]
        self.location = self.remote.location
        self.directory = Path(state["directory"])
        self._manifest_raw = state["manifest_raw"]
        self.manifest = Manifest.from_bytes(
            self._manifest_raw, where=f"{self.location}/manifest.json"
        )
        self._entries = self.manifest.by_path()
        self._init_state()

    # -- Source interface -----------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        safe_relpath(path)
        if path == MANIFEST_NAME:
            return self._manifest_raw
        if path not in self._entries:
            return None
        self._prefetch_small()
        local = self.ensure(path)
        return None if local is None else local.read_bytes()

    def open_blob(self, path: str) -> Blob | None:
        safe_relpath(path)
        if path == MANIFEST_NAME:
            return self._manifest_raw
        local = self.ensure(path)
        return None if local is None else map_file(local)

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
        try:
            return (self.root / entry.path).stat().st_size == entry.size
        except (FileNotFoundError, NotADirectoryError):
            return False

    def is_cached(self, path: str) -> bool:
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
        with _file_lock(self._lock_path(entry.path)):
            if self._cached(entry):  # another thread or process finished it while we waited
                return final
            self._download(entry, final)
        return final

    def _lock_path(self, path: str) -> Path:
        name = hashlib.sha256(path.encode()).hexdigest()[:32]
        return self.directory / LOCKS_DIR / f"{name}.lock"

    def _download(self, entry: ManifestEntry, final: Path) -> None:
        write_verified(final, entry, self.location, lambda f: self.remote.download(entry.path, f))
        with self._state_lock:
            self.downloads += 1
            self.bytes_downloaded += entry.size

    def _prefetch_small(self) -> None:
        """Fetch the files a reader needs at open (metadata, keys, rows, labels, sizes) in
        parallel, once: there is one labels and one sizes file per shard, and fetching them one
        by one would make opening a large remote store wait for hundreds of round trips."""
        self._check_pid()
        if self._prefetched:
            return
        self._prefetched = True
        todo = [
            p
            for p, e in self._entries.items()
            if p.split("/", 1)[0] not in (INDICES, VALUES)
            and p != ERRORS_NAME
            and not self._cached(e)
        ]
        self.fetch(todo)

    def fetch(self, paths: list[str] | None = None, *, threads: int = _PREFETCH_THREADS) -> int:
        """Download (and verify) ``paths``, or every file of the store; return how many files
        are in the cache afterwards. The first error is raised after the others finished."""
        todo = sorted(self._entries) if paths is None else list(paths)
        if len(todo) <= 1 or threads <= 1:
            for p in todo:
                self.ensure(p)
            return len(todo)
        with ThreadPoolExecutor(min(threads, len(todo))) as pool:
            futures = [pool.submit(self.ensure, p) for p in todo]
            errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc
        return len(todo)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` shared by threads and processes (flock: every open() has its
    own lock, so two threads of one process exclude each other too). Released on close, also
    when the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_verified(
    final: Path, entry: ManifestEntry, location: str, fill: Callable[[BinaryIO], None]
) -> None:
    """Create ``final`` from ``fill`` (which writes the bytes into a temp file beside it) only
    if they match ``entry``'s size and sha256; otherwise delete them and raise
    :class:`CorruptDataError` naming ``location``/path. Readers never see a partial file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        final.unlink()  # a file of the wrong size: not ours (interrupted copy, edits); replace it
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            fill(f)
        size, digest = size_and_sha256(tmp)
        if size != entry.size or digest != entry.sha256:
            raise CorruptDataError(
                f"{location}/{entry.path}: downloaded {size} bytes with sha256 {digest}, but the "
                f"manifest says {entry.size} bytes with sha256 {entry.sha256}. The download was "
                "discarded and nothing was cached. The remote copy is damaged or was changed "
                "under its pinned revision; tell the store's publisher (re-running "
                "`relabel-store push` from the verified local store repairs it)."
            )
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
