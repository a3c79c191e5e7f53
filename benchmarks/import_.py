"""Import throughput: `relabel-store import` end to end, against decoding alone.

    python benchmarks/import_.py [--maps 20000] [--workers N]

Builds a tar in the official ReLabel layout from realistic synthetic maps, each file written by
real ``torch.save`` in the release's legacy serialization (float32 ``[2, 5, 15, 15]``,
``imagenet_efficientnet_l2_sz475_top5/<wnid>/<stem>.pt``, 1,300 images per real wnid), then
times in one run:

- scan: the header pass that lists the members (rows);
- decode only: the second pass without a store (read the tar once with sha256, members
  decoded by ``torch.load(weights_only=True)`` and checked in the worker processes);
- import: ``import_maps`` end to end (scan, decode, the writer's compression and shard
  writes, finalize, manifest), float16 values and float32 values.

It prints maps/s with the projection to the release's 1,281,167 maps (target: <= 20 minutes on
2 cores, >= 1,070 maps/s end to end), the CPU time per map of the importing process (reading,
the store writer's compression) and of the decoding workers, which shows which side limits on a
shared machine too, bytes per record with the projected store size, and the
largest change float16 logits make to pooled targets at several logit scales. The tar is read
from the page cache (just written): a cold disk adds its read time, about 12 GB.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _synthetic import synthetic_maps

from relabel_store.format.label_space import imagenet_label_space
from relabel_store.write._archive import open_archive
from relabel_store.write.importer import (
    CHUNK_RECORDS,
    MEASURE_CROPS,
    _place_members,
    _recognise,
    decode_chunks,
    decoder_pool,
    import_maps,
    rounding_difference,
)

IMAGENET = 1_281_167
TOP = "imagenet_efficientnet_l2_sz475_top5"


def official_tar(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` float32 maps in the release's layout and serialization."""
    wnids = imagenet_label_space().class_identifiers or ()
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as tf:
        for start in range(0, n, 1000):
            idx, val = synthetic_maps(rng, min(1000, n - start), dtype=np.float32)
            for j in range(len(idx)):
                i = start + j
                wnid = wnids[i // 1300]
                tensor = torch.stack(
                    [
                        torch.from_numpy(val[j]).permute(2, 0, 1),
                        torch.from_numpy(idx[j].astype(np.float32)).permute(2, 0, 1),
                    ]
                )
                buf = io.BytesIO()
                torch.save(tensor, buf, _use_new_zipfile_serialization=False)
                info = tarfile.TarInfo(f"{TOP}/{wnid}/{wnid}_{i}.pt")
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
    return path


def decode_only(tar: Path, workers: int) -> tuple[float, float]:
    """(scan seconds, scan + decode seconds) of the import's two passes, nothing written."""
    t0 = time.perf_counter()
    archive = open_archive(tar)
    members = archive.scan(False)
    scanned = time.perf_counter() - t0
    space = imagenet_label_space()
    _place_members(members, space.class_identifiers or ())
    spec = _recognise(archive, members, "auto", "float16", 1000)
    plan = [
        (range(s, min(s + CHUNK_RECORDS, len(members))), True)
        for s in range(0, len(members), CHUNK_RECORDS)
    ]
    executor = decoder_pool(workers)
    try:
        for _ in decode_chunks(archive, plan, spec, executor, workers, measure=True):
            pass
    finally:
        executor.shutdown()
    assert archive.sha256 is not None
    return scanned, time.perf_counter() - t0


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process and of its finished children (the workers)."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def cpu_per_map(before: tuple[float, float], n: int) -> str:
    me, kids = (b - a for a, b in zip(before, cpu_seconds(), strict=True))
    return (
        f"CPU per map: importing process {me / n * 1e6:5.0f} us, workers {kids / n * 1e6:4.0f} us"
    )


def projection(rate: float) -> str:
    seconds = IMAGENET / rate
    return f"{rate:8.0f} maps/s   ImageNet {seconds / 60:6.1f} min"


def rounding_at_scales(n: int, crops_note: str) -> None:
    rng = np.random.default_rng(1)
    idx, val = synthetic_maps(rng, n, dtype=np.float32)
    print(f"float16 logits, largest pooled-target change ({n} maps x {crops_note}):")
    for scale in (1, 2, 4):
        exact = val * np.float32(scale)
        worst = max(
            rounding_difference(idx[i], exact[i], exact[i].astype(np.float16), 1000, i)
            for i in range(n)
        )
        print(f"  logits up to {np.abs(exact).max():5.1f}: {worst:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--maps", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (all CPUs)")
    ap.add_argument("--rounding-maps", type=int, default=2000)
    args = ap.parse_args()
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        tar = official_tar(tmp / "relabel_imagenet.tar", args.maps)
        size = tar.stat().st_size
        print(
            f"{args.maps} synthetic official-format maps, tar {size / 1e6:.0f} MB "
            f"({size / args.maps:.0f} B per map), built in {time.perf_counter() - t0:.0f} s; "
            f"{os.cpu_count()} CPUs, {workers} decoding workers"
        )
        before = cpu_seconds()
        scan, decode = decode_only(tar, workers)
        decode_cpu = cpu_per_map(before, args.maps)
        results = {}
        for values in ("float16", "float32"):
            before = cpu_seconds()
            t0 = time.perf_counter()
            result = import_maps(
                tar, tmp / f"{values}.zarr", values=values, workers=workers, progress=False
            )
            seconds = time.perf_counter() - t0
            results[values] = (seconds, result, cpu_per_map(before, args.maps))
        print(f"scan (header pass):               {projection(args.maps / scan)}")
        print(f"decode only (scan + read + load): {projection(args.maps / decode)}   {decode_cpu}")
        for values, (seconds, result, cpu) in results.items():
            per = result.store_bytes / result.records
            print(
                f"import, {values} values:          {projection(args.maps / seconds)}   {cpu}   "
                f"{per:,.0f} B/record, ImageNet {per * IMAGENET / 1e9:.2f} GB"
            )
        rounding = results["float16"][1].rounding
        print(
            f"float16 rounding measured by the import: {rounding['max_pooled_target_difference']:.2e}"
            f" over {rounding['maps']} maps x {rounding['crops_per_map']} crops"
        )
    rounding_at_scales(args.rounding_maps, f"{MEASURE_CROPS} crops")


if __name__ == "__main__":
    main()
