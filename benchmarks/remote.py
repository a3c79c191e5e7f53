"""Remote reading against the loopback fake Hub (tests/_fake_hub.py), with a local store in the
same run for reference.

    python benchmarks/remote.py [--records 16384] [--shard-records 4096] [--samples 300]

Prints:

- push: requests and time to publish the store (huggingface_hub client, Xet off);
- range mode, cold: requests and bytes per record read, split into the first record of a shard
  (shard index and the Hub's redirect to the CDN not yet known) and the others;
- cache mode: time to first record on a cold cache (open + the record's two shard downloads),
  and steady-state random single-record reads per second once shards are cached, against the
  local store (target: within 10%).

The loopback server answers in well under a millisecond, so times here are CPU and protocol
costs, not network latency; request counts and bytes are what carries over to the real Hub.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest  # MonkeyPatch, to point huggingface_hub at the fake Hub
from _synthetic import imagenet_like_keys, write_synthetic_store
from huggingface_hub.utils import disable_progress_bars

from relabel_store import load_relabel
from relabel_store.publish.push import push

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _fake_hub import FakeHub, fake_hub_env

REPO = "bench/relabel"


def rate(store, rows: list[int]) -> float:
    t = time.perf_counter()
    for r in rows:
        store.get_row(r)
    return len(rows) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=16384)
    ap.add_argument("--shard-records", type=int, default=4096)
    ap.add_argument("--samples", type=int, default=300, help="records read cold in range mode")
    args = ap.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp, FakeHub() as hub, pytest.MonkeyPatch.context() as mp:
        tmp = Path(tmp)
        fake_hub_env(mp, tmp, hub)
        disable_progress_bars()  # huggingface_hub's upload bars would bury the figures
        path = tmp / "bench.relabel.zarr"
        write_synthetic_store(
            path, imagenet_like_keys(args.records), shard_records=args.shard_records
        )
        local = load_relabel(path)
        n = len(local)
        print(
            f"store: {n} records, {local.metadata.shard_records} per shard, "
            f"{local.manifest.total_bytes / 1e6:.1f} MB in {len(local.manifest.entries) + 1} files"
        )

        t = time.perf_counter()
        pushed = push(path, REPO)
        print(
            f"push: {len(hub.requests)} requests, {time.perf_counter() - t:.2f} s, "
            f"{pushed.commits} commits, commit {pushed.commit[:12]}"
        )
        sha = pushed.commit

        # -- range mode, cold ---------------------------------------------------------------------
        hub.reset_log()
        ranged = load_relabel(REPO, revision=sha, mode="range", cache_dir=tmp / "range-cache")
        print(
            f"range mode open: {len(hub.requests)} requests, {hub.bytes_sent() / 1e3:.1f} kB "
            "(metadata, keys, rows, labels, sizes; fetched in parallel)"
        )
        per_shard = ranged.metadata.shard_records
        rows = random.sample(range(n), min(args.samples, n))
        seen: set[int] = set()
        first, later = [], []
        for r in rows:
            hub.reset_log()
            t = time.perf_counter()
            ranged.get_row(r)
            dt = time.perf_counter() - t
            shard = int(ranged._rows[r]) // per_shard
            stats = (len(hub.requests), hub.bytes_sent(), dt)
            (later if shard in seen else first).append(stats)
            seen.add(shard)

        def show(label: str, stats: list[tuple[int, int, float]]) -> None:
            if not stats:
                return
            reqs = statistics.mean(s[0] for s in stats)
            kb = statistics.mean(s[1] for s in stats) / 1e3
            ms = statistics.median(s[2] for s in stats) * 1e3
            print(
                f"  {label}: {len(stats)} reads, {reqs:.2f} requests/record, "
                f"{kb:.2f} kB/record, median {ms:.2f} ms"
            )

        print(
            "range mode, cold records (indices + values); latency is the loopback fake's (a "
            "Python server, not the Hub's): count requests and bytes here"
        )
        show("first record of a shard", first)
        show("other records (shard index known)", later)
        allstats = first + later
        print(
            f"  all: {statistics.mean(s[0] for s in allstats):.2f} requests/record, "
            f"{statistics.mean(s[1] for s in allstats) / 1e3:.2f} kB/record "
            f"(a record is {local.manifest.total_bytes / n / 1e3:.2f} kB on disk)"
        )

        # -- cache mode ---------------------------------------------------------------------------
        hub.reset_log()
        t = time.perf_counter()
        cached = load_relabel(REPO, revision=sha, cache_dir=tmp / "cache")
        t_open = time.perf_counter() - t
        cached.get_row(rows[0])
        t_first = time.perf_counter() - t
        print(
            f"cache mode, cold: open {t_open * 1e3:.0f} ms, first record {t_first * 1e3:.0f} ms "
            f"({len(hub.requests)} requests, {hub.bytes_sent() / 1e6:.2f} MB: metadata + 2 shards)"
        )
        t = time.perf_counter()
        cached.get_rows(list(range(n)))  # touch every shard
        print(f"cache mode, fill the rest: {time.perf_counter() - t:.2f} s")

        hub.reset_log()
        order = [random.randrange(n) for _ in range(50_000)]
        rate(local, order[:5000])
        rate(cached, order[:5000])
        local_rates, cached_rates = [], []
        for i in range(9):  # interleaved, alternating who goes first: same machine state
            pair = [(local, local_rates), (cached, cached_rates)]
            for store, rates in pair if i % 2 == 0 else pair[::-1]:
                gc.collect()
                rates.append(rate(store, order))
        lr, cr = max(local_rates), max(cached_rates)
        print(
            f"steady state, random single records, best of 9 rounds of {len(order):,} "
            f"(medians: cache {statistics.median(cached_rates):,.0f}/s, "
            f"local {statistics.median(local_rates):,.0f}/s):"
        )
        print(
            f"  cache mode {cr:,.0f}/s, local {lr:,.0f}/s "
            f"-> {cr / lr:.1%} of local (target >= 90%), {len(hub.requests)} requests"
        )


if __name__ == "__main__":
    main()
