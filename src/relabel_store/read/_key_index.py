"""The key index of a large store, memory-mapped from a file in the cache instead of held.

A store's key index (sorted keys, physical rows, labels, image sizes) is zstd-compressed in the
store; decoding it into every process costs about 25 bytes per record of private memory: 330 MB
per process and per spawned DataLoader worker at ImageNet-21k's 13M records. For stores of at
least :data:`MIN_RECORDS` records the reader decodes it once, writes it uncompressed to
``<cache>/key-index/<manifest digest>.keyindex``, and maps that file read-only: every process
on the machine then shares the same page-cache pages (a binary search touches about 24 of
them), and a later open maps the file in milliseconds instead of decoding.

The file is derived data, named by the manifest digest of the store it indexes (the digest
covers the key arrays' sha256), written atomically, and checked on load (its header against the
store's record count and the dtypes the reader uses, its size against the header; the keys'
order is checked in full before the file is written, on a sample of 4,097 keys when it is
mapped). It holds no pickle: a JSON header, then raw little-endian arrays at page-aligned offsets.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from relabel_store.errors import FormatError
from relabel_store.format._io import atomic_write_stream
from relabel_store.format.metadata import MAX_KEY_BYTES

#: Stores smaller than this keep their index in memory: it is a few MB, decoded in milliseconds.
MIN_RECORDS = 200_000
#: Set to 0 to hold every key index in memory (no cache file written or read).
ENV = "RELABEL_STORE_MAP_KEY_INDEX"
_MAGIC = b"RLKEYIX1"
_ALIGN = 4096
_NAMES = ("keys", "rows", "labels", "sizes")
_DTYPES = {
    "rows": ("<i4", "<i8"),
    "labels": ("<i2", "<i4"),
    "sizes": ("<u2", "<i4"),
}

Index = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def index_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / "key-index" / f"{digest}.keyindex"


def wanted(records: int) -> bool:
    """Whether a store of ``records`` records maps its key index from the cache."""
    return records >= MIN_RECORDS and os.environ.get(ENV, "1") != "0"


def load(path: Path, records: int) -> Index | None:
    """The four arrays mapped read-only from ``path``; None when there is no usable file (absent,
    written for another store, truncated), which the caller then writes anew."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) != 16 or head[:8] != _MAGIC:
                return None
            (length,) = struct.unpack("<Q", head[8:])
            if length > 1 << 16:
                return None
            header = json.loads(f.read(length))
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return None
    try:
        if header["records"] != records:
            return None
        arrays = []
        for name, entry in zip(_NAMES, header["arrays"], strict=True):
            dtype = np.dtype(entry["dtype"])
            shape = tuple(int(s) for s in entry["shape"])
            offset = int(entry["offset"])
            ok = entry["name"] == name and (
                dtype.kind == "S" and 1 <= dtype.itemsize <= MAX_KEY_BYTES and shape == (records,)
                if name == "keys"
                else entry["dtype"] in _DTYPES[name]
                and shape == ((records, 2) if name == "sizes" else (records,))
            )
            if not ok or offset % _ALIGN or offset + dtype.itemsize * int(np.prod(shape)) > size:
                return None
            arrays.append(_mapped(path, dtype, shape, offset))
    except (KeyError, TypeError, ValueError):
        return None
    keys, rows, labels, sizes = arrays
    return keys, rows, labels, sizes


def sample_positions(records: int, count: int = 4097) -> np.ndarray:
    """Evenly spaced positions of a table of ``records`` (ascending, distinct): the keys a later
    open checks are in order, instead of all of them."""
    return np.unique(np.linspace(0, max(records - 1, 0), min(count, records)).astype(np.int64))


def _mapped(path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int) -> np.ndarray:
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def save(path: Path, index: Index) -> None:
    """Write ``index`` to ``path`` atomically (a reader sees the whole file or none)."""
    entries: list[dict[str, Any]] = []
    offset = _ALIGN
    for name, array in zip(_NAMES, index, strict=True):
        dtype = array.dtype.newbyteorder("<") if array.dtype.kind != "S" else array.dtype
        entries.append(
            {"name": name, "dtype": dtype.str, "shape": list(array.shape), "offset": offset}
        )
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"records": len(index[0]), "arrays": entries}).encode()
    if 16 + len(header) > _ALIGN:
        raise FormatError(f"key index header of {len(header)} bytes does not fit {_ALIGN - 16}")

    def write(f: BinaryIO) -> None:
        f.write(_MAGIC + struct.pack("<Q", len(header)) + header)
        for entry, array in zip(entries, index, strict=True):
            f.seek(entry["offset"])
            f.write(np.ascontiguousarray(array, dtype=entry["dtype"]).data)
        f.truncate(offset)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_stream(path, write)
