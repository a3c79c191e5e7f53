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

Many chunks decode at once (:func:`decode_plans`): the zstd frames of a whole batch in libzstd on
a pool of threads kept for the process (no GIL), the Blosc headers checked and the byte planes
put back with numpy for all records together; any chunk the batch path does not take refuses
the batch (:class:`BatchRefused`), and the caller decodes one by one, which names a damaged file.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


# -- many chunks at once -------------------------------------------------------------------


class BatchRefused(Exception):
    """The batch path does not take these chunks (a damaged one, or a frame of an uncommon
    kind): decode them one at a time instead, which names the damaged file or takes the slow
    path. Never leaves the reader."""


class BatchPlan(NamedTuple):
    """How to decode many chunks of one array at once: zstd ``frames`` that each decode to
    ``nbytes``, then ``finish`` turns the decoded ``(len(frames), nbytes)`` bytes into the
    chunks' contents (uint8, one row per chunk)."""

    frames: list[bytes | memoryview]
    nbytes: int
    finish: Callable[[np.ndarray], np.ndarray]


#: crc32c over a message followed by its own little-endian crc32c: one value for every message
#: (the CRC residue), so a chunk's checksum is checked without slicing its body off first.
_CRC32C_RESIDUE = 0x48674BC7
#: Fewest frames worth a thread of their own: handing work to a thread costs about as much as
#: decoding a few dozen small frames.
_FRAMES_PER_THREAD = 48


def _unchanged(raw: np.ndarray) -> np.ndarray:
    return raw


def _zstd_plan(frames: list[bytes], nbytes: int) -> BatchPlan:
    return BatchPlan(list(frames), nbytes, _unchanged)


def _blosc_plan(frames: list[bytes], nbytes: int, trailer: int) -> BatchPlan:
    """The plan for Blosc frames of the kind relabel-store writes (one block, zstd, byte
    shuffle; see :meth:`Blosc.decode`): headers (and the trailing crc32c of ``trailer``
    bytes) checked for all frames with numpy, the zstd blocks decoded in the batch, the byte
    planes put back for every record at once. Any other frame refuses the batch."""
    m = len(frames)
    if trailer:
        value = google_crc32c.value
        if not all(value(f) == _CRC32C_RESIDUE for f in frames):
            raise BatchRefused
    lens = np.fromiter(map(len, frames), np.int64, m)
    if int(lens.min()) < 24 + trailer:
        raise BatchRefused
    big = b"".join(frames)
    starts = np.cumsum(lens) - lens
    head = np.frombuffer(big, np.uint8)[starts[:, None] + np.arange(24)]
    # after 4 single bytes: nbytes, blocksize, cbytes, the block's start, its compressed size
    fields = np.ascontiguousarray(head[:, 4:]).view("<i4")
    flags, typesizes = head[:, 2], head[:, 3]
    typesize = int(typesizes[0])
    shuffled = bool(flags[0] & 0x01) and typesize > 1
    csize = fields[:, 4].astype(np.int64)
    fast = (
        (head[:, 0] == 2)
        & (flags & 0x16 == 0x10)  # not memcpyed, no bitshuffle, blocks not split
        & (flags >> 5 == 4)  # zstd
        & (flags & 0x01 == flags[0] & 0x01)
        & (typesizes == typesize)
        & (fields[:, 0] == nbytes)
        & (fields[:, 1] == nbytes)  # one block
        & (csize > 0)
        & (csize < nbytes)  # compressed (a stored block takes the slow path)
        & (24 + csize <= lens - trailer)
    )
    if not (typesize > 0 and nbytes % typesize == 0 and bool(fast.all())):
        raise BatchRefused
    view = memoryview(big)
    blocks: list[bytes | memoryview] = [
        view[s + 24 : s + 24 + c] for s, c in zip(starts.tolist(), csize.tolist(), strict=True)
    ]

    def unshuffle(raw: np.ndarray) -> np.ndarray:
        if not shuffled:
            return raw
        planes = raw.reshape(m, typesize, nbytes // typesize)
        if typesize == 2:  # float16: high byte shifted over the low one, 2x the strided copies
            pairs = np.empty((m, nbytes // 2), "<u2")
            np.left_shift(planes[:, 1], 8, out=pairs, dtype="<u2")
            pairs |= planes[:, 0]
            return pairs.view(np.uint8)
        out = np.empty((m, nbytes // typesize, typesize), np.uint8)
        for b in range(typesize):  # strided copies: ~6x faster than a transposed copy here
            out[:, :, b] = planes[:, b]
        return out.reshape(m, nbytes)

    return BatchPlan(blocks, nbytes, unshuffle)


def _zstd_part(frames: list[bytes | memoryview], nbytes: int) -> np.ndarray:
    """Decode zstd frames of ``nbytes`` each in one call into libzstd, which runs without the
    GIL; a frame holding any other size (its output never allocated past ``nbytes``) or failing
    its checksum refuses the batch."""
    m = len(frames)
    sizes = np.full(m, nbytes, np.uint64).tobytes()
    try:
        out = _zstd().multi_decompress_to_buffer(frames, decompressed_sizes=sizes, threads=1)  # type: ignore[arg-type]
    except zstandard.ZstdError:
        raise BatchRefused from None
    if out.size() != m * nbytes:
        raise BatchRefused
    joined = b"".join([memoryview(out[i]) for i in range(m)])  # type: ignore[arg-type]
    return np.frombuffer(joined, np.uint8).reshape(m, nbytes)


_pool: ThreadPoolExecutor | None = None
_pool_owner = (0, 0)  # (pid, threads) the pool was made for
_pool_lock = threading.Lock()


def _decode_pool(threads: int) -> ThreadPoolExecutor:
    """The process's decoding threads, kept between batches (libzstd's own threads are made
    and joined on every call: ~0.2 ms, a tenth of a batch). A forked child (a DataLoader
    worker) has none of its parent's threads, so it makes its own pool."""
    global _pool, _pool_owner
    with _pool_lock:
        owner = (os.getpid(), threads)
        if _pool is None or _pool_owner != owner:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="relabel-decode")
            _pool_owner = owner
        return _pool


def decode_plans(plans: Sequence[BatchPlan], threads: int) -> list[np.ndarray]:
    """Decode every plan's frames, split over up to ``threads`` threads, and finish each plan:
    the chunks' contents, one ``(m, bytes)`` uint8 array per plan. Raises BatchRefused when
    any frame fails (the caller decodes one by one to name it)."""
    total = sum(len(p.frames) for p in plans)
    parts = max(1, min(threads, total // _FRAMES_PER_THREAD))
    jobs: list[tuple[int, list[bytes | memoryview]]] = []
    for i, plan in enumerate(plans):
        # Every plan in up to `parts` pieces of similar size, so that the threads finish together.
        pieces = max(1, min(parts, len(plan.frames) // _FRAMES_PER_THREAD))
        step = -(-len(plan.frames) // pieces)
        jobs += [(i, plan.frames[j : j + step]) for j in range(0, len(plan.frames), step)]
    if parts == 1:
        decoded = [_zstd_part(frames, plans[i].nbytes) for i, frames in jobs]
    else:
        pool = _decode_pool(parts)
        futures = [pool.submit(_zstd_part, frames, plans[i].nbytes) for i, frames in jobs]
        decoded = [f.result() for f in futures]
    out = []
    for i, plan in enumerate(plans):
        mine = [d for (j, _), d in zip(jobs, decoded, strict=True) if j == i]
        raw = mine[0] if len(mine) == 1 else np.concatenate(mine)
        out.append(plan.finish(raw))
    return out


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

    def plan_batch(self, frames: list[bytes]) -> BatchPlan:
        """How to decode many stored chunks at once (see :func:`decode_plans`); raises
        :class:`BatchRefused` for chunks the batch path does not take, which the caller then
        decodes one by one."""
        if isinstance(self.compressor, Zstd) and not self.checksum:
            return _zstd_plan(frames, self.nbytes)
        if isinstance(self.compressor, Blosc):
            return _blosc_plan(frames, self.nbytes, 4 if self.checksum else 0)
        raise BatchRefused

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
