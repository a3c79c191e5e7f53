"""Decode the few Zarr v3 array layouts relabel-store writes, without zarr-python.

zarr-python writes every store; this module reads the same bytes on the hot path. It understands
regular chunk grids, the ``sharding_indexed`` codec (index at the end, ``bytes`` + ``crc32c``
index codecs), and inner codec chains of ``bytes`` followed by ``zstd``, ``gzip`` or ``blosc``
and an optional ``crc32c``. Anything else is refused with a clear error rather than misread.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import google_crc32c
import numpy as np
import zstandard
from numcodecs.blosc import Blosc

from relabel_store.errors import CorruptDataError, FormatError

_DTYPES = {"uint8", "uint16", "uint32", "int32", "int64", "float16", "float32"}
MISSING = 2**64 - 1
#: A decoded chunk: bytes, or the uint8 array the Blosc fast path unshuffles into (no copy).
Decoded = bytes | np.ndarray
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
    decode: Callable[[bytes, str], Decoded]  # chunk bytes -> raw little/big-endian array bytes
    #: How to decode many chunks at once (see decode_plans); raises BatchRefused for chunks the
    #: batch path does not take, which the caller then decodes one by one.
    plan_batch: Callable[[list[bytes]], BatchPlan]

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
            endian, decode, plan_batch = _codec_chain(codecs, dtype, nbytes, where)
            fill = meta.get("fill_value", 0)
            _require(
                isinstance(fill, int | float) and not isinstance(fill, bool),
                where,
                f"has fill_value {fill!r}; only numbers are supported",
            )
            return cls(
                name=name,
                shape=shape,
                dtype=dtype.newbyteorder("<" if endian == "little" else ">"),
                chunk_shape=chunk_shape,
                inner_shape=inner_shape,
                separator=separator,
                fill_value=fill,
                decode=decode,
                plan_batch=plan_batch,
            )
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FormatError(f"{where} is malformed: {exc!r}") from None

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return f"{self.name}/c{self.separator}" + self.separator.join(map(str, coords))

    def decode_array(self, data: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
        raw = self.decode(data, where)
        expected = int(np.prod(shape)) * self.dtype.itemsize
        if len(raw) != expected:
            raise CorruptDataError(
                f"{where}: decoded {len(raw)} bytes, expected {expected}; the file is damaged. "
                "Run `relabel-store verify` on the store."
            )
        return np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def read_regular(self, read: Callable[[str], bytes | None], where: str) -> np.ndarray:
        """Read a whole regular (unsharded) array; ``read`` returns None for absent chunks.

        Every chunk is read before the array is allocated, so a shape that claims more chunks
        than exist fails (in ``read``) without allocating for the claim.
        """
        grid = [-(-s // c) for s, c in zip(self.shape, self.chunk_shape, strict=True)]
        found = []
        for coords in _lazy_ndindex(grid):
            key = self.chunk_key(coords)
            data = read(key)
            if data is not None:
                found.append((coords, key, data))
        out = np.full(self.shape, self.fill_value, dtype=self.dtype.newbyteorder("="))
        for coords, key, data in found:
            chunk = self.decode_array(data, self.chunk_shape, f"{where}/{key}")
            sel = tuple(
                slice(i * c, min((i + 1) * c, s))
                for i, c, s in zip(coords, self.chunk_shape, self.shape, strict=True)
            )
            out[sel] = chunk[tuple(slice(0, s.stop - s.start) for s in sel)]
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


_local = threading.local()


def _zstd() -> zstandard.ZstdDecompressor:
    """This thread's reusable zstd context: ~3x faster than a fresh one per call."""
    try:
        return _local.zstd
    except AttributeError:
        _local.zstd = zstandard.ZstdDecompressor()
        return _local.zstd


def _zstd_decompress(data: bytes, nbytes: int) -> bytes:
    """Decode one zstd frame that must hold ``nbytes``: a frame claiming any other size is
    refused before its output is allocated."""
    claimed = zstandard.frame_content_size(data)
    if claimed == -1:  # size not in the header: let the decoder stop at the limit
        return _zstd().decompress(data, max_output_size=nbytes)
    if claimed != nbytes:
        raise ValueError(f"zstd frame holds {claimed} bytes, expected {nbytes}")
    return _zstd().decompress(data)


def _gzip_decompress(data: bytes, nbytes: int) -> bytes:
    out = zlib.decompressobj(wbits=31).decompress(data, nbytes + 1)
    if len(out) > nbytes:
        raise ValueError(f"gzip stream holds more than the expected {nbytes} bytes")
    return out


_BLOSC_FALLBACK = Blosc()


def _blosc_decompress(data: bytes, expected: int) -> Decoded:
    """Decode a Blosc 1 frame holding ``expected`` bytes; the frames relabel-store writes take a
    fast path.

    Those are one block, zstd, byte shuffle. The fast path reuses this thread's zstd context and
    unshuffles with numpy (~3 µs); numcodecs' Blosc creates a zstd context per call (~15 µs).
    Any other frame goes to numcodecs. A header claiming another size is refused first.
    """
    if len(data) < 16:
        raise ValueError(f"blosc frame of {len(data)} bytes is shorter than its header")
    flags, typesize = data[2], data[3]
    nbytes, blocksize = struct.unpack_from("<ii", data, 4)
    if nbytes != expected:
        raise ValueError(f"blosc frame holds {nbytes} bytes, expected {expected}")
    fast = (
        data[0] == 2
        and flags & 0x16 == 0x10
        and flags >> 5 == 4
        and nbytes == blocksize > 0
        and typesize > 0
        and nbytes % typesize == 0
    )  # version 2, not memcpyed, no bitshuffle, unsplit blocks, zstd, one whole-element block
    if not fast:
        return _BLOSC_FALLBACK.decode(data)
    (csize,) = struct.unpack_from("<i", data, 20)
    block = data[24 : 24 + csize]
    raw = block if csize == nbytes else _zstd_decompress(block, nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"blosc block decoded to {len(raw)} bytes, expected {nbytes}")
    if flags & 0x01 and typesize > 1:  # byte shuffle: planes of byte 0, byte 1, ... -> elements
        planes = np.frombuffer(raw, np.uint8)
        out = np.empty(nbytes, np.uint8)
        step = nbytes // typesize
        for b in range(typesize):  # strided copies: ~3x faster than a transposed copy here
            out[b::typesize] = planes[b * step : (b + 1) * step]
        return out
    return bytes(raw)


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


_DECOMPRESSORS: dict[str, Callable[[bytes, int], Decoded]] = {
    "zstd": _zstd_decompress,
    "gzip": _gzip_decompress,
    "blosc": _blosc_decompress,
}


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
PlanBatch = Callable[[list[bytes]], BatchPlan]
#: Fewest frames worth a thread of their own: handing work to a thread costs about as much as
#: decoding a few dozen small frames.
_FRAMES_PER_THREAD = 48


def _unchanged(raw: np.ndarray) -> np.ndarray:
    return raw


def _zstd_plan(frames: list[bytes], nbytes: int) -> BatchPlan:
    return BatchPlan(list(frames), nbytes, _unchanged)


def _blosc_plan(frames: list[bytes], nbytes: int, trailer: int) -> BatchPlan:
    """The plan for Blosc frames of the kind relabel-store writes (one block, zstd, byte
    shuffle; see :func:`_blosc_decompress`): headers (and the trailing crc32c of ``trailer``
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


def _refuse_batch(frames: list[bytes]) -> BatchPlan:
    raise BatchRefused


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


def _codec_chain(
    codecs: list[dict[str, Any]], dtype: np.dtype, nbytes: int, where: str
) -> tuple[str, Callable[[bytes, str], Decoded], PlanBatch]:
    """The byte order, the decoder and the batch planner of an inner codec chain whose chunks
    hold ``nbytes``."""
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
    compressors = names[:-1] if checksum else names
    _require(
        len(compressors) <= 1 and all(n in _DECOMPRESSORS for n in compressors),
        where,
        f"has codecs {names}; supported: at most one of {sorted(_DECOMPRESSORS)}, then "
        "optionally crc32c",
    )
    decompress = _DECOMPRESSORS[compressors[0]] if compressors else None

    def decode(data: bytes, file: str) -> Decoded:
        try:
            if checksum:
                body, crc = data[:-4], data[-4:]
                if google_crc32c.value(bytes(body)) != int.from_bytes(crc, "little"):
                    raise CorruptDataError(
                        f"{file}: chunk checksum mismatch; the file is damaged. Run "
                        "`relabel-store verify`, then re-download or regenerate the store."
                    )
                data = body
            return decompress(data, nbytes) if decompress is not None else bytes(data)
        except CorruptDataError:
            raise
        except Exception as exc:  # the compressor saw damaged bytes
            raise CorruptDataError(
                f"{file}: cannot decode chunk ({exc}); the file is damaged. Run "
                "`relabel-store verify`, then re-download or regenerate the store."
            ) from None

    trailer = 4 if checksum else 0
    plan: PlanBatch = _refuse_batch
    if compressors == ["zstd"] and not checksum:

        def plan(frames: list[bytes]) -> BatchPlan:
            return _zstd_plan(frames, nbytes)

    elif compressors == ["blosc"]:

        def plan(frames: list[bytes]) -> BatchPlan:
            return _blosc_plan(frames, nbytes, trailer)

    return str(endian), decode, plan


def _require(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise FormatError(
            f"{where} {problem}: relabel-store refuses what it could misread. The store is "
            "damaged or was not written by relabel-store; re-download or regenerate it."
        )


def _ints(value: Any, low: int, where: str, what: str) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value
    )
    _require(ok, where, f"has {what} {value!r}; expected a list of integers >= {low}")
    return tuple(value)
