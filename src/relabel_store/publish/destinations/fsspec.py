"""Publishing to any fsspec URL (``s3://``, ``gs://``, ``file://``, ...): plain file copies.

A file counts as already there when its size and sha256 match (the remote copy is read back to
hash it). On the local file system nothing is written or read through a symlink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relabel_store.errors import ConfigurationError, RemoteError, redact
from relabel_store.format._io import regular_file_stat, sha256_stream
from relabel_store.format.manifest import ManifestEntry
from relabel_store.publish.destinations import Destination, RemoteFile, Upload

__all__ = ["FsspecDestination"]

_CHUNK = 1 << 20


class FsspecDestination(Destination):
    """The folder at ``url``; ``storage_options`` go to fsspec."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        from fsspec.implementations.local import LocalFileSystem

        from relabel_store.read.sources.fsspec import open_filesystem

        self.location = redact(url.rstrip("/"))  # credentials stay in the URL fsspec gets
        self._fs, self._base = open_filesystem(url.rstrip("/"), storage_options)
        self._local = isinstance(self._fs, LocalFileSystem)
        self._hashed: dict[str, tuple[int, str]] = {}  # path -> (size, sha256) read back

    def _full(self, path: str) -> str:
        if self._local:
            regular_file_stat(self._base, path)  # UnsafePathError for links on the way
        return f"{self._base}/{path}"

    def open(self) -> dict[str, RemoteFile]:
        try:
            is_file = self._fs.isfile(self._base)
        except OSError as exc:
            raise RemoteError(f"{self.location}: cannot reach it ({redact(str(exc))})") from None
        if is_file:
            raise ConfigurationError(
                f"{self.location} is a file, not a folder: give the URL of a folder to push the "
                "store into (it is created if missing)."
            )
        return self.list_files()

    def read(self, path: str) -> bytes | None:
        try:
            return bytes(self._fs.cat_file(self._full(path)))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(f"{self.location}/{path}: {redact(str(exc))}") from None

    def list_files(self) -> dict[str, RemoteFile]:
        try:
            found = self._fs.find(self._base, detail=True)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RemoteError(f"{self.location}: cannot list files ({redact(str(exc))})") from None
        out = {}
        for full, info in found.items():
            rel = full[len(self._base) :].lstrip("/") if full.startswith(self._base) else None
            if rel and info.get("type", "file") == "file":
                out[rel] = RemoteFile(size=int(info.get("size") or 0))
        return out

    def holds(self, found: RemoteFile | None, entry: ManifestEntry, local: Path | bytes) -> bool:
        if found is None or found.size != entry.size:
            return False
        hashed = self._hashed.get(entry.path)
        if hashed is None:
            try:
                with self._fs.open(self._full(entry.path), "rb", block_size=_CHUNK) as f:
                    hashed = self._hashed[entry.path] = sha256_stream(f)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise RemoteError(f"{self.location}/{entry.path}: {redact(str(exc))}") from None
        return hashed == (entry.size, entry.sha256)

    def change(
        self, add: list[Upload], delete: list[str], message: str, *, last: bool = False
    ) -> str | None:
        try:
            for path in delete:
                self._hashed.pop(path, None)
                self._fs.rm_file(self._full(path))
            for entry, local in add:
                self._hashed.pop(entry.path, None)
                dest = self._full(entry.path)
                self._fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
                self._full(entry.path)  # the folders just made are real folders
                if isinstance(local, bytes):
                    self._fs.pipe_file(dest, local)
                else:
                    self._fs.put_file(str(local), dest)
        except OSError as exc:
            raise RemoteError(f"{self.location}: {redact(str(exc))}") from None
        return None

    def published(self) -> tuple[str, str, str | None]:
        return self.location, self.location, None

    def __repr__(self) -> str:
        return f"FsspecDestination({self.location!r})"
