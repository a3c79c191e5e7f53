"""Cost of mixing soft targets in timm's collate, and of the first-batch collate check.

Run: ``python benchmarks/mixing.py [--reps 30] [--batch 64] [--size 224]``.

- per batch: ``SoftCollateMixup`` against timm's own ``FastCollateMixup(multi_label=True)``
  (the same image mixing; timm's label mixing of dense targets, unsmoothed) on a batch of uint8
  images and float (1000,) targets, train.py's mixup settings, the same numpy seed for both,
  interleaved pass by pass (each first in every other pass) so that a busy machine slows both
  alike: medians, ms, and the ratio.
- the check: ``check_collate`` (one probe collate of two samples, once per process and
  collate_fn), ms; and ``collate_of_caller`` (finding the DataLoader's collate_fn, on every
  batch), µs, walked to its full depth (the worst case: no DataLoader above), against the same
  nested calls without it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from timm.data import FastCollateMixup

from relabel_store.loaders import SoftCollateMixup
from relabel_store.loaders.mixing import check_collate, collate_of_caller

MIXUP = dict(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=1000)


def _nested(depth: int, walk: bool) -> object:
    if depth:
        return _nested(depth - 1, walk)
    return collate_of_caller() if walk else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (args.batch, 3, args.size, args.size), np.uint8))
    logits = torch.from_numpy(rng.normal(0, 3, (args.batch, 1000)).astype(np.float32))
    batch = list(zip(images, logits.softmax(1), strict=True))
    ours = SoftCollateMixup(**MIXUP, label_smoothing=0.1)
    timms = FastCollateMixup(**MIXUP, label_smoothing=0.0, multi_label=True)
    times: dict[str, list[float]] = {"SoftCollateMixup": [], "FastCollateMixup": []}
    pair = [("SoftCollateMixup", ours), ("FastCollateMixup", timms)]
    for rep in range(args.reps + 2):
        for name, mixer in pair if rep % 2 else pair[::-1]:  # each goes first half the time
            np.random.seed(rep)
            start = time.perf_counter()
            mixer(batch)
            if rep >= 2:  # warm-up passes
                times[name].append(time.perf_counter() - start)
    soft, fast = (statistics.median(times[k]) * 1e3 for k in times)
    print(f"batch of {args.batch} uint8 {args.size}x{args.size} images, 1000 classes:")
    print(f"  SoftCollateMixup                    {soft:8.2f} ms")
    print(f"  FastCollateMixup(multi_label=True)  {fast:8.2f} ms  (ratio {soft / fast:.3f})")

    probe = []
    for _ in range(args.reps):
        start = time.perf_counter()
        check_collate(ours, images[0], batch[0][1])
        probe.append(time.perf_counter() - start)
    print(
        f"check_collate probe (once per process and collate_fn): {statistics.median(probe) * 1e3:.2f} ms"
    )

    n = 20_000
    walks: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(5):
        for walk in (True, False):
            start = time.perf_counter()
            for _ in range(n):
                _nested(4, walk)
            walks[walk].append((time.perf_counter() - start) / n)
    cost = (statistics.median(walks[True]) - statistics.median(walks[False])) * 1e6
    print(f"collate_of_caller, full walk (every batch): {cost:.2f} µs")


if __name__ == "__main__":
    main()
