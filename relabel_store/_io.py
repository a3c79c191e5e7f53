"""File primitives every module shares: hashing a file, and writing one atomically.

One home for each, so that every checksum relabel-store computes or compares is the same
function, and every file a reader might see half-written is replaced in one rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

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
