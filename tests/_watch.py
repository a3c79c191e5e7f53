"""Prove that a file was never opened: Linux inotify on the file itself.

A symlink in a store points at a canary outside it; any open, read or memory map of the canary
through the link (or by any other path) raises an ``IN_OPEN`` event on the canary's inode, which
:meth:`OpenWatch.opened` reports. A ``stat`` does not count: it reads no content.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_IN_ACCESS = 0x001
_IN_OPEN = 0x020

_libc = ctypes.CDLL(None, use_errno=True)


class OpenWatch:
    """Counts the opens and reads of ``paths`` (files, or every file in a folder) from now on."""

    def __init__(self, *paths: Path) -> None:
        self._fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._events = 0
        for path in paths:
            targets = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            for target in [path, *targets]:
                if (
                    _libc.inotify_add_watch(self._fd, os.fsencode(target), _IN_OPEN | _IN_ACCESS)
                    < 0
                ):
                    raise OSError(ctypes.get_errno(), f"cannot watch {target}")

    def opened(self) -> bool:
        """Whether any watched file was opened or read since the watch started."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return self._events > 0
            self._events += len(data)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
