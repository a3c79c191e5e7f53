"""A store the size of ImageNet's training set: write, finalize, open, memory, reads, verify.

    python benchmarks/imagenet_scale.py [--records 1281167] [--keep PATH]
    python benchmarks/imagenet_scale.py --read PATH   # only the read-side figures of a store

Builds a store of ``--records`` records (default: ImageNet's 1,281,167) of realistic synthetic
15x15 top-5 maps (``_synthetic.py``; a pool of 4,096 maps, each shard a different rotation of
it, so that generating maps costs nothing next to writing them) with ImageNet-shaped keys
(``n00000123_160001``), through the public ``StoreWriter`` on all cores, shards written in the
background while the next ones are prepared. Then prints, each with its target:

- write time and records/s; finalize time (sorting and indexing the keys, manifest);
- size on disk and files;
- open time (target <= 1 s);
- anonymous memory of the key index in a fresh process that opens the store, and what a forked
  DataLoader worker adds after 20,000 random reads (target <= 40 MB each; memory-mapped shard
  pages are page cache, not counted);
- random single-record reads and batches of 256 across the whole store;
- ``verify`` throughput on one core (target >= 300 MB/s).

The full run writes about 3 GB and takes minutes; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _synthetic import imagenet_like_keys, synthetic_maps

from relabel_store import StoreMetadata, StoreWriter, load_relabel, verify_store

IMAGENET = 1_281_167
POOL = 4096


def _rollup(field: str) -> float:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/smaps_rollup")


def anonymous_mb() -> float:
    """Anonymous memory of this process (heap, numpy arrays; not file pages), MB."""
    return _rollup("Anonymous:")


def private_dirty_mb() -> float:
    """Memory this process has written and holds alone (after fork: its own copies), MB."""
    return _rollup("Private_Dirty:")


def _worker(store, rows, out) -> None:
    before = private_dirty_mb()
    for r in rows:
        store.get_row(r)
    out.put((before, private_dirty_mb()))


def read_side(path: Path) -> None:
    """Open, memory, reads and verify, in this (fresh) process."""
    base = anonymous_mb()
    started = time.perf_counter()
    store = load_relabel(path)
    opened = time.perf_counter() - started
    print(f"open:      {opened:8.3f} s   (target <= 1 s)")
    print(f"key index: {anonymous_mb() - base:8.1f} MB in the process that opened the store "
          "(target <= 40 MB)")  # fmt: skip

    rows = [random.randrange(len(store)) for _ in range(20_000)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_worker, args=(store, rows, queue))
    child.start()
    before, after = queue.get()
    child.join()
    print(f"worker:    {after - before:8.1f} MB written by a forked worker in 20,000 random reads "
          "(target <= 40 MB)")  # fmt: skip

    for r in rows[:5000]:  # warm: shard indexes cached here too
        store.get_row(r)
    times = []
    for r in rows:
        t = time.perf_counter_ns()
        store.get_row(r)
        times.append(time.perf_counter_ns() - t)
    batch_times = []
    for _ in range(100):
        sample = random.sample(range(len(store)), 256)
        t = time.perf_counter_ns()
        store.get_rows(sample)
        batch_times.append(time.perf_counter_ns() - t)
    print(f"reads:     {statistics.median(times) / 1000:8.1f} µs per random record (median), "
          f"{statistics.median(batch_times) / 1e6:.2f} ms per random batch of 256")  # fmt: skip
    size = store.manifest.total_bytes
    store.close()

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    started = time.perf_counter()
    report = verify_store(path)
    seconds = time.perf_counter() - started
    print(f"verify:    {seconds:8.1f} s, {size / seconds / 1e6:,.0f} MB/s on one core "
          f"(target >= 300 MB/s), {'ok' if report.ok else 'FAILED'}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=IMAGENET)
    ap.add_argument("--shard-records", type=int, default=4096)
    ap.add_argument("--keep", type=Path, help="write the store here and keep it")
    ap.add_argument("--read", type=Path, help="only measure the read side of this store")
    args = ap.parse_args()
    if args.read:
        read_side(args.read)
        return
    tmp = Path(tempfile.mkdtemp(prefix="imagenet-scale-"))
    path = args.keep or tmp / "imagenet.relabel.zarr"
    try:
        n = args.records
        keys = imagenet_like_keys(n)
        labels = np.arange(n, dtype=np.int32) // 1300
        rng = np.random.default_rng(0)
        pool_idx, pool_val = synthetic_maps(rng, POOL)
        meta = StoreMetadata(
            grid=(15, 15), k=5, num_classes=1000, rows=n, shard_records=args.shard_records
        )
        writer = StoreWriter.open(path, meta, overwrite=True)
        print(f"writing {n:,} records in {writer.num_shards} shards, {writer.threads} threads")
        started = time.perf_counter()
        with writer.background() as background:
            for s in range(writer.num_shards):
                r = writer.shard_rows(s)
                take = (np.arange(len(r)) + 977 * s) % POOL  # a different rotation per shard
                background.submit(
                    s, keys=keys[r.start : r.stop], labels=labels[r.start : r.stop],
                    sizes=np.tile([375, 500], (len(r), 1)), indices=pool_idx[take],
                    values=pool_val[take],
                )  # fmt: skip
        write = time.perf_counter() - started
        print(f"write:     {write:8.1f} s   ({n / write:,.0f} records/s)")
        started = time.perf_counter()
        manifest = writer.finalize()
        print(f"finalize:  {time.perf_counter() - started:8.1f} s")
        size = manifest.total_bytes
        print(f"size:      {size / 1e9:8.2f} GB in {len(manifest.entries)} files "
              f"({size / n:,.0f} B per record)")  # fmt: skip
        # A fresh process opens it, as a training job would.
        subprocess.run([sys.executable, __file__, "--read", str(path)], check=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
