"""File primitives every module shares: hashing, writing atomically, opening without links.

One home for each, so that every checksum relabel-store computes or compares is the same
function, every file a reader might see half-written is replaced in one rename, and no file of a
store is ever read through a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO

from relabel_store.errors import UnsafePathError

_CHUNK = 1 << 20


def sha256_stream(f: BinaryIO) -> tuple[int, str]:
    """Size and sha256 hex digest of everything left in a binary stream."""
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def size_and_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Size and sha256 hex digest of a file, read once."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file."""
    return size_and_sha256(path)[1]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    The temporary file is unique per process and thread (concurrent writers never share one), is
    flushed to disk before the rename, and is removed if anything fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """The sha256 hex digest of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX flags (getattr: importable everywhere)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_OPEN_FOLDER = os.O_RDONLY | _DIRECTORY | _NOFOLLOW
# O_NONBLOCK: should a FIFO appear between the check and the open, the open must not hang.
_OPEN_FILE = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)


def open_regular(root: str | os.PathLike[str], relpath: str) -> BinaryIO:
    """Open the regular file ``root/relpath`` for reading, never through a symlink.

    ``relpath`` is a store-relative POSIX path (checked by ``safe_relpath`` beforehand). Every
    folder below ``root`` and the file itself are opened relative to their parent with
    ``O_NOFOLLOW``, so a symlink anywhere inside the store (to ``/etc/passwd``, to a folder
    outside) is refused before anything is read, hashed or mapped through it; ``root`` itself
    is the caller's choice and may be a link. Raises :class:`FileNotFoundError` when the file
    does not exist and :class:`UnsafePathError` for a symlink or anything that is not a regular
    file (folder, FIFO, device, socket). POSIX only (``dir_fd``), like the rest of the I/O.
    """
    parts = relpath.split("/")
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            kind = _kind_at(fd, name)
            if kind is None or (kind == "file" and not last):
                raise FileNotFoundError(errno.ENOENT, "no such file", relpath)
            if kind != ("file" if last else "folder"):
                raise _not_regular(root, parts[: i + 1], kind)
            # O_NOFOLLOW again: a file swapped for a link since the check fails to open
            child = os.open(name, _OPEN_FILE if last else _OPEN_FOLDER, dir_fd=fd)
            os.close(fd)
            fd = child
        kind = _kind(os.fstat(fd).st_mode)
        if kind != "file":
            raise _not_regular(root, parts, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """``"file"``, ``"folder"``, ``"symlink"``, ``"FIFO"``, ... for ``path`` itself (a symlink is
    not followed); None when nothing is there."""
    try:
        return _kind(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _kind_at(dir_fd: int, name: str) -> str | None:
    try:
        return _kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _not_regular(root: str | os.PathLike[str], parts: list[str], kind: str) -> UnsafePathError:
    where = Path(root, *parts)
    return UnsafePathError(
        f"refusing to read {where}: it is a {kind}. A store holds only regular files and folders, "
        "and nothing is read through a link or from a device; replace it with the real file, or "
        "re-download or regenerate the store."
    )
