"""Locks: the write lock of a store (one writer at a time, released when its process ends) and
the per-file locks of the download cache (:func:`file_lock`).

``generate`` (and any :class:`~relabel_store.write.writer.StoreWriter`) holds an exclusive ``flock`` on
``_progress/lock`` inside the store while it writes. The kernel drops the lock when the holder's
process exits, however it exits (``kill -9`` included), so a lock is never stale and nothing
needs cleaning up by hand. The file records who holds it (pid, host, start time), which is what
a refused writer reports. ``flock`` on NFS is emulated with POSIX record locks, which need the
file open for writing: it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from relabel_store.errors import StoreLockedError, UnsafePathError
from relabel_store.format._io import file_kind
from relabel_store.format.metadata import PROGRESS_DIR

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writers are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "lock"
#: Write locks this process holds. A forked child (a decode worker) closes its copies at once:
#: a flock belongs to the open file, which fork shares, so a child outliving a killed writer by
#: a second would otherwise keep the store locked, and a rerun refused.
_HELD: weakref.WeakSet[WriteLock] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    """In a forked child: close every inherited write-lock descriptor (the parent's lock stays
    held through its own), and forget them, so the child never closes a reused number."""
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class WriteLock:
    """An exclusive lock on the store at ``root``; :meth:`acquire` it, :meth:`release` it (or
    let it be garbage collected)."""

    def __init__(self, root: Path, fd: int) -> None:
        self.root = root
        self._fd: int | None = fd
        _HELD.add(self)

    @classmethod
    def acquire(cls, root: Path) -> WriteLock:
        """Take the lock at once, or raise :class:`StoreLockedError` naming its holder.

        ``root/_progress/`` must exist (the lock lives there, out of the manifest's way).
        """
        path = root / PROGRESS_DIR / LOCK_NAME
        kind = file_kind(path.parent)
        if kind not in ("folder", None):
            raise UnsafePathError(
                f"{path.parent} is a {kind}, not a folder: refusing to write through it"
            )
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileNotFoundError:
            raise _changed(root) from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreLockedError(
                        f"{root} is being written by another process ({_holder(fd)}). Wait for "
                        "it to finish, or stop it first; its finished shards are kept and a "
                        "rerun resumes from them. Two writers would do every shard twice and "
                        "corrupt each other's shards."
                    ) from None
            try:  # the holder we waited on may have finished and removed _progress/ meanwhile
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                raise _changed(root)
            host = socket.gethostname()
            started = datetime.now(UTC).isoformat(timespec="seconds")
            info = json.dumps({"pid": os.getpid(), "host": host, "started": started}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(root, fd)

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        if fd is not None:
            os.close(fd)

    def release_and_remove_progress(self) -> None:
        """Delete ``_progress/`` (the lock file with it) while still holding the lock, then
        release it: the last step of finishing a store."""
        shutil.rmtree(self.root / PROGRESS_DIR, ignore_errors=True)
        self.release()

    def __del__(self) -> None:
        self.release()


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {info['pid']} on {info['host']}, since {info['started']}"
    return "holder unknown"


def _changed(root: Path) -> StoreLockedError:
    return StoreLockedError(
        f"another process finished or replaced the store at {root} while this one was starting; "
        "run the command again."
    )


@contextlib.contextmanager
def file_lock(path: Path, *, mode: int = 0o644) -> Iterator[None]:
    """An exclusive lock on ``path`` shared by threads and processes (flock: every open() has its
    own lock, so two threads of one process exclude each other too). Released on close, also
    when the holder dies. The lock file is never opened through a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
