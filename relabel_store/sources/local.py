"""A store in a local directory: files read directly, shards memory-mapped."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from relabel_store.manifest import safe_relpath
from relabel_store.sources import Blob, Source


class LocalSource(Source):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, path: str) -> Path:
        return self.root / safe_relpath(path)

    def read(self, path: str) -> bytes | None:
        try:
            return self._path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_blob(self, path: str) -> Blob | None:
        return map_file(self._path(path))

    def list_files(self) -> list[str]:
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )

    def local_root(self) -> str | None:
        return str(self.root)


def map_file(path: Path) -> Blob | None:
    """Memory-map a file read-only (empty files become b""); None when it does not exist."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (FileNotFoundError, NotADirectoryError):
        return None
