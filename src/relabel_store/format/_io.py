"""File primitives every module shares: hashing, writing atomically, and reaching a store's files
without following symlinks.

One home for each, so that every checksum relabel-store computes or compares is the same
function, every file a reader might see half-written is replaced in one rename, and no file of a
store is ever read through a link: :func:`open_regular` opens one (race-free, by ``dir_fd``),
:func:`regular_file_stat` checks one before a write or a download.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from relabel_store.errors import StoreNotFoundError, UnsafePathError

_CHUNK = 1 << 20
#: ``.<name>.<host>.<pid>.<thread>.tmp``: what :func:`temp_path` names a file being written.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.\d+\.tmp$")
#: A temporary file untouched this long is abandoned whoever wrote it (no writer pauses an hour).
ABANDONED_AFTER_S = 3600.0


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


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix
    (:func:`atomic_write_stream` with bytes already in memory)."""
    atomic_write_stream(path, lambda f: f.write(data), mode=mode)


def atomic_write_stream(
    path: str | os.PathLike[str],
    fill: Callable[[BinaryIO], object],
    check: Callable[[Path], None] | None = None,
    *,
    mode: int | None = None,
) -> None:
    """Create ``path`` from the bytes ``fill`` writes into a temporary sibling, in one rename:
    readers see the old file or the new one, never a mix.

    ``check(temp)`` runs on the finished temporary file before the rename and may raise to
    discard it (a download whose checksum is wrong). The temporary file is unique per process
    and thread (concurrent writers never share one), is flushed to disk before the rename, and
    is removed if anything fails. ``mode`` (0o600 in the cache) creates it with exactly those
    permissions, never through a link; by default the umask decides.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        if mode is None:
            opened = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
            opened = os.fdopen(os.open(tmp, flags, mode), "wb")
            os.chmod(opened.fileno(), mode)  # the umask may have taken bits away: set exactly
        with opened as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
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
                raise StoreNotFoundError(errno.ENOENT, "no such file", relpath)
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
    """``"file"``, ``"folder"``, ``"symbolic link"``, ``"FIFO"``, ... for ``path`` itself (a symlink is
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
        return "symbolic link"
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


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The hidden sibling a writer fills before renaming it onto ``path``.

    Unique per host, process and thread, so concurrent writers never share one and
    :func:`is_abandoned_temp` can tell a live writer's file from one a killed process left.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{threading.get_ident()}.tmp")


def is_abandoned_temp(path: str | os.PathLike[str], *, now: float | None = None) -> bool:
    """Whether ``path`` is a :func:`temp_path` file whose writer is gone: a process of this host
    that no longer exists, or any writer that has not touched it for :data:`ABANDONED_AFTER_S`.
    A live writer's file is never abandoned (it keeps writing; its process exists)."""
    path = Path(path)
    m = _TEMP_NAME.match(path.name)
    if m is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if age > ABANDONED_AFTER_S:
        return True
    return m["host"] == _host() and not _process_exists(int(m["pid"]))


def remove_abandoned_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the abandoned temporary files under ``folder`` (see :func:`is_abandoned_temp`);
    return what was removed. Symlinks are not followed."""
    removed = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            p = Path(dirpath) / name
            if name.endswith(".tmp") and is_abandoned_temp(p):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def regular_file_stat(root: str | os.PathLike[str], relpath: str) -> os.stat_result | None:
    """The ``lstat`` of ``root/relpath`` if it is a regular file reached through real
    directories; None when it does not exist.

    Raises :class:`UnsafePathError` when any component below ``root`` is a symlink, or the
    file (or a folder on the way) is something else (a FIFO, a device, a file where a folder
    belongs): reading or writing through it would touch something outside the store.
    ``root`` itself may be a symlink (the user chose it). ``relpath`` must already be a safe
    relative POSIX path.
    """
    current = Path(root)
    parts = relpath.split("/")
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = current.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(
                f"refusing {current}: it is a symbolic link, and relabel-store never follows "
                "links inside a store or its cache (it could point anywhere). Replace it with "
                "the real file, or delete it."
            )
        if (last and not stat.S_ISREG(st.st_mode)) or (not last and not stat.S_ISDIR(st.st_mode)):
            kind = "a regular file" if last else "a folder"
            raise UnsafePathError(
                f"refusing {current}: it should be {kind} but is not (a device, FIFO, socket or "
                "misplaced file). Remove it."
            )
    return st


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
