"""Read speed of a local store: the fast reader against zarr-python, side by side in one run.

    python benchmarks/read.py [--records 8192]

Prints the median warm random single-record read (target <= 20 µs and >= 50x zarr-python's own
``array[i]``), a random batch of 256 (target <= 2 ms) beside the same 256 records read one by one
(what ``get_rows`` did before it decoded batches on every core), the time to open the store (which checks its
metadata and key index against the manifest), and bytes per record with the projection to
ImageNet's 1,281,167 training images. Maps are realistic synthetic ones (see _synthetic.py).

The store's shards hold 4,096 records, so a random batch of 256 here comes from 2 shards. On
ImageNet (313 shards) it comes from ~175: the batch is measured a second time on the same
records in shards of 32 (256 shards; a batch touches ~160), the spread a training job sees.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import zarr
from _synthetic import imagenet_like_keys, write_synthetic_store

from relabel_store import load_relabel
from relabel_store.format._shards import cores_per_process

IMAGENET = 1_281_167


def median_us(fn, args, repeat: int) -> float:
    times = []
    for a in args[:repeat]:
        t = time.perf_counter_ns()
        fn(a)
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def libzstd_floor_ms(frames: int = 512, level: int = 13) -> tuple[float, float]:
    """libzstd alone on ``frames`` frames like a batch's (a synthetic record's class ids at the
    store's zstd level 13, checksummed; or at another ``level``): median ms on one thread and
    on two (each half), no Python per frame. A batch of 256 records is 512 frames (ids and
    logits)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import zstandard
    from _synthetic import synthetic_maps

    idx, _ = synthetic_maps(np.random.default_rng(1), frames)
    compress = zstandard.ZstdCompressor(level=level, write_checksum=True).compress
    data = [compress(r.tobytes()) for r in idx]
    sizes = np.full(frames // 2, idx[0].nbytes, np.uint64).tobytes()

    def run(part: list[bytes]) -> None:
        zstandard.ZstdDecompressor().multi_decompress_to_buffer(
            part, decompressed_sizes=sizes, threads=1
        )

    halves = (data[: frames // 2], data[frames // 2 :])
    pool = ThreadPoolExecutor(2)
    one, two = [], []
    for _ in range(50):
        t = time.perf_counter()
        run(halves[0])
        run(halves[1])
        one.append(time.perf_counter() - t)
        t = time.perf_counter()
        list(pool.map(run, halves))
        two.append(time.perf_counter() - t)
    pool.shutdown()
    return statistics.median(one) * 1e3, statistics.median(two) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=8192)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.relabel.zarr"
        write_synthetic_store(path, imagenet_like_keys(args.records))
        opens = []
        for _ in range(5):
            started = time.perf_counter()
            store = load_relabel(path)
            opens.append(time.perf_counter() - started)
        n = len(store)
        rows = [random.randrange(n) for _ in range(50_000)]
        for r in rows[:5000]:  # warm: every shard index cached, pages in the OS cache
            store.get_row(r)
        fast = median_us(store.get_row, rows, 50_000)
        keys = [store.keys[r].decode() for r in rows[:20_000]]
        by_key = median_us(store.get, keys, 20_000)

        group = zarr.open_group(str(path), mode="r")
        zi, zv = group["indices"], group["values"]
        phys = [int(group["rows"][r]) for r in rows[:300]]
        slow = median_us(lambda p: (zi[p], zv[p]), phys, 300)

        batches = [random.sample(range(n), 256) for _ in range(400)]
        # Interleaved, so that both see the same load: the batch path, and 256 single reads.
        batch_t, loop_t = [], []
        for b in batches:
            batch_t.append(median_us(store.get_rows, [b], 1) / 1000)
            loop_t.append(median_us(lambda rows: [store.get_row(r) for r in rows], [b], 1) / 1000)
        batch, loop = statistics.median(batch_t), statistics.median(loop_t)

        spread_path = Path(tmp) / "spread.relabel.zarr"
        write_synthetic_store(spread_path, imagenet_like_keys(args.records), shard_records=32)
        spread = load_relabel(spread_path)
        for b in batches[:20]:
            spread.get_rows(b)
        spread_t = [median_us(spread.get_rows, [b], 1) / 1000 for b in batches]
        touched = statistics.median(len({int(spread._rows[r]) // 32 for r in b}) for b in batches)

        size = store.manifest.total_bytes
        per = size / n
        print(f"records: {n}, shards of {store.metadata.shard_records}")
        print(f"single record by row, warm, median: {fast:.1f} µs   (target <= 20 µs)")
        print(f"single record by key, warm, median: {by_key:.1f} µs")
        print(f"zarr-python array[i] (indices+values), median: {slow:.0f} µs")
        print(f"speed-up over zarr-python: {slow / fast:.0f}x   (target >= 50x)")
        print(
            f"batch of 256 random records, median: {batch:.2f} ms   (target <= 2 ms; "
            f"fastest {min(batch_t):.2f} ms, {cores_per_process()} cores)"
        )
        print(
            f"the same 256 records as single reads, median: {loop:.2f} ms   "
            f"(batch {loop / batch:.1f}x faster; fastest {min(loop_t):.2f} ms)"
        )
        print(
            f"batch of 256 random records, shards of 32 ({touched:.0f} shards a batch, as on "
            f"ImageNet), median: {statistics.median(spread_t):.2f} ms   (fastest "
            f"{min(spread_t):.2f} ms)"
        )
        floor_one, floor_two = libzstd_floor_ms()
        print(
            f"libzstd alone on a batch's 512 frames: {floor_one:.2f} ms on one thread, "
            f"{floor_two:.2f} ms on two (the floor under the batch figures)"
        )
        raw_one, raw_two = libzstd_floor_ms(level=-1)
        print(
            f"the same frames at zstd level -1 (literals stored raw, 46% larger ids): "
            f"{raw_one:.2f} ms on one thread, {raw_two:.2f} ms on two"
        )
        print(
            f"open (metadata and key index checked), median: {statistics.median(opens) * 1e3:.1f} ms"
        )
        print(f"bytes per record on disk: {per:.0f} B (all files, incl. keys and manifest)")
        print(f"projection to {IMAGENET:,} records: {per * IMAGENET / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
