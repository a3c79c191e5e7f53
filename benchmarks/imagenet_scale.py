"""A store the size of ImageNet's training set: write, finalize, open, memory, reads, verify.

    python benchmarks/imagenet_scale.py [--records 1281167] [--classes 1000] [--keep PATH]
    python benchmarks/imagenet_scale.py --records 13153500 --classes 21841   # ImageNet-21k
    python benchmarks/imagenet_scale.py --read PATH   # only the read-side figures of a store

Builds a store of ``--records`` records (default: ImageNet's 1,281,167) of realistic synthetic
15x15 top-5 maps (``_synthetic.py``; a pool of 4,096 maps, each shard a different rotation of
it, so that generating maps costs nothing next to writing them) with ImageNet-shaped keys
(``n00000123_160001``), through the public ``StoreWriter`` on all cores, shards written in the
background while the next ones are prepared. Then prints, each with its target:

- write time and records/s; finalize time (sorting and indexing the keys, manifest);
- size on disk and files;
- open time (target <= 1 s): the first open, which decodes the key index (and, for a store of
  200,000 records or more, writes it to the cache, see read/_key_index.py), and a later one,
  which maps it;
- memory of the key index in a fresh process that opens the store: anonymous (private heap,
  target <= 64 MB), and PSS / USS from /proc/self/smaps_rollup (mapped pages of the cached key
  index are shared page cache: PSS splits them among the processes that map them); and what a
  forked and a spawned DataLoader worker hold after 20,000 random reads (its anonymous memory
  and private dirty pages, and its PSS);
- random single-record reads and batches of 256 across the whole store;
- ``verify`` throughput on one core (target >= 300 MB/s).

The full run writes about 3 GB and takes minutes; run it on a quiet machine.

``--compress-once``: the store repeats the pool's 4,096 maps, and the codecs are deterministic,
so each distinct record needs compressing only once: after the first 16 shards (written and
timed as usual, the real write rate), every chunk comes from a memo of the codec's own output
for the same record bytes (checked: the memo's output for a record equals a fresh encode).
The files are byte for byte what the writer writes without it; only the compression time is
left out. It is what makes the ImageNet-21k run (13M records: ~44 minutes of zstd on 2 quiet
cores) fit in minutes, so that finalize, open, memory, reads and verify are measured at that
size.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _synthetic import imagenet_like_keys, synthetic_maps

from relabel_store import StoreMetadata, StoreWriter, load_relabel, verify_store

IMAGENET = 1_281_167
POOL = 4096


def rollup(pid: int | str = "self") -> dict[str, float]:
    """/proc/<pid>/smaps_rollup in MB: Rss, Pss, Anonymous, Private_Dirty, and USS (private
    clean + private dirty: pages no other process maps)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    out["USS"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def _worker(store, rows, out) -> None:
    before = rollup()
    for r in rows:
        store.get_row(r)
    out.put((before, rollup()))


def _delta(after: dict[str, float], before: dict[str, float]) -> str:
    return (
        f"anonymous {after['Anonymous'] - before['Anonymous']:+.1f} MB, private dirty "
        f"{after['Private_Dirty'] - before['Private_Dirty']:+.1f} MB, PSS "
        f"{after['Pss'] - before['Pss']:+.1f} MB, USS {after['USS'] - before['USS']:+.1f} MB"
    )


def read_side(path: Path) -> None:
    """Open, memory, reads and verify, in this (fresh) process."""
    started = time.perf_counter()
    store = load_relabel(path)
    first = time.perf_counter() - started
    mapped = isinstance(store._keys, np.memmap)
    store.close()
    del store
    base = rollup()
    started = time.perf_counter()
    store = load_relabel(path)
    opened = time.perf_counter() - started
    print(f"open:      {first:8.3f} s first (decodes the key index{' and caches it' if mapped else ''}), "
          f"{opened:.3f} s later (target <= 1 s)")  # fmt: skip
    after = rollup()
    print(f"key index: {_delta(after, base)} in the process that opened the store "
          f"({'memory-mapped' if mapped else 'held in memory'}; target <= 64 MB anonymous)")  # fmt: skip

    rows = [random.randrange(len(store)) for _ in range(20_000)]
    for method in ("fork", "spawn"):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        child = ctx.Process(target=_worker, args=(store, rows, queue))
        child.start()
        before, after = queue.get()
        child.join()
        print(f"worker:    {method}ed, after 20,000 random reads: {after['Anonymous']:.1f} MB "
              f"anonymous, {after['Private_Dirty']:.1f} MB private dirty, PSS {after['Pss']:.1f} MB "
              f"(reads added: {_delta(after, before)})")  # fmt: skip

    for r in rows[:5000]:  # warm: shard indexes cached here too
        store.get_row(r)
    times = []
    for r in rows:
        t = time.perf_counter_ns()
        store.get_row(r)
        times.append(time.perf_counter_ns() - t)
    batch_times, loop_times = [], []
    for _ in range(100):
        sample = random.sample(range(len(store)), 256)
        t = time.perf_counter_ns()
        store.get_rows(sample)
        batch_times.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        for r in sample:
            store.get_row(r)
        loop_times.append(time.perf_counter_ns() - t)
    print(f"reads:     {statistics.median(times) / 1000:8.1f} µs per random record (median; "
          f"target <= 30 µs), {statistics.median(batch_times) / 1e6:.2f} ms per random batch of "
          f"256 (256 single reads: {statistics.median(loop_times) / 1e6:.2f} ms)")  # fmt: skip
    size = store.manifest.total_bytes
    store.close()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"disk:      {cold_read_us(path):8.1f} µs per 4 KiB read of a page not in memory "
          f"(median of 200); the store is {size / 1e9:.1f} GB, this machine's memory "
          f"{memory / 1e9:.1f} GB")  # fmt: skip

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    started = time.perf_counter()
    report = verify_store(path)
    seconds = time.perf_counter() - started
    print(f"verify:    {seconds:8.1f} s, {size / seconds / 1e6:,.0f} MB/s on one core "
          f"(target >= 300 MB/s), {'ok' if report.ok else 'FAILED'}")  # fmt: skip


REAL_SHARDS = 16  # written with real compression (the write rate) before --compress-once starts


def compress_once() -> Callable[[], int]:
    """Memoise every chunk codec's output per distinct record (see the module docstring);
    returns a check that encodes a sample of the memo afresh and compares."""
    from relabel_store.format._codecs import CodecChain

    encode = CodecChain.encode
    memo: dict[tuple[int, bytes], bytes] = {}  # (id of the codec chain, record bytes) -> chunk
    chains: dict[int, CodecChain] = {}

    def memoised(self: CodecChain, records: np.ndarray) -> list[bytes]:
        rows = records.reshape(len(records), -1)
        out = []
        for i in range(len(rows)):
            key = (id(self), rows[i].tobytes())
            chunk = memo.get(key)
            if chunk is None:
                chunk = memo[key] = encode(self, records[i : i + 1])[0]
                chains[id(self)] = self
            out.append(chunk)
        return out

    CodecChain.encode = memoised  # type: ignore[method-assign]

    def check() -> int:
        sample = random.sample(sorted(memo, key=lambda k: k[1]), min(256, len(memo)))
        for chain, raw in sample:
            dtype = np.dtype("<u2")  # both arrays hold 2-byte items; the chunk is the bytes
            records = np.frombuffer(raw, dtype)[None]
            assert encode(chains[chain], records)[0] == memo[chain, raw], "memo differs"
        return len(sample)

    return check


def cold_read_us(path: Path, samples: int = 200) -> float:
    """Median time of a 4 KiB read from a random place in a random shard file whose cached
    pages were dropped first (``posix_fadvise(DONTNEED)``): what a record read costs beyond the
    reader when the store does not fit in the page cache."""
    files = sorted((path / "values").glob("c*")) + sorted((path / "indices").glob("c*"))
    times = []
    for f in random.sample(files, min(samples, len(files))):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            offset = random.randrange(max(1, os.fstat(fd).st_size - 4096)) // 4096 * 4096
            t = time.perf_counter_ns()
            os.pread(fd, 4096, offset)
            times.append(time.perf_counter_ns() - t)
        finally:
            os.close(fd)
    return statistics.median(times) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=IMAGENET)
    ap.add_argument("--shard-records", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=1000, help="21841 for ImageNet-21k (fall11)")
    ap.add_argument("--keep", type=Path, help="write the store here and keep it")
    ap.add_argument("--read", type=Path, help="only measure the read side of this store")
    ap.add_argument(
        "--compress-once", action="store_true",
        help=f"after {REAL_SHARDS} shards, compress each distinct record once (see above)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.read:
        read_side(args.read)
        return
    tmp = Path(tempfile.mkdtemp(prefix="imagenet-scale-"))
    # The cached key index (read/_key_index.py) goes with the store, not into the user's cache.
    os.environ.setdefault("RELABEL_STORE_CACHE", str(tmp / "cache"))
    path = args.keep or tmp / "imagenet.relabel.zarr"
    try:
        n = args.records
        keys = imagenet_like_keys(n)
        labels = (np.arange(n, dtype=np.int64) * args.classes // n).astype(np.int32)
        rng = np.random.default_rng(0)
        pool_idx, pool_val = synthetic_maps(rng, POOL, num_classes=args.classes)
        meta = StoreMetadata(
            grid=(15, 15), k=5, num_classes=args.classes, rows=n, shard_records=args.shard_records
        )
        writer = StoreWriter.open(path, meta, overwrite=True)
        print(f"writing {n:,} records in {writer.num_shards} shards, {writer.threads} threads")
        started = time.perf_counter()
        real = None  # (records, seconds) written with real compression
        phases = [range(writer.num_shards)]
        if args.compress_once:
            phases = [
                range(min(REAL_SHARDS, writer.num_shards)),
                range(REAL_SHARDS, writer.num_shards),
            ]
        for phase in phases:
            if real is None and phase.start == REAL_SHARDS:
                real = (sum(len(writer.shard_rows(s)) for s in range(REAL_SHARDS)),
                        time.perf_counter() - started)  # fmt: skip
                check_memo = compress_once()
            with writer.background() as background:
                for s in phase:
                    r = writer.shard_rows(s)
                    take = (np.arange(len(r)) + 977 * s) % POOL  # a different rotation per shard
                    background.submit(
                        s, keys=keys[r.start : r.stop], labels=labels[r.start : r.stop],
                        sizes=np.tile([375, 500], (len(r), 1)), indices=pool_idx[take],
                        values=pool_val[take],
                    )  # fmt: skip
        write = time.perf_counter() - started
        if real is not None:
            print(f"memo:      {check_memo()} memoised chunks encoded afresh: identical")
        if real is None:
            print(f"write:     {write:8.1f} s   ({n / write:,.0f} records/s)")
        else:
            print(f"write:     {real[1]:8.1f} s for the first {real[0]:,} records "
                  f"({real[0] / real[1]:,.0f} records/s, real compression); all {n:,} in "
                  f"{write:.1f} s with each distinct record compressed once")  # fmt: skip
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
