"""The key index alone at ImageNet-21k scale (13,153,500 records), without writing any maps.

    python benchmarks/key_index_scale.py [--records 13153500]

Writing 13M records of maps takes most of an hour on 2 quiet cores (``imagenet_scale.py``);
the key index's costs (decoding at first open, the cached file, mapping it at later opens, its
memory per process and per DataLoader worker, lookups by key) depend only on the keys. This
script writes the four key-index arrays exactly as ``StoreWriter.finalize`` does (zarr-python,
same chunks and codec), then, in a fresh process each:

- *first open*: the arrays decoded as the reader decodes them (``ArrayLayout.read_regular``),
  narrowed, the key order checked, and the cache file written;
- *later open*: the cache file mapped (``read/_key_index.py``), a sample of the key order and
  the row range checked, as ``RelabelStore`` does at every open;
- memory of that process (anonymous, PSS, USS from /proc/self/smaps_rollup), and of a forked
  and a spawned worker after 20,000 random lookups by key;
- lookups by key (``searchsorted`` over the mapped table, as ``rows_of`` does).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from _synthetic import imagenet_like_keys
from zarr.codecs import ZstdCodec

from relabel_store.format._layout import ArrayLayout
from relabel_store.format._shards import cores_per_process
from relabel_store.format.metadata import DEFAULT_ZSTD_LEVEL, KEY_CHUNK_ROWS
from relabel_store.read import _key_index
from relabel_store.read.reader import _check_key_order, _narrowed

IN21K = 13_153_500
NAMES = ("keys", "rows", "labels", "sizes")


def rollup() -> dict[str, float]:
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    out["USS"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def write_index(root: Path, n: int, classes: int) -> None:
    written = np.array(imagenet_like_keys(n), dtype="S")  # in row (input) order
    order = np.argsort(written, kind="stable")  # as finalize sorts them
    keys = written[order]
    width = keys.dtype.itemsize
    data = {
        "keys": keys.view(np.uint8).reshape(n, width),
        "rows": order.astype(np.int64),
        "labels": (order * classes // n).astype(np.int32),
        "sizes": np.tile(np.array([[375, 500]], np.int32), (n, 1)),
    }
    group = zarr.open_group(str(root), mode="w", zarr_format=3)
    for name, array in data.items():
        z = group.create_array(
            name, shape=array.shape, dtype=array.dtype,
            chunks=(min(n, KEY_CHUNK_ROWS), *array.shape[1:]),
            compressors=[ZstdCodec(level=DEFAULT_ZSTD_LEVEL, checksum=True)], fill_value=0,
            chunk_key_encoding={"name": "default", "configuration": {"separator": "."}},
        )  # fmt: skip
        z[...] = array


def _read(root: Path, name: str) -> np.ndarray:
    layout = ArrayLayout.parse(name, (root / name / "zarr.json").read_bytes(), str(root))

    def read(key: str) -> bytes | None:
        path = root / key
        return path.read_bytes() if path.exists() else None

    return layout.read_regular(read, str(root), threads=cores_per_process())


def first_open(root: Path, cache: Path) -> None:
    started = time.perf_counter()
    keys = _read(root, "keys")
    index = (
        np.ascontiguousarray(keys).view(f"S{keys.shape[1]}").reshape(-1),
        _narrowed(_read(root, "rows"), np.int32),
        _narrowed(_read(root, "labels"), np.int16),
        _narrowed(_read(root, "sizes"), np.uint16),
    )
    decoded = time.perf_counter() - started
    _check_key_order(index[0], "keys")
    _key_index.save(cache, index)
    total = time.perf_counter() - started
    size = cache.stat().st_size
    print(f"first open: {total:6.2f} s (decode {decoded:.2f} s, key order, cache file of "
          f"{size / 1e6:.0f} MB written)")  # fmt: skip


def _lookups(index: _key_index.Index, keys: list[bytes], out) -> None:  # type: ignore[no-untyped-def]
    before = rollup()
    table = index[0]
    for k in keys:
        int(np.searchsorted(table, k))
    out.put((before, rollup()))


def later_open(cache: Path, n: int) -> None:
    base = rollup()
    started = time.perf_counter()
    index = _key_index.load(cache, n)
    assert index is not None
    _check_key_order(index[0][_key_index.sample_positions(n)], "keys")  # as RelabelStore does
    assert index[1].min() >= 0 and index[1].max() < n
    opened = time.perf_counter() - started
    after = rollup()
    print(f"later open: {opened:6.3f} s (map, key order and row range checked; target <= 1 s)")
    print(f"opener:     anonymous {after['Anonymous'] - base['Anonymous']:+.1f} MB, PSS "
          f"{after['Pss'] - base['Pss']:+.1f} MB, USS {after['USS'] - base['USS']:+.1f} MB "
          "(the row range check touches every page of the mapped rows once)")  # fmt: skip
    keys = [index[0][random.randrange(n)] for _ in range(20_000)]
    times = []
    for k in keys:
        t = time.perf_counter_ns()
        int(np.searchsorted(index[0], k))
        times.append(time.perf_counter_ns() - t)
    print(f"lookup:     {statistics.median(times) / 1000:6.1f} µs per key (median)")
    for method in ("fork", "spawn"):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        if method == "spawn":  # a spawned worker reopens: it maps the same file
            child = ctx.Process(target=_spawned, args=(cache, n, keys, queue))
        else:
            child = ctx.Process(target=_lookups, args=(index, keys, queue))
        child.start()
        before, end = queue.get()
        child.join()
        print(f"worker:     {method}ed, after 20,000 lookups: anonymous {end['Anonymous']:.1f} MB "
              f"(+{end['Anonymous'] - before['Anonymous']:.1f}), private dirty "
              f"{end['Private_Dirty']:.1f} MB, PSS {end['Pss']:.1f} MB, USS {end['USS']:.1f} MB")  # fmt: skip


def _spawned(cache: Path, n: int, keys: list[bytes], out) -> None:  # type: ignore[no-untyped-def]
    index = _key_index.load(cache, n)
    assert index is not None
    _lookups(index, keys, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=IN21K)
    ap.add_argument("--classes", type=int, default=21841)
    ap.add_argument("--step", choices=["first", "later"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step == "first":
        first_open(args.root, args.root / "index.keyindex")
        return
    if args.step == "later":
        later_open(args.root / "index.keyindex", args.records)
        return
    root = Path(tempfile.mkdtemp(prefix="key-index-scale-"))
    try:
        started = time.perf_counter()
        write_index(root, args.records, args.classes)
        stored = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"records:    {args.records:,}; key index in the store: {stored / 1e6:.0f} MB "
              f"(written in {time.perf_counter() - started:.0f} s)")  # fmt: skip
        for step in ("first", "later"):
            subprocess.run([sys.executable, __file__, "--step", step, "--root", str(root),
                            "--records", str(args.records)], check=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
