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

import functools
import itertools
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
#: A Blosc frame's first fields (version, its codec's version, flags, typesize, nbytes,
#: blocksize) and the compressed size of its first block (at byte 20).
_BLOSC_HEADER = struct.Struct("<BBBBii")
_BLOSC_BLOCK_SIZE = struct.Struct("<i")

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
        version, _, flags, typesize, claimed, blocksize = _BLOSC_HEADER.unpack_from(data)
        if claimed != nbytes:
            raise FormatError(f"blosc frame holds {claimed} bytes, expected {nbytes}")
        fast = (
            version == 2
            and flags & 0x16 == 0x10
            and flags >> 5 == 4
            and nbytes == blocksize > 0
            and typesize > 0
            and nbytes % typesize == 0
        )  # version 2, not memcpyed, no bitshuffle, unsplit blocks, zstd, one whole-element block
        if not fast:
            decoded: Decoded = self._general.decode(data)
            return decoded
        (csize,) = _BLOSC_BLOCK_SIZE.unpack_from(data, 20)
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
    """How to decode many chunks of one array at once: ``decode(frames, out)`` writes the
    contents of any run of ``frames`` into ``out`` (uint8, one row of ``nbytes`` per chunk) and
    raises :class:`BatchRefused` for a frame it does not take. Every check, the decoding and
    the unshuffling happen per run, so that :func:`decode_plans` spreads all of it over
    threads."""

    frames: Sequence[bytes | memoryview]
    nbytes: int
    decode: Callable[[Sequence[bytes | memoryview], np.ndarray], None]


#: crc32c over a message followed by its own little-endian crc32c: one value for every message
#: (the CRC residue), so a chunk's checksum is checked without slicing its body off first.
_CRC32C_RESIDUE = 0x48674BC7
#: Fewest frames in a decoding job: each job costs ~30 µs of set-up under the GIL (joining its
#: frames, checking their headers, a stream reader), so jobs are as large as keeps every core
#: busy, two per thread (see decode_plans). With 2 cores, 256 records decode in 4 jobs of 128
#: frames, 1.5x faster than in 16 jobs of 32 (measured).
_MIN_FRAMES_PER_JOB = 32


def _zstd_stream(frames: Sequence[bytes | memoryview], out: np.ndarray, *, nbytes: int) -> None:
    """Decode zstd frames that each hold ``nbytes`` into ``out`` (contiguous, one row each) as
    one stream across frames: libzstd without the GIL, straight into the rows, no per-frame
    output object (5% faster than ``multi_decompress_to_buffer`` on a batch's frames, measured).

    Each frame's header must declare ``nbytes`` (libzstd then holds the frame to it), the
    stream must fill ``out`` exactly, and checksums must match; anything else refuses the batch
    (the caller decodes one by one to name the damaged file)."""
    size = zstandard.frame_content_size
    try:
        if any(size(f) != nbytes for f in frames):
            raise BatchRefused
        view = out.reshape(-1).data
        got = 0
        with _zstd().stream_reader(b"".join(frames), read_across_frames=True) as reader:
            while got < len(view):
                n = reader.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = reader.read(1)
    except zstandard.ZstdError:
        raise BatchRefused from None
    if got != len(view) or extra:
        raise BatchRefused


def _blosc_plan(frames: Sequence[bytes], nbytes: int, trailer: int) -> BatchPlan:
    """The plan for Blosc chunks of the kind relabel-store writes (one block, zstd, byte
    shuffle; see :meth:`Blosc.decode`): every frame's header (and its trailing crc32c of
    ``trailer`` bytes) checked at once with numpy here, on the calling thread; the jobs only
    decode the zstd blocks as one stream and put the byte planes back into their rows. Any
    other frame refuses the batch."""
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
    blocks = [
        view[s + 24 : s + 24 + c] for s, c in zip(starts.tolist(), csize.tolist(), strict=True)
    ]
    decode = functools.partial(_blosc_blocks, nbytes=nbytes, typesize=typesize if shuffled else 1)
    return BatchPlan(blocks, nbytes, decode)


def _blosc_blocks(
    blocks: Sequence[bytes | memoryview], out: np.ndarray, *, nbytes: int, typesize: int
) -> None:
    """Decode checked Blosc blocks (zstd frames) into ``out``, putting the byte planes of
    ``typesize`` back (1: not shuffled)."""
    if typesize == 1:
        _zstd_stream(blocks, out, nbytes=nbytes)
        return
    m = len(blocks)
    raw = np.empty((m, nbytes), np.uint8)
    _zstd_stream(blocks, raw, nbytes=nbytes)
    planes = raw.reshape(m, typesize, nbytes // typesize)
    if typesize == 2:  # float16: high byte shifted over the low one, 2x the strided copies
        pairs = out.view("<u2")
        np.left_shift(planes[:, 1], 8, out=pairs, dtype="<u2")
        pairs |= planes[:, 0]
        return
    elements = out.reshape(m, nbytes // typesize, typesize)
    for b in range(typesize):  # strided copies: ~6x faster than a transposed copy here
        elements[:, :, b] = planes[:, b]


_pool: ThreadPoolExecutor | None = None
_pool_owner = (0, 0)  # (pid, threads) the pool was made for
_pool_lock = threading.Lock()


def _decode_pool(threads: int) -> ThreadPoolExecutor:
    """The process's helper threads for decoding, kept between batches (libzstd's own threads
    are made and joined on every call: ~0.2 ms, a tenth of a batch). A forked child (a
    DataLoader worker) has none of its parent's threads, so it makes its own pool."""
    global _pool, _pool_owner
    with _pool_lock:
        owner = (os.getpid(), threads)
        if _pool is None or _pool_owner != owner:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="relabel-decode")
            _pool_owner = owner
        return _pool


def decode_plans(plans: Sequence[BatchPlan], threads: int, into: Sequence[np.ndarray]) -> None:
    """Decode every plan's frames into ``into`` (one ``(len(frames), nbytes)`` uint8 array per
    plan) on up to ``threads`` threads, the calling one included. Raises BatchRefused when any
    frame fails (the caller decodes one by one to name it).

    The frames are cut into about two jobs per thread; every thread takes the next job
    until none is left, so a thread that got cheaper frames (or was descheduled) takes more,
    and the caller never sleeps while there is work: with 2 cores one helper thread and the
    caller decode together. A job checks, decodes and unshuffles its frames into their rows,
    all without the GIL but the few calls that start each step."""
    for plan, out in zip(plans, into, strict=True):
        if (
            out.shape != (len(plan.frames), plan.nbytes)
            or out.dtype != np.uint8
            or not out.flags.c_contiguous
        ):
            raise BatchRefused  # an internal mismatch: the slow path names what is wrong
    total = sum(len(plan.frames) for plan in plans)
    step = max(_MIN_FRAMES_PER_JOB, -(-total // (2 * threads)))
    jobs = [(i, j) for i, plan in enumerate(plans) for j in range(0, len(plan.frames), step)]
    failed: list[BaseException] = []
    taken = itertools.count()  # next() is atomic under the GIL: each job goes to one thread

    def work() -> None:
        try:
            for n in taken:
                if n >= len(jobs) or failed:
                    return
                i, j = jobs[n]
                plan = plans[i]
                plan.decode(plan.frames[j : j + step], into[i][j : j + step])
        except BaseException as exc:
            failed.append(exc)

    helpers = min(threads, len(jobs)) - 1
    pool = _decode_pool(threads - 1) if helpers > 0 else None
    futures = [pool.submit(work) for _ in range(helpers)] if pool is not None else []
    work()
    for future in futures:
        future.result()
    if failed:
        raise failed[0]


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

    def plan_batch(self, frames: Sequence[bytes]) -> BatchPlan:
        """How to decode many stored chunks at once (see :func:`decode_plans`); raises
        :class:`BatchRefused` for chunks the batch path does not take, which the caller then
        decodes one by one."""
        n = self.nbytes
        if isinstance(self.compressor, Zstd) and not self.checksum:
            return BatchPlan(frames, n, functools.partial(_zstd_stream, nbytes=n))
        if isinstance(self.compressor, Blosc):
            return _blosc_plan(frames, n, 4 if self.checksum else 0)
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
