"""Decode the few Zarr v3 array layouts relabel-store writes, without zarr-python.

zarr-python writes every store; this module reads the same bytes on the hot path. It understands
regular chunk grids, the ``sharding_indexed`` codec (index at the end, ``bytes`` + ``crc32c``
index codecs), and inner codec chains of ``bytes`` followed by ``zstd``, ``gzip`` or ``blosc``
and an optional ``crc32c``. Anything else is refused with a clear error rather than misread.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from relabel_store._parallel import run_all
from relabel_store.errors import CorruptDataError, FormatError
from relabel_store.format._codecs import CodecChain, _require, codec_chain

_DTYPES = {"uint8", "uint16", "uint32", "int32", "int64", "float16", "float32"}
MISSING = 2**64 - 1
#: No chunk relabel-store writes decodes to more than this; a larger claim is refused before
#: anything is allocated (a damaged or hostile ``zarr.json`` must not exhaust memory).
MAX_CHUNK_BYTES = 1 << 30
_ARRAY_FIELDS = {
    "zarr_format",
    "node_type",
    "shape",
    "data_type",
    "chunk_grid",
    "chunk_key_encoding",
    "fill_value",
    "codecs",
    "attributes",
    "dimension_names",
    "storage_transformers",
}


def chunk_key(separator: str, coords: Sequence[int]) -> str:
    """A chunk's file name inside its array's folder, by Zarr v3's default chunk key encoding
    (``c.12.0.0.0`` with the ``.`` separator): the one rule the reader and the writer share."""
    return separator.join(["c", *map(str, coords)])


@dataclass(frozen=True)
class ArrayLayout:
    """Shape, dtype, chunking and codecs of one array, parsed from its ``zarr.json``."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_shape: tuple[int, ...]  # outer chunk (= shard when sharded)
    inner_shape: tuple[int, ...] | None  # inner chunk when sharded
    separator: str
    fill_value: Any
    codecs: CodecChain  # chunk bytes <-> raw little/big-endian array bytes

    @classmethod
    def parse(cls, name: str, raw: bytes, where: str) -> ArrayLayout:
        """Parse ``zarr.json``; anything this reader could misread is refused as FormatError."""
        where = f"{where}/{name}/zarr.json"
        try:
            meta = json.loads(raw)
            _require(isinstance(meta, dict), where, "is not a JSON object")
            _require(
                meta.get("zarr_format") == 3 and meta.get("node_type") == "array",
                where,
                "is not a Zarr v3 array",
            )
            for key, value in meta.items():  # extensions must be optional to be ignored
                _require(
                    key in _ARRAY_FIELDS
                    or (isinstance(value, dict) and value.get("must_understand") is False),
                    where,
                    f"has field {key!r}, which this reader does not understand",
                )
            _require(not meta.get("storage_transformers"), where, "uses storage transformers")
            dtype_name = meta["data_type"]
            _require(dtype_name in _DTYPES, where, f"has unsupported data_type {dtype_name!r}")
            shape = _ints(meta["shape"], 0, where, "shape")
            grid = meta["chunk_grid"]
            _require(grid["name"] == "regular", where, f"has chunk grid {grid['name']!r}")
            chunk_shape = _ints(grid["configuration"]["chunk_shape"], 1, where, "chunk_shape")
            _require(len(chunk_shape) == len(shape), where, "has chunks of another rank")
            cke = meta["chunk_key_encoding"]
            separator = (cke.get("configuration") or {}).get("separator", "/")
            _require(
                cke["name"] == "default" and separator in (".", "/"),
                where,
                f"has unsupported chunk key encoding {cke!r}",
            )
            codecs = meta["codecs"]
            _require(isinstance(codecs, list) and bool(codecs), where, "has no codecs")
            inner_shape = None
            unit = chunk_shape  # the shape one encoded chunk decodes to
            if codecs[0]["name"] == "sharding_indexed":
                _require(len(codecs) == 1, where, "has codecs after sharding")
                conf = codecs[0]["configuration"]
                _check_index_codecs(conf, where)
                inner_shape = _ints(conf["chunk_shape"], 1, where, "inner chunk_shape")
                _require(
                    len(inner_shape) == len(shape)
                    and all(c % i == 0 for c, i in zip(chunk_shape, inner_shape, strict=True)),
                    where,
                    "has inner chunks that do not tile its shards",
                )
                codecs = conf["codecs"]
                unit = inner_shape
            dtype = np.dtype(dtype_name)
            nbytes = math.prod(unit) * dtype.itemsize
            _require(
                nbytes <= MAX_CHUNK_BYTES,
                where,
                f"has chunks of {nbytes} bytes (at most {MAX_CHUNK_BYTES} are read)",
            )
            chain = codec_chain(codecs, dtype, nbytes, where)
            fill = meta.get("fill_value", 0)
            _require(
                isinstance(fill, int | float) and not isinstance(fill, bool),
                where,
                f"has fill_value {fill!r}; only numbers are supported",
            )
            return cls(
                name=name,
                shape=shape,
                dtype=dtype.newbyteorder("<" if chain.endian == "little" else ">"),
                chunk_shape=chunk_shape,
                inner_shape=inner_shape,
                separator=separator,
                fill_value=fill,
                codecs=chain,
            )
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FormatError(f"{where} is malformed: {exc!r}") from None

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        """The chunk's key from the store root (``indices/c.12.0.0.0``)."""
        return f"{self.name}/{chunk_key(self.separator, coords)}"

    def decode_array(self, data: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
        raw = self.codecs.decode(data, where)
        expected = int(np.prod(shape)) * self.dtype.itemsize
        if len(raw) != expected:
            raise CorruptDataError(
                f"{where}: decoded {len(raw)} bytes, expected {expected}; the file is damaged. "
                "Run `relabel-store verify` on the store."
            )
        return np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def read_regular(
        self, read: Callable[[str], bytes | None], where: str, *, threads: int = 1
    ) -> np.ndarray:
        """Read a whole regular (unsharded) array; ``read`` returns None for absent chunks.

        Every chunk is read before the array is allocated, so a shape that claims more chunks
        than exist fails (in ``read``) without allocating for the claim. The chunks are then
        decoded on up to ``threads`` threads (libzstd runs without the GIL; ImageNet-21k's key
        index is 51 chunks per array), each holding one decoded chunk at a time beside the
        output; a chunk that fails raises once every job has ended, naming that chunk.
        """
        grid = [-(-s // c) for s, c in zip(self.shape, self.chunk_shape, strict=True)]
        found = []
        for coords in _lazy_ndindex(grid):
            key = self.chunk_key(coords)
            data = read(key)
            if data is not None:
                found.append((coords, key, data))
        out = np.full(self.shape, self.fill_value, dtype=self.dtype.newbyteorder("="))

        def place(item: tuple[tuple[int, ...], str, bytes]) -> None:
            coords, key, data = item
            chunk = self.decode_array(data, self.chunk_shape, f"{where}/{key}")
            sel = tuple(
                slice(i * c, min((i + 1) * c, s))
                for i, c, s in zip(coords, self.chunk_shape, self.shape, strict=True)
            )
            out[sel] = chunk[tuple(slice(0, s.stop - s.start) for s in sel)]

        run_all(place, found, threads)
        return out


def _lazy_ndindex(shape: list[int]) -> Iterator[tuple[int, ...]]:
    """Every index of ``shape`` in C order, generated lazily (``np.ndindex`` builds a tuple of
    each axis's range first: a claimed 10^10 chunks would exhaust memory before the first)."""
    if not shape:
        yield ()
        return
    for i in range(shape[0]):
        for rest in _lazy_ndindex(shape[1:]):
            yield (i, *rest)


def parse_shard_index(tail: bytes | memoryview, n: int, where: str) -> np.ndarray:
    """The ``(n, 2)`` (offset, nbytes) table at the end of a shard, its crc32c checked; a view
    of ``tail`` (no copy kept: a memoryview of a mapped file stays in the page cache)."""
    body, crc = tail[: 16 * n], tail[16 * n :]
    if len(body) != 16 * n or len(crc) != 4:
        raise CorruptDataError(f"{where}: shard is too short to hold its index; file is damaged")
    if google_crc32c.value(bytes(body)) != int.from_bytes(crc, "little"):
        raise CorruptDataError(
            f"{where}: shard index checksum mismatch; the file is damaged or truncated. "
            "Run `relabel-store verify`, then re-download or regenerate the store."
        )
    return np.frombuffer(body, dtype="<u8").reshape(n, 2)


def _check_index_codecs(conf: dict[str, Any], where: str) -> None:
    index_codecs = conf.get("index_codecs", [])
    names = [c["name"] for c in index_codecs]
    endian = (index_codecs[0].get("configuration") or {}).get("endian") if index_codecs else None
    location = conf.get("index_location", "end")
    _require(
        names == ["bytes", "crc32c"] and endian == "little" and location == "end",
        where,
        f"has a shard index encoded as {names} ({endian} endian) at {location!r}; only "
        "little-endian bytes + crc32c at the end is supported",
    )


def _ints(value: Any, low: int, where: str, what: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value
    )
    _require(ok, where, f"has {what} {value!r}; expected a list of integers >= {low}")
    return tuple(value)
