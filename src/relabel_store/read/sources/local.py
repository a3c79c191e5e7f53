"""A store in a local directory: files read directly, shards memory-mapped, never via a link."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import BinaryIO

from relabel_store.format._io import open_regular
from relabel_store.format.manifest import safe_relpath, store_files
from relabel_store.read.sources import Blob, Source

__all__ = ["LocalSource", "map_file", "map_open_file"]


class LocalSource(Source):
    """Files of a store folder. Symlinks and other non-regular files inside it are refused
    (:class:`~relabel_store.errors.UnsafePathError`) before anything is read through them."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _open(self, path: str) -> BinaryIO | None:
        try:
            return open_regular(self.root, safe_relpath(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read(self, path: str) -> bytes | None:
        f = self._open(path)
        if f is None:
            return None
        with f:
            return f.read()

    def open_blob(self, path: str) -> Blob | None:
        f = self._open(path)
        if f is None:
            return None
        with f:
            return map_open_file(f)

    def list_files(self) -> list[str]:
        return store_files(self.root, include_scratch=True)

    def local_root(self) -> str | None:
        return str(self.root)


def map_open_file(f: BinaryIO) -> Blob:
    """Memory-map an open file read-only (an empty file becomes b"")."""
    if os.fstat(f.fileno()).st_size == 0:
        return b""
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def map_file(path: Path) -> Blob | None:
    """Memory-map a file read-only (empty files become b""); None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return map_open_file(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
