"""Where a store's bytes come from: one small interface, one module per backend.

A :class:`Source` reads whole files (metadata, small arrays, the manifest) and opens *blobs*
(shard files) that the reader slices record by record. Local directories, a verified shard cache
over any remote, and plain range reads all implement it, and all pass the same conformance tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol


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
