"""Where ``push`` publishes to: one small interface, one module per backend.

:mod:`relabel_store.publish.push` holds the one publishing plan (what to upload, what is stale,
manifest last, verify after); a :class:`Destination` only says what it holds and carries out
changes. Implementations: :class:`~relabel_store.publish.destinations.hub.HubDestination` (a branch of a
Hub dataset repo, one commit per change) and
:class:`~relabel_store.publish.destinations.fsspec.FsspecDestination` (any fsspec URL, file copies).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from relabel_store.format.manifest import ManifestEntry

__all__ = ["Destination", "RemoteFile"]


@dataclass(frozen=True)
class RemoteFile:
    """A file a destination holds, as its listing describes it."""

    size: int
    #: sha256 of the content, when the listing gives it (LFS/Xet files on the Hub).
    sha256: str | None = None
    #: git blob id, when the listing gives it (regular files on the Hub).
    blob_id: str | None = None


#: What to write: a store-relative path and the local file (or the bytes) to put there.
Upload = tuple[ManifestEntry, Path | bytes]


class Destination(ABC):
    """A place a store is published to, addressed by store-relative POSIX paths."""

    #: Human-readable location, used in messages.
    location: str

    @abstractmethod
    def open(self) -> dict[str, RemoteFile]:
        """Prepare the destination (create what is missing) and list the files it holds."""

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """The bytes of a (small) file the destination holds, or None when it has none."""

    @abstractmethod
    def list_files(self) -> dict[str, RemoteFile]:
        """The files the destination holds now (after the last change)."""

    @abstractmethod
    def holds(self, found: RemoteFile | None, entry: ManifestEntry, local: Path | bytes) -> bool:
        """Whether ``found`` holds exactly the bytes ``entry`` describes (``local`` is the
        verified local copy, for destinations that compare by another hash)."""

    @abstractmethod
    def change(
        self, add: list[Upload], delete: list[str], message: str, *, last: bool = False
    ) -> str | None:
        """Delete, then write files, as one change; return its commit id (None for
        destinations without commits). ``last`` marks the change that completes the store."""

    @abstractmethod
    def published(self) -> tuple[str, str, str | None]:
        """(location to load the store from, a browsable URL, the commit or None)."""
