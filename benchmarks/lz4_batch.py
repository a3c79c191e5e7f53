"""What a batch of 256 would take if both arrays were Blosc LZ4HC: the codec docs/benchmarks.md
weighs against the 2 ms target, measured instead of estimated.

    pip install lz4      # python-lz4: not a dependency of relabel-store
    python benchmarks/lz4_batch.py [--records 8192]

Writes read.py's synthetic store (shards of 32, ImageNet's spread), re-encodes every record's
class ids (no shuffle) and logits (byte shuffle) as zarr-python's ``BloscCodec(cname="lz4hc",
clevel=9)`` writes them (numcodecs' Blosc, split streams, crc32c appended), one memory-mapped
file per array, and reads random batches of 256 both ways, interleaved: the reader's
``get_rows`` on today's zstd chunks (on every core), and a prototype of the batch path for LZ4
frames (the same crc32c, header and value checks, one python-lz4 call per stream into a joined
buffer, the logits' byte planes put back with numpy), on one thread and on two. Its gather is
simpler than the reader's (offsets known in advance, no shard index), so its times are a lower
bound. The 20 warm-up batches are compared with ``get_rows``.
"""

from __future__ import annotations

import argparse
import mmap
import random
import statistics
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
from _synthetic import imagenet_like_keys, write_synthetic_store

from relabel_store import load_relabel

try:
    import lz4.block
except ImportError:
    raise SystemExit("this benchmark needs python-lz4: pip install lz4") from None

_CRC32C_RESIDUE = 0x48674BC7
_INT = struct.Struct("<i").unpack_from


def encode(records: np.ndarray, shuffle: int, path: Path) -> tuple[mmap.mmap, list[int]]:
    """Every record as a Blosc LZ4HC chunk with its crc32c, in one mapped file; offsets."""
    codec = numcodecs.Blosc(cname="lz4hc", clevel=9, shuffle=shuffle, typesize=2)
    chunks = []
    for row in records:
        chunk = bytes(codec.encode(row.tobytes()))
        chunks.append(chunk + google_crc32c.value(chunk).to_bytes(4, "little"))
    path.write_bytes(b"".join(chunks))
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mapped, np.cumsum([0] + [len(c) for c in chunks]).tolist()


def checked(frames: list[bytes], nbytes: int) -> tuple[bytes, list[int]]:
    """The frames joined, after the checks the zstd path makes: crc32c, version, LZ4 code,
    sizes, no bitshuffle, split streams (what numcodecs writes for these records)."""
    if not all(google_crc32c.value(f) == _CRC32C_RESIDUE for f in frames):
        raise ValueError("crc32c")
    lens = np.fromiter(map(len, frames), np.int64, len(frames))
    big = b"".join(frames)
    starts = np.cumsum(lens) - lens
    head = np.frombuffer(big, np.uint8)[starts[:, None] + np.arange(16)]
    fields = np.ascontiguousarray(head[:, 4:]).view("<i4")
    ok = (head[:, 0] == 2) & (head[:, 2] >> 5 == 1) & (head[:, 2] & 0x14 == 0)
    if not (ok & (fields[:, 0] == nbytes) & (fields[:, 1] == nbytes)).all():
        raise ValueError("header")
    return big, starts.tolist()


def decode(big: bytes, starts: list[int], out: np.ndarray, shuffled: bool) -> None:
    """Frames (two LZ4 streams each, or stored whole) into ``out``'s rows."""
    half = out.shape[1] // 2
    view, parts = memoryview(big), []
    for p in starts:
        if big[p + 2] & 0x02:  # stored as it is: the record unshuffled, after the header
            plain = np.frombuffer(big, np.uint8, 2 * half, p + 16)
            parts.append(plain.reshape(-1, 2).T.tobytes() if shuffled else plain.tobytes())
            continue
        p += 20  # the header and the one block start
        for _ in range(2):
            (size,) = _INT(big, p)
            stream = view[p + 4 : p + 4 + size]
            parts.append(stream if size == half else lz4.block.decompress(stream, half))
            p += 4 + size
    raw = np.frombuffer(b"".join(parts), np.uint8).reshape(len(starts), 2 * half)
    if shuffled:  # byte planes back into float16s
        pairs = out.view("<u2")
        np.left_shift(raw[:, half:], 8, out=pairs, dtype="<u2")
        pairs |= raw[:, :half]
    else:
        out[:] = raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=8192)
    ap.add_argument("--batches", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "spread.relabel.zarr"
        write_synthetic_store(path, imagenet_like_keys(args.records), shard_records=32)
        store = load_relabel(path)
        n = len(store)
        every = store.get_rows(range(n))  # key order: chunk i below is row i's
        ids, ids_at = encode(every.indices, 0, root / "ids.lz4")
        logits, logits_at = encode(every.values, 1, root / "logits.lz4")
        shape = every.indices.shape[1:]
        nbytes = every.indices[0].nbytes
        pool = ThreadPoolExecutor(1)

        def lz4_rows(rows: list[int], threads: int) -> tuple[np.ndarray, np.ndarray]:
            out_i = np.empty((len(rows), nbytes), np.uint8)
            out_v = np.empty((len(rows), nbytes), np.uint8)
            jobs = []
            for mapped, at, out, shuffled in (
                (ids, ids_at, out_i, False),
                (logits, logits_at, out_v, True),
            ):
                big, starts = checked([mapped[at[r] : at[r + 1]] for r in rows], nbytes)
                half = len(starts) // 2
                jobs += [(big, starts[:half], out[:half], shuffled),
                         (big, starts[half:], out[half:], shuffled)]  # fmt: skip
            if threads == 1:
                for job in jobs:
                    decode(*job)
            else:
                helped = [pool.submit(decode, *job) for job in jobs[1::2]]
                for job in jobs[0::2]:
                    decode(*job)
                for future in helped:
                    future.result()
            indices = out_i.view("<u2").reshape(len(rows), *shape)
            values = out_v.view("<f2").reshape(len(rows), *shape)
            store._check_values(np.asarray(rows), indices, values)
            return indices, values

        batches = [random.sample(range(n), 256) for _ in range(args.batches)]
        for rows in batches[:20]:  # warm, and the prototype checked against the reader
            want = store.get_rows(rows)
            for threads in (1, 2):
                got = lz4_rows(rows, threads)
                assert (got[0] == want.indices).all()
                assert (got[1].view("<u2") == want.values.view("<u2")).all()
        times: dict[str, list[float]] = {"zstd": [], "lz4, 1 thread": [], "lz4, 2 threads": []}
        runs = {
            "zstd": store.get_rows,
            "lz4, 1 thread": lambda rows: lz4_rows(rows, 1),
            "lz4, 2 threads": lambda rows: lz4_rows(rows, 2),
        }
        for rows in batches:
            for name, run in runs.items():
                started = time.perf_counter()
                run(rows)
                times[name].append(time.perf_counter() - started)
        pool.shutdown()
        zstd_bytes = store.manifest.total_bytes / n
        print(f"records: {n}, shards of 32; chunks per record: zstd (today) "
              f"{zstd_bytes:.0f} B with the key index, Blosc LZ4HC "
              f"{(ids_at[-1] + logits_at[-1]) / n:.0f} B of maps (synthetic maps)")  # fmt: skip
        for name, seconds in times.items():
            print(f"batch of 256, {name:<15} median {statistics.median(seconds) * 1e3:.2f} ms "
                  f"(fastest {min(seconds) * 1e3:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
