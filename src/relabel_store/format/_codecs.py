"""The chunk codecs of the Zarr v3 arrays relabel-store writes: one object per codec, each
holding its encoder and its decoder.

:func:`codec_chain` parses an array's (inner) codec list from its ``zarr.json`` once, for the
reader (``_layout``) and the shard encoder (``_shards``) alike: ``bytes`` (the byte order), at most
one compressor (``zstd``, ``gzip`` or ``blosc``), then an optional ``crc32c``. Anything else is
refused rather than misread.

The encoders write byte for byte what zarr-python writes (tests compare them with its own
writes): ``zstd`` as numcodecs' Zstd does (both drive libzstd with the same parameters); ``blosc``
with ``cname: zstd`` and byte ``shuffle`` through a fast path for records below Blosc's 32 KiB
block (one unsplit block: a 16-byte header, one block start, the block's compressed size and a
zstd frame of the byte-shuffled record at c-blosc's level for ``clevel``), numcodecs' Blosc for
everything else. The decoders refuse a frame that claims another size than the chunk's before
allocating its output, and take the same fast path back (~3 µs a record against ~15 µs through
numcodecs, which creates a zstd context per call).
"""

from __future__ import annotations

import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numpy as np
import zstandard
from numcodecs.blosc import Blosc as _NumcodecsBlosc

from relabel_store.errors import CorruptDataError, FormatError

__all__: list[str] = []

#: A decoded chunk: bytes, or the uint8 array the Blosc fast path unshuffles into (no copy).
Decoded = bytes | np.ndarray

#: c-blosc stores buffers below this many bytes uncompressed, and splits larger ones into blocks.
_BLOSC_MIN_BYTES = 128
_BLOSC_L1 = 32 * 1024
_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

_local = threading.local()


def _zstd() -> zstandard.ZstdDecompressor:
    """This thread's reusable zstd context: ~3x faster than a fresh one per call."""
    context: zstandard.ZstdDecompressor | None = getattr(_local, "zstd", None)
    if context is None:
        context = _local.zstd = zstandard.ZstdDecompressor()
    return context


def _zstd_decompress(data: bytes, nbytes: int) -> bytes:
    """Decode one zstd frame that must hold ``nbytes``: a frame claiming any other size is
    refused before its output is allocated."""
    claimed = zstandard.frame_content_size(data)
    if claimed == -1:  # size not in the header: let the decoder stop at the limit
        return _zstd().decompress(data, max_output_size=nbytes)
    if claimed != nbytes:
        raise FormatError(f"zstd frame holds {claimed} bytes, expected {nbytes}")
    return _zstd().decompress(data)


def _rows(records: np.ndarray) -> np.ndarray:
    """Records ``(m, ...)`` as ``m`` rows of their bytes."""
    return records.reshape(len(records), -1).view(np.uint8)


class ChunkCodec(ABC):
    """One compressor of an inner codec chain: whole chunks of ``nbytes`` in, bytes out."""

    @abstractmethod
    def encode(self, records: np.ndarray) -> list[bytes]:
        """Each record of ``records`` (m, ...) as one encoded chunk."""

    @abstractmethod
    def decode(self, data: bytes, nbytes: int) -> Decoded:
        """One encoded chunk back to its ``nbytes`` raw bytes."""


@dataclass(frozen=True)
class Zstd(ChunkCodec):
    level: int
    checksum: bool

    def encode(self, records: np.ndarray) -> list[bytes]:
        compress = zstandard.ZstdCompressor(level=self.level, write_checksum=self.checksum)
        return [compress.compress(row.data) for row in _rows(records)]

    def decode(self, data: bytes, nbytes: int) -> Decoded:
        return _zstd_decompress(data, nbytes)


@dataclass(frozen=True)
class Gzip(ChunkCodec):
    """Read only: zarr-python can write gzip chunks; relabel-store never does."""

    level: int

    def encode(self, records: np.ndarray) -> list[bytes]:
        raise FormatError("relabel-store writes zstd or blosc chunks, not gzip")

    def decode(self, data: bytes, nbytes: int) -> Decoded:
        out = zlib.decompressobj(wbits=31).decompress(data, nbytes + 1)
        if len(out) > nbytes:
            raise FormatError(f"gzip stream holds more than the expected {nbytes} bytes")
        return out


@dataclass(frozen=True)
class Blosc(ChunkCodec):
    cname: str
    clevel: int
    shuffle: int
    typesize: int
    blocksize: int
    nbytes: int  # of one chunk
    _general: _NumcodecsBlosc = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        general = _NumcodecsBlosc(
            cname=self.cname,
            clevel=self.clevel,
            shuffle=self.shuffle,
            blocksize=self.blocksize,
            typesize=self.typesize,
        )
        object.__setattr__(self, "_general", general)

    @property
    def _fast(self) -> bool:
        """Whether c-blosc would write these chunks as one unsplit zstd block."""
        return (
            self.cname == "zstd"
            and self.shuffle == 1
            and 0 < self.clevel <= 9
            and self.blocksize == 0
            and self.typesize > 1
            and _BLOSC_MIN_BYTES <= self.nbytes < _BLOSC_L1
        )

    def encode(self, records: np.ndarray) -> list[bytes]:
        rows = _rows(records)
        if not (self._fast and records.dtype.itemsize == self.typesize):
            return [bytes(self._general.encode(row)) for row in rows]
        level = 2 * self.clevel - 1 if self.clevel < 9 else 22  # c-blosc 1.x zstd_wrap_compress
        compress = zstandard.ZstdCompressor(level=level).compress
        # version 2; zstd format version 1; flags: byte shuffle, unsplit block, zstd (code 4).
        head = struct.Struct("<BBBBiiiii")
        flags = 0x01 | 0x10 | (4 << 5)
        m, n = len(rows), self.nbytes
        planes = np.ascontiguousarray(
            rows.reshape(m, -1, self.typesize).transpose(0, 2, 1)
        ).reshape(m, -1)
        out = []
        for row, plane in zip(rows, planes, strict=True):
            block = compress(plane.data)
            if len(block) > n - 8:  # c-blosc would store this record uncompressed
                out.append(bytes(self._general.encode(row)))
                continue
            out.append(head.pack(2, 1, flags, self.typesize, n, n, 24 + len(block), 20,
                                 len(block)) + block)  # fmt: skip
        return out

    def decode(self, data: bytes, nbytes: int) -> Decoded:
        if len(data) < 16:
            raise FormatError(f"blosc frame of {len(data)} bytes is shorter than its header")
        flags, typesize = data[2], data[3]
        claimed, blocksize = struct.unpack_from("<ii", data, 4)
        if claimed != nbytes:
            raise FormatError(f"blosc frame holds {claimed} bytes, expected {nbytes}")
        fast = (
            data[0] == 2
            and flags & 0x16 == 0x10
            and flags >> 5 == 4
            and nbytes == blocksize > 0
            and typesize > 0
            and nbytes % typesize == 0
        )  # version 2, not memcpyed, no bitshuffle, unsplit blocks, zstd, one whole-element block
        if not fast:
            decoded: Decoded = self._general.decode(data)
            return decoded
        (csize,) = struct.unpack_from("<i", data, 20)
        block = data[24 : 24 + csize]
        raw = block if csize == nbytes else _zstd_decompress(block, nbytes)
        if len(raw) != nbytes:
            raise FormatError(f"blosc block decoded to {len(raw)} bytes, expected {nbytes}")
        if flags & 0x01 and typesize > 1:  # byte shuffle: planes of byte 0, 1, ... -> elements
            planes = np.frombuffer(raw, np.uint8)
            out = np.empty(nbytes, np.uint8)
            step = nbytes // typesize
            for b in range(typesize):  # strided copies: ~3x faster than a transposed copy here
                out[b::typesize] = planes[b * step : (b + 1) * step]
            return out
        return bytes(raw)


def _with_crc32c(chunk: bytes) -> bytes:
    crc: int = google_crc32c.value(chunk)
    return chunk + crc.to_bytes(4, "little")


@dataclass(frozen=True)
class CodecChain:
    """An inner codec chain: the byte order, at most one compressor, an optional crc32c."""

    endian: str
    compressor: ChunkCodec | None
    checksum: bool
    nbytes: int  # of one decoded chunk

    def encode(self, records: np.ndarray) -> list[bytes]:
        """Each record of ``records`` (m, ...), already in the chain's byte order, as one chunk."""
        chunks = (
            self.compressor.encode(records)
            if self.compressor is not None
            else [bytes(row) for row in _rows(records)]
        )
        return [_with_crc32c(c) for c in chunks] if self.checksum else chunks

    def decode(self, data: bytes, file: str) -> Decoded:
        """One stored chunk of ``file`` back to its raw bytes; damage is a CorruptDataError."""
        try:
            if self.checksum:
                body, crc = data[:-4], data[-4:]
                if google_crc32c.value(bytes(body)) != int.from_bytes(crc, "little"):
                    raise CorruptDataError(
                        f"{file}: chunk checksum mismatch; the file is damaged. Run "
                        "`relabel-store verify`, then re-download or regenerate the store."
                    )
                data = body
            if self.compressor is None:
                return bytes(data)
            return self.compressor.decode(data, self.nbytes)
        except CorruptDataError:
            raise
        except Exception as exc:  # the compressor saw damaged bytes
            raise CorruptDataError(
                f"{file}: cannot decode chunk ({exc}); the file is damaged. Run "
                "`relabel-store verify`, then re-download or regenerate the store."
            ) from None


def codec_chain(
    codecs: list[dict[str, Any]], dtype: np.dtype, nbytes: int, where: str
) -> CodecChain:
    """Parse an inner codec list whose chunks hold ``nbytes``; refuse what could be misread."""
    _require(
        bool(codecs) and codecs[0]["name"] == "bytes",
        where,
        f"must start its codecs with 'bytes', got {codecs[:1]}",
    )
    endian = (codecs[0].get("configuration") or {}).get("endian")
    if endian is None and dtype.itemsize == 1:
        endian = "little"  # single bytes have no order; the spec lets writers omit it
    _require(endian in ("little", "big"), where, f"has unknown endian {endian!r}")
    names = [c["name"] for c in codecs[1:]]
    checksum = names[-1:] == ["crc32c"]
    compressors = codecs[1:-1] if checksum else codecs[1:]
    _require(
        len(compressors) <= 1 and all(c["name"] in _COMPRESSORS for c in compressors),
        where,
        f"has codecs {names}; supported: at most one of {sorted(_COMPRESSORS)}, then "
        "optionally crc32c",
    )
    compressor = None
    if compressors:
        conf = compressors[0].get("configuration") or {}
        compressor = _COMPRESSORS[compressors[0]["name"]](conf, dtype, nbytes)
    return CodecChain(str(endian), compressor, checksum, nbytes)


def _zstd_codec(conf: Mapping[str, Any], dtype: np.dtype, nbytes: int) -> ChunkCodec:
    return Zstd(level=int(conf.get("level", 0)), checksum=bool(conf.get("checksum", False)))


def _gzip_codec(conf: Mapping[str, Any], dtype: np.dtype, nbytes: int) -> ChunkCodec:
    return Gzip(level=int(conf.get("level", 5)))


def _blosc_codec(conf: Mapping[str, Any], dtype: np.dtype, nbytes: int) -> ChunkCodec:
    shuffle = conf.get("shuffle", "noshuffle")
    if shuffle not in _SHUFFLES:
        raise FormatError(f"blosc shuffle {shuffle!r} is not one of {sorted(_SHUFFLES)}")
    return Blosc(
        cname=str(conf.get("cname", "zstd")),
        clevel=int(conf.get("clevel", 5)),
        shuffle=_SHUFFLES[shuffle],
        typesize=int(conf.get("typesize") or dtype.itemsize),
        blocksize=int(conf.get("blocksize", 0)),
        nbytes=nbytes,
    )


_COMPRESSORS = {"zstd": _zstd_codec, "gzip": _gzip_codec, "blosc": _blosc_codec}


def _require(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise FormatError(
            f"{where} {problem}: relabel-store refuses what it could misread. The store is "
            "damaged or was not written by relabel-store; re-download or regenerate it."
        )
