"""Crop tracking cost: per sample against the untracked transform, and once at construction.

Run: ``python benchmarks/tracking.py [--reps 200]``.

- per sample: each pipeline applied to a 500 x 375 RGB photo, untracked (the transform itself)
  and tracked (``track_crops(transform)``, which also returns the crop box), after a warm-up,
  interleaved pass by pass so that a busy machine slows both alike; medians, in µs, and the
  tracking overhead.
- at construction: ``track_crops`` validates the pipeline by a dry run on a test image (four
  draws of its random steps). Printed: building the tracker with and without that dry run, ms.
- the output check (``check_crops``): a confirmed sample against an unconfirmed one (each
  tracked step's image compared with the source under its box), interleaved, medians, µs;
  and what it adds per worker and epoch (the first 8 samples) as a share of an ImageNet
  epoch's tracking on 8 workers (160,146 samples a worker). After its first samples a tracker
  only checks whether it is due (in the "tracked" column above).

Pipelines: torchvision v2 and timm training pipelines (tracked step by step), a v2 pipeline with
``RandomZoomOut`` and one with a pixel-only ``v2.Lambda`` (tracked by the box probe), and
pipelines that rotate and shear (``TrivialAugmentWide``, timm ``rand-m9-mstd0.5``,
``RandomRotation(30)``: tracked as a Region by loaders/geometry.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm.data
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from relabel_store.loaders import track_crops
from relabel_store.loaders.crops import CONFIRMED_SAMPLES, _build
from relabel_store.write.samples import sample_photo


def pipelines() -> dict[str, object]:
    normalise = [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
    invert = v2.Lambda(lambda im: Image.eval(im, lambda v: 255 - v), Image.Image, tv_tensors.Image)
    return {
        "v2 crop+flip (step by step)": v2.Compose(
            [v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), *normalise]
        ),
        "timm train (step by step)": timm.data.create_transform(224, is_training=True),
        "v2 zoom-out+crop (probe)": v2.Compose(
            [
                v2.RandomZoomOut(side_range=(1.0, 2.0)),
                v2.RandomResizedCrop(224),
                v2.RandomHorizontalFlip(),
                *normalise,
            ]
        ),
        "v2 lambda+crop (probe)": v2.Compose(
            [invert, v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), *normalise]
        ),
        "v2 crop+TrivialAugWide (region)": v2.Compose(
            [
                v2.RandomResizedCrop(224),
                v2.TrivialAugmentWide(),
                v2.RandomHorizontalFlip(),
                *normalise,
            ]
        ),
        "timm rand-m9-mstd0.5 (region)": timm.data.create_transform(
            224, is_training=True, auto_augment="rand-m9-mstd0.5"
        ),
        "v2 crop+rotate30 (region)": v2.Compose(
            [
                v2.RandomResizedCrop(224),
                v2.RandomRotation(30),
                v2.RandomHorizontalFlip(),
                *normalise,
            ]
        ),
    }


def time_once(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200, help="passes per pipeline")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    photo = sample_photo("chelsea").convert("RGB").resize((500, 375))

    print(f"per sample, 500 x 375 photo, medians of {args.reps} interleaved passes (µs)")
    print(f"{'pipeline':32s} {'untracked':>10s} {'tracked':>10s} {'overhead':>10s}")
    for name, transform in pipelines().items():
        tracker = track_crops(transform)
        for _ in range(20):  # warm up: lazy imports, allocator, caches
            transform(photo), tracker(photo)
        plain, tracked = [], []
        for _ in range(args.reps):
            plain.append(time_once(transform, photo))
            tracked.append(time_once(tracker, photo))
        p, t = statistics.median(plain) * 1e6, statistics.median(tracked) * 1e6
        print(f"{name:32s} {p:10.0f} {t:10.0f} {t - p:+10.0f}")

    print("\nat construction: building the tracker (ms, medians of 9)")
    print(f"{'pipeline':32s} {'no dry run':>10s} {'with it':>10s}")
    for name, transform in pipelines().items():
        bare, checked = [], []
        for _ in range(9):
            bare.append(time_once(_build, transform))
            checked.append(time_once(track_crops, transform))
        b, c = statistics.median(bare) * 1e3, statistics.median(checked) * 1e3
        print(f"{name:32s} {b:10.2f} {c:10.2f}")

    samples, per_worker = CONFIRMED_SAMPLES, 1_281_167 // 8
    print(f"\noutput check: one confirmed sample (µs, medians of {args.reps} interleaved passes)")
    print(
        f"{'pipeline':32s} {'unchecked':>10s} {'confirmed':>10s} {'+ a sample':>10s} {'epoch %':>8s}"
    )
    for name, transform in pipelines().items():
        unchecked = track_crops(transform, check_crops=False)
        confirmed = track_crops(transform, check_crops=10**9)
        plain, checked = [], []
        for _ in range(args.reps):
            plain.append(time_once(unchecked, photo))
            checked.append(time_once(confirmed, photo))
        u, c = statistics.median(plain) * 1e6, statistics.median(checked) * 1e6
        share = 100 * samples * (c - u) / (per_worker * u)
        print(f"{name:32s} {u:10.0f} {c:10.0f} {c - u:+10.0f} {share:8.4f}")


if __name__ == "__main__":
    main()
