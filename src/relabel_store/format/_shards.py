"""Encode whole shards of the record arrays on every core, byte for byte as zarr-python would.

zarr-python creates the arrays (their ``zarr.json``) and stays the reference; this module writes
the shard files of ``indices`` and ``values``. zarr-python encodes one inner chunk at a time
through its async codec pipeline, about 1 ms per record on one core (measured); here a shard's
records are compressed in slices on a thread pool (python-zstandard releases the GIL) with one
reusable compressor per slice. The codecs are the ones the array's ``zarr.json`` names:

* ``bytes`` (little endian), then ``zstd`` (level, checksum): exactly what numcodecs' Zstd
  produces, since both drive libzstd with the same parameters;
* ``bytes``, then ``blosc`` with ``cname: zstd`` and byte ``shuffle``: a record below Blosc's
  32 KiB block size is one unsplit block, so the frame is a 16-byte header, one block start, the
  block's compressed size and a zstd frame of the byte-shuffled record at c-blosc's level for
  ``clevel`` (``2 * clevel - 1``, 22 for 9). Records c-blosc would store another way (tiny,
  incompressible, larger than a block) and any other Blosc setting go through numcodecs' Blosc
  (which releases the GIL off the main thread);
* an optional trailing ``crc32c``.

Inner chunks holding only the fill value (bit for bit) are left out (index entry ``2**64 - 1``), as
zarr-python does with ``write_empty_chunks=False``; a shard without any chunk is no file at all. The index of
(offset, length) pairs follows the chunks, then its crc32c (``index_location: end``). Tests check
the bytes against zarr-python's own writes.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
import zstandard
from numcodecs.blosc import Blosc

from relabel_store.errors import FormatError
from relabel_store.format._layout import chunk_key

MISSING = 2**64 - 1
#: Records per task: large enough that thread hand-off is noise, small enough to spread a shard
#: over 16+ cores.
_SLICE = 256
#: c-blosc stores buffers below this many bytes uncompressed, and splits larger ones into blocks.
_BLOSC_MIN_BYTES = 128
_BLOSC_L1 = 32 * 1024


def cores_per_process() -> int:
    """CPU cores this process may use: its affinity mask, divided among the ranks ``torchrun``
    starts on this node (``LOCAL_WORLD_SIZE``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // ranks)


def _blosc_zstd_level(clevel: int) -> int:
    """The zstd level c-blosc 1.x uses for a Blosc ``clevel`` (zstd_wrap_compress)."""
    return 2 * clevel - 1 if clevel < 9 else 22


EncodeSlice = Callable[[np.ndarray], list[bytes]]


@dataclass(frozen=True)
class ShardEncoder:
    """Encodes the shards of one sharded array whose ``zarr.json`` relabel-store wrote."""

    name: str
    dtype: np.dtype
    record_shape: tuple[int, ...]
    shard_records: int
    fill_value: Any
    separator: str  # of the chunk key encoding
    encode_slice: EncodeSlice  # records (m, *record_shape) -> their encoded inner chunks

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
            steps = [c["name"] for c in inner[1:]]
            checksum = steps[-1:] == ["crc32c"]
            if checksum:
                steps = steps[:-1]
            if len(steps) != 1:
                raise FormatError(f"expected one compressor, got {steps}")
            compressor = inner[1]
            if compressor["name"] == "zstd":
                encode = _zstd_slices(compressor["configuration"])
            elif compressor["name"] == "blosc":
                encode = _blosc_slices(compressor["configuration"], dtype, record_shape)
            else:
                raise FormatError(f"unsupported compressor {compressor['name']!r}")
            return cls(
                name=name,
                dtype=dtype,
                record_shape=record_shape,
                shard_records=int(shard_shape[0]),
                fill_value=meta.get("fill_value", 0),
                separator=keys.get("configuration", {}).get("separator", "/"),
                encode_slice=_with_crc32c(encode) if checksum else encode,
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
            pool.submit(self.encode_slice, data[i : i + _SLICE])
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


def _zstd_slices(conf: Mapping[str, Any]) -> EncodeSlice:
    level, checksum = int(conf["level"]), bool(conf.get("checksum", False))

    def encode(records: np.ndarray) -> list[bytes]:
        compress = zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress
        flat = records.reshape(len(records), -1).view(np.uint8)
        return [compress(row.data) for row in flat]

    return encode


def _blosc_slices(
    conf: Mapping[str, Any], dtype: np.dtype, record_shape: tuple[int, ...]
) -> EncodeSlice:
    typesize = int(conf.get("typesize") or dtype.itemsize)
    clevel = int(conf["clevel"])
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[conf["shuffle"]]
    blosc = Blosc(
        cname=conf["cname"],
        clevel=clevel,
        shuffle=shuffle,
        blocksize=int(conf.get("blocksize", 0)),
        typesize=typesize,
    )
    nbytes = int(np.prod(record_shape)) * dtype.itemsize

    def general(records: np.ndarray) -> list[bytes]:
        flat = records.reshape(len(records), -1).view(np.uint8)
        return [bytes(blosc.encode(row)) for row in flat]

    fast = (
        conf["cname"] == "zstd"
        and shuffle == 1
        and 0 < clevel <= 9
        and int(conf.get("blocksize", 0)) == 0
        and typesize == dtype.itemsize > 1
        and _BLOSC_MIN_BYTES <= nbytes < _BLOSC_L1
    )
    if not fast:
        return general
    level = _blosc_zstd_level(clevel)
    # version 2; zstd format version 1; flags: byte shuffle, unsplit block, zstd (code 4).
    head = struct.Struct("<BBBBiiiii")
    flags = 0x01 | 0x10 | (4 << 5)

    def encode(records: np.ndarray) -> list[bytes]:
        compress = zstandard.ZstdCompressor(level=level).compress
        m = len(records)
        planes = np.ascontiguousarray(
            records.reshape(m, -1).view(np.uint8).reshape(m, -1, typesize).transpose(0, 2, 1)
        ).reshape(m, -1)
        out = []
        for i, row in enumerate(planes):
            block = compress(row.data)
            if len(block) > nbytes - 8:  # c-blosc would store this record uncompressed
                out.append(bytes(blosc.encode(records[i].reshape(-1).view(np.uint8))))
                continue
            out.append(head.pack(2, 1, flags, typesize, nbytes, nbytes, 24 + len(block), 20,
                                 len(block)) + block)  # fmt: skip
        return out

    return encode


def _with_crc32c(encode: EncodeSlice) -> EncodeSlice:
    def encode_and_sum(records: np.ndarray) -> list[bytes]:
        return [c + google_crc32c.value(c).to_bytes(4, "little") for c in encode(records)]

    return encode_and_sum
