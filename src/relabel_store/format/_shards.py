"""Encode whole shards of the record arrays on every core, byte for byte as zarr-python would.

zarr-python creates the arrays (their ``zarr.json``) and stays the reference; this module writes
the shard files of ``indices`` and ``values``. zarr-python encodes one inner chunk at a time
through its async codec pipeline, about 1 ms per record on one core (measured); here a shard's
records are compressed in slices on a thread pool (python-zstandard releases the GIL) by the
array's codec chain (:mod:`~relabel_store.format._codecs`, the same objects the reader decodes
with).

Inner chunks holding only the fill value (bit for bit) are left out (index entry ``2**64 - 1``), as
zarr-python does with ``write_empty_chunks=False``; a shard without any chunk is no file at all. The index of
(offset, length) pairs follows the chunks, then its crc32c (``index_location: end``). Tests check
the bytes against zarr-python's own writes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from relabel_store.errors import FormatError
from relabel_store.format._codecs import Blosc, CodecChain, Zstd, codec_chain
from relabel_store.format._layout import chunk_key

MISSING = 2**64 - 1
#: Records per task: large enough that thread hand-off is noise, small enough to spread a shard
#: over 16+ cores.
_SLICE = 256


def cores_per_process() -> int:
    """CPU cores this process may use: its affinity mask, divided among the ranks ``torchrun``
    starts on this node (``LOCAL_WORLD_SIZE``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // ranks)


@dataclass(frozen=True)
class ShardEncoder:
    """Encodes the shards of one sharded array whose ``zarr.json`` relabel-store wrote."""

    name: str
    dtype: np.dtype
    record_shape: tuple[int, ...]
    shard_records: int
    fill_value: Any
    separator: str  # of the chunk key encoding
    codecs: CodecChain  # records (m, *record_shape) <-> their encoded inner chunks

    @classmethod
    def from_metadata(cls, name: str, meta: Mapping[str, Any], where: str) -> ShardEncoder:
        """Read the array's layout from its parsed ``zarr.json``; refuse layouts we never write."""
        try:
            (sharding,) = meta["codecs"]
            conf = sharding["configuration"]
            inner = conf["codecs"]
            shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
            record_shape = tuple(meta["shape"][1:])
            keys = meta["chunk_key_encoding"]
            ok = (
                keys["name"] == "default"
                and sharding["name"] == "sharding_indexed"
                and tuple(conf["chunk_shape"]) == (1, *record_shape)
                and tuple(shard_shape[1:]) == record_shape
                and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
                and conf.get("index_location", "end") == "end"
                and inner[0]["name"] == "bytes"
                and inner[0].get("configuration", {}).get("endian", "little") == "little"
            )
            if not ok:
                raise FormatError("not a layout relabel-store writes")
            dtype = np.dtype(meta["data_type"]).newbyteorder("<")
            nbytes = math.prod(record_shape) * dtype.itemsize
            codecs = codec_chain(inner, dtype, nbytes, f"{where}/{name}/zarr.json")
            if not isinstance(codecs.compressor, Zstd | Blosc):
                raise FormatError(f"expected a zstd or blosc compressor, got {codecs.compressor}")
            return cls(
                name=name,
                dtype=dtype,
                record_shape=record_shape,
                shard_records=int(shard_shape[0]),
                fill_value=meta.get("fill_value", 0),
                separator=keys.get("configuration", {}).get("separator", "/"),
                codecs=codecs,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(
                f"{where}/{name}/zarr.json: cannot write this array's shards ({exc}); it was not "
                "created by relabel-store's writer. Write the store anew (--overwrite)."
            ) from None

    @classmethod
    def read(cls, root: os.PathLike[str] | str, name: str) -> ShardEncoder:
        with open(os.path.join(root, name, "zarr.json"), "rb") as f:
            return cls.from_metadata(name, json.load(f), str(root))

    def chunk_key(self, shard: int) -> str:
        """The shard's file name inside the array's folder (``c.12.0.0.0``)."""
        return chunk_key(self.separator, (shard, *[0] * len(self.record_shape)))

    def start(self, records: np.ndarray, pool: Executor) -> Callable[[], bytes | None]:
        """Queue the encoding of one shard's records on ``pool``; the returned function waits
        for it and gives the shard file's bytes (None: every record is the fill value)."""
        records = np.ascontiguousarray(records, dtype=self.dtype)
        n = len(records)
        if records.shape[1:] != self.record_shape or not 0 < n <= self.shard_records:
            raise FormatError(
                f"{self.name}: a shard holds 1..{self.shard_records} records of shape "
                f"{self.record_shape}, got {records.shape}"
            )
        # zarr-python leaves out chunks equal to the fill value, compared bit for bit (a -0.0
        # logit is kept).
        bits = np.dtype(f"<u{self.dtype.itemsize}")
        fill = np.asarray(self.fill_value, self.dtype).view(bits)
        kept = np.flatnonzero((records.reshape(n, -1).view(bits) != fill).any(axis=1))
        data = records if len(kept) == n else records[kept]
        futures = [
            pool.submit(self.codecs.encode, data[i : i + _SLICE])
            for i in range(0, len(kept), _SLICE)
        ]

        def finish() -> bytes | None:
            chunks = [c for f in futures for c in f.result()]
            if not chunks:
                return None
            sizes = np.fromiter((len(c) for c in chunks), np.uint64, len(chunks))
            index = np.full((self.shard_records, 2), MISSING, "<u8")
            index[kept, 1] = sizes
            index[kept, 0] = np.cumsum(sizes) - sizes
            body = index.tobytes()
            return b"".join([*chunks, body, google_crc32c.value(body).to_bytes(4, "little")])

        return finish
