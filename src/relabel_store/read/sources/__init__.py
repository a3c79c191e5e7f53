"""Where a store's bytes come from: two small interfaces, one module per backend.

A :class:`Source` is what the reader reads a store through: whole files (metadata, small arrays,
the manifest) and *blobs* (shard files) that it slices record by record. Implementations:
:class:`~relabel_store.read.sources.local.LocalSource` (a local folder),
:class:`~relabel_store.read.sources.cached.ShardCacheSource` (a remote store through a verified
cache) and :class:`~relabel_store.read.sources.ranged.RangeSource` (ranged reads).

A :class:`Remote` is raw byte access to one remote store, below the verified cache.
Implementations: :class:`~relabel_store.read.sources.hub.HubRemote` (a Hub repo at a pinned commit)
and :class:`~relabel_store.read.sources.fsspec.FsspecRemote` (any fsspec URL).

Every implementation passes the same conformance tests (``tests/test_sources.py``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import BinaryIO, Protocol, TypeVar

from relabel_store.errors import ConfigurationError, RemoteError

T = TypeVar("T", int, float)

__all__ = ["Blob", "Remote", "Source", "is_offline", "offline_error"]


class Blob(Protocol):
    """A file the reader slices: ``len(blob)`` is its size, ``blob[a:b]`` its bytes."""

    def __len__(self) -> int: ...

    def __getitem__(self, item: slice) -> bytes: ...


class Source(ABC):
    """Read access to the files of one store, addressed by store-relative POSIX paths."""

    #: Human-readable location, used in every error message.
    location: str

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """The whole file, or None when it does not exist."""

    @abstractmethod
    def open_blob(self, path: str) -> Blob | None:
        """A sliceable view of a (shard) file, or None when it does not exist."""

    @abstractmethod
    def list_files(self) -> list[str]:
        """Every file path in the store, sorted."""

    def local_root(self) -> str | None:
        """The store's directory when its files all live on the local disk, else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files and connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


class Remote(ABC):
    """Byte access to one remote store: a Hub repo at a pinned commit, or an fsspec URL.

    Paths are store-relative and already checked (they come from a parsed manifest).
    Implementations pickle without open connections (they are shipped to DataLoader workers
    inside a source), reconnect lazily, also after a fork, and honour huggingface_hub's offline
    switch (:func:`is_offline`). Transfer failures raise :class:`RemoteError` naming the file.
    """

    #: Human-readable location (``hf://datasets/org/name@sha`` or the URL), used in errors.
    location: str

    @abstractmethod
    def fetch(self, path: str) -> bytes | None:
        """The whole (small) file, or None when the remote has no such file."""

    @abstractmethod
    def download(self, path: str, out: BinaryIO, max_bytes: int) -> None:
        """Stream the file into ``out``, stopping after ``max_bytes`` bytes (a file larger than
        its manifest entry is never read in full). Raises when the file is missing or the
        transfer fails."""

    @abstractmethod
    def read_range(self, path: str, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of the file (one ranged request, no read-ahead)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Drop connections and per-process state."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


#: Seconds a connection may take to open, or stay silent while an answer is awaited or read,
#: before the request fails; and how many times a request that failed so (or dropped) is tried
#: again. A stall thus fails within (retries + 1) x timeout: 45 s by default.
TIMEOUT_ENV = "RELABEL_STORE_TIMEOUT"
RETRIES_ENV = "RELABEL_STORE_RETRIES"
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_RETRIES = 2


def network_timeout() -> float:
    """Connect and read timeout of every remote request, in seconds: ``$RELABEL_STORE_TIMEOUT``,
    else 15."""
    return _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, float, 0.001)


def network_retries() -> int:
    """How many times a remote request that timed out or dropped is tried again:
    ``$RELABEL_STORE_RETRIES``, else 2."""
    return _env_number(RETRIES_ENV, DEFAULT_RETRIES, int, 0)


def _env_number(name: str, default: T, kind: type[T], low: T) -> T:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < low or value != value:  # NaN is not a number here
        raise ConfigurationError(f"{name}={text!r}: expected a number >= {low}")
    return value


def is_offline() -> bool:
    """huggingface_hub's offline switch (``HF_HUB_OFFLINE=1``), which relabel-store honours for
    every remote, not just the Hub."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def offline_error(what: str) -> RemoteError:
    """The error for needing ``what`` from a remote while offline."""
    return RemoteError(
        f"{what} is not in the relabel-store cache, and HF_HUB_OFFLINE=1 forbids downloading it. "
        "Open the store once online (or run `relabel-store pull`) to fill the cache, or unset "
        "HF_HUB_OFFLINE."
    )
