"""The fsspec backend: a store at any fsspec URL (``s3://``, ``gs://``, ``file://``, ...).

Reads are explicit about sizes (no fsspec read-ahead: its default 5 MiB block would turn a record
read into a multi-megabyte transfer). On the local file system, symlinks and other non-regular
files inside the store are refused, exactly as for a local store: a ``file://`` URL must not read
anything outside the store.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from relabel_store.errors import CorruptDataError, RemoteError
from relabel_store.format._io import regular_file_stat
from relabel_store.format.manifest import safe_relpath
from relabel_store.read.sources import Remote, is_offline, offline_error

__all__ = ["FsspecRemote"]

_DOWNLOAD_CHUNK = 1 << 20


class FsspecRemote(Remote):
    """A store at an fsspec URL; ``storage_options`` go to fsspec."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.location = self.url
        self._fs: tuple[int, Any, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    def _filesystem(self) -> tuple[Any, str]:
        cur = self._fs
        if cur is None or cur[0] != os.getpid():
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            cur = self._fs = (os.getpid(), fs, root.rstrip("/"))
        return cur[1], cur[2]

    def _path(self, path: str) -> tuple[Any, str]:
        """The file system and full path of store file ``path``; on the local file system, only
        a regular file reached without symlinks (UnsafePathError otherwise)."""
        if is_offline():
            raise offline_error(f"{self.location}/{path}")
        from fsspec.implementations.local import LocalFileSystem

        fs, root = self._filesystem()
        path = safe_relpath(path)
        if isinstance(fs, LocalFileSystem):
            regular_file_stat(root, path)
        return fs, f"{root}/{path}"

    def fetch(self, path: str) -> bytes | None:
        fs, p = self._path(path)
        try:
            return bytes(fs.cat_file(p))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise RemoteError(f"{self.location}/{path}: {exc}") from None

    def download(self, path: str, out: BinaryIO, max_bytes: int) -> None:
        fs, p = self._path(path)
        try:
            with fs.open(p, "rb", block_size=_DOWNLOAD_CHUNK) as f:
                left = max_bytes
                while left > 0 and (chunk := f.read(min(_DOWNLOAD_CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
        except FileNotFoundError:
            raise CorruptDataError(
                f"{self.location}/{path}: the manifest lists this file but it does not exist; "
                "the upload is incomplete or damaged."
            ) from None
        except OSError as exc:
            raise RemoteError(
                f"{self.location}/{path}: {exc}. Files already downloaded and verified stay in "
                "the cache: re-running the same command resumes where it stopped."
            ) from None

    def read_range(self, path: str, start: int, stop: int) -> bytes:
        fs, p = self._path(path)
        try:
            return bytes(fs.cat_file(p, start=start, end=stop))
        except OSError as exc:
            raise RemoteError(f"{self.location}/{path}: {exc}") from None

    def close(self) -> None:
        self._fs = None
