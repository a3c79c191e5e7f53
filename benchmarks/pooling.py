"""LabelPooling cost: per sample, per batch, and end to end in a DataLoader.

Run: ``python benchmarks/pooling.py [--classes 1000] [--grid 15] [--k 5] [--images 256]``.

- per sample (what a DataLoader worker does): :func:`relabel_store.pooling.pool` against the
  official recipe (scatter the top-k into a dense C x H x W tensor, ``torchvision.ops.roi_align``
  onto the box, softmax), on the same record and the same boxes, in one process, with torch
  limited to one thread (DataLoader workers run one thread each). The reference is timed from
  the stored record (numpy uint16/float16, as pool() gets it) and from ready torch tensors.
- batched: :class:`relabel_store.pooling.batched.BatchPooler` on a batch of 256 on CPU, with 1 thread
  and with every core (``torch.set_num_threads``).
- affine: the same boxes rotated by up to 30 degrees about their centre (what RandomRotation(30)
  after the crop shows), pooled as :class:`~relabel_store.pooling.Region`, per sample and
  batched, next to the boxes themselves (target: <= 2x box pooling per sample on CPU).

- with the read: a record read from a local store plus pool(), median (target <= 50 µs).
- end to end: DataLoader images/s over a folder of real JPEGs with RandomResizedCrop + flip,
  plain ImageFolder against RelabelDataset with the same transform, workers and batch, runs
  interleaved (target: slowdown <= 2%); then the same with TrivialAugmentWide after the crop
  (its rotations, shears and translations tracked, targets pooled over the warped region).

Boxes follow torchvision's RandomResizedCrop (scale 0.08..1, ratio 3/4..4/3) on a 500 x 375
image, half of them flipped. Timings are medians over repeated passes, the cases interleaved
pass by pass so that a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _photoset import write_photoset
from _synthetic import image_sizes, imagenet_like_keys, write_synthetic_store
from torchvision.ops import roi_align

from relabel_store import load_relabel
from relabel_store.loaders import RelabelDataset
from relabel_store.pooling import CropBox, Region, pool
from relabel_store.pooling.batched import BatchPooler, stack_boxes, stack_regions


def random_resized_crops(n: int, rng: np.random.Generator, height: int, width: int) -> list:
    """Boxes drawn like torchvision's RandomResizedCrop.get_params, as normalised CropBoxes."""
    boxes = []
    while len(boxes) < n:
        area = height * width * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(area * ratio))
        h = round(math.sqrt(area / ratio))
        if not (0 < w <= width and 0 < h <= height):
            continue
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        flipped = bool(rng.random() < 0.5)
        boxes.append(CropBox.from_pixels(left, top, left + w, top + h, (height, width), flipped))
    return boxes


def random_record(rng: np.random.Generator, grid: int, k: int, num_classes: int):
    indices = np.stack(
        [np.stack([rng.permutation(num_classes)[:k] for _ in range(grid)]) for _ in range(grid)]
    ).astype(np.uint16)
    values = -np.sort(-rng.normal(0.0, 4.0, (grid, grid, k)), axis=-1).astype(np.float16)
    return indices, values


def reference_pool(indices_t: torch.Tensor, values_t: torch.Tensor, box: CropBox, num_classes: int):
    """The official recipe: dense C x H x W map, roi_align to 1x1, softmax over all classes.

    ``indices_t``/``values_t`` are (K, H, W) int64/float32 tensors.
    """
    _, height, width = indices_t.shape
    dense = torch.zeros(num_classes, height, width).scatter_(0, indices_t, values_t)
    roi = torch.tensor(
        [[0.0, box.x0 * width - 0.5, box.y0 * height - 0.5,
          box.x1 * width - 0.5, box.y1 * height - 0.5]],
        dtype=torch.float32,
    )  # fmt: skip
    pooled = roi_align(dense[None], roi, (1, 1), 1.0, -1, False)
    return torch.softmax(pooled.flatten(), dim=0)


def reference_from_record(indices: np.ndarray, values: np.ndarray, box: CropBox, num_classes: int):
    """The recipe starting from the stored record (numpy uint16 / float16), like pool()."""
    indices_t = torch.from_numpy(indices.astype(np.int64)).permute(2, 0, 1)
    values_t = torch.from_numpy(values.astype(np.float32)).permute(2, 0, 1)
    return reference_pool(indices_t, values_t, box, num_classes)


def interleaved_medians(cases: dict, repeats: int) -> dict:
    """Median seconds per call of each ``name: (fn, items)``, one pass of each case per round.

    Interleaving the cases round by round lets a busy machine slow them all alike.
    """
    times: dict = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, items) in cases.items():
            t0 = time.perf_counter()
            for item in items:
                fn(item)
            times[name].append((time.perf_counter() - t0) / len(items))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--grid", type=int, default=15)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--images", type=int, default=256, help="JPEGs for the end-to-end run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="end-to-end epochs per variant")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    num_classes = args.classes
    indices, values = random_record(rng, args.grid, args.k, num_classes)
    boxes = random_resized_crops(2000, rng, 375, 500)

    torch.set_num_threads(1)
    indices_t = torch.from_numpy(indices.astype(np.int64)).permute(2, 0, 1).contiguous()
    values_t = torch.from_numpy(values).float().permute(2, 0, 1).contiguous()
    ref_boxes = boxes[:300]
    ours = np.stack([pool(indices, values, b, num_classes=num_classes) for b in ref_boxes])
    theirs = np.stack(
        [reference_pool(indices_t, values_t, b, num_classes).numpy() for b in ref_boxes]
    )
    max_diff = float(np.abs(ours - theirs).max())

    full = [CropBox.full()] * len(ref_boxes)  # a fixed box (eval crops, global) hits the cache
    medians = interleaved_medians(
        {
            "ref": (lambda b: reference_from_record(indices, values, b, num_classes), ref_boxes),
            "ref_t": (lambda b: reference_pool(indices_t, values_t, b, num_classes), ref_boxes),
            "pool": (lambda b: pool(indices, values, b, num_classes=num_classes), boxes),
            "fixed": (lambda b: pool(indices, values, b, num_classes=num_classes), full),
        },
        args.repeats,
    )
    t_ref, t_ref_tensors = medians["ref"], medians["ref_t"]
    t_pool, t_pool_fixed = medians["pool"], medians["fixed"]

    print(f"record {args.grid}x{args.grid}x{args.k}, C={num_classes}, RandomResizedCrop boxes")
    print("per sample, median per call, torch.set_num_threads(1):")
    print(f"  reference from the stored record    {t_ref * 1e6:8.1f} us")
    print(f"  reference from ready torch tensors  {t_ref_tensors * 1e6:8.1f} us")
    print(
        f"  pool()                              {t_pool * 1e6:8.1f} us   speed-up "
        f"x{t_ref / t_pool:.1f} (x{t_ref_tensors / t_pool:.1f} vs ready tensors)"
    )
    print(f"  pool(), same box every call         {t_pool_fixed * 1e6:8.1f} us   (weights cached)")
    print(f"  max |pool - reference| over {len(ref_boxes)} boxes: {max_diff:.2e}")

    batch = args.batch
    bidx = torch.from_numpy(np.broadcast_to(indices, (batch, *indices.shape)).astype(np.int64))
    bval = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(values, (batch, *values.shape))))
    bbox, bflip = stack_boxes(boxes[:batch])
    pooler = BatchPooler(num_classes)
    expected = np.stack([pool(indices, values, b, num_classes=num_classes) for b in boxes[:batch]])
    batch_diff = float(np.abs(pooler(bidx, bval, bbox, bflip).numpy() - expected).max())
    print(f"batched BatchPooler, B={batch}, CPU (max |batch - pool()| = {batch_diff:.2e}):")
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        for _ in range(3):
            pooler(bidx, bval, bbox, bflip)
        times = []
        for _ in range(args.repeats * 5):
            t0 = time.perf_counter()
            pooler(bidx, bval, bbox, bflip)
            times.append(time.perf_counter() - t0)
        print(f"  torch threads={threads}: {statistics.median(times) * 1e3:7.3f} ms per batch")

    affine_cost(indices, values, boxes, args)

    with tempfile.TemporaryDirectory() as tmp:
        read_and_pool(Path(tmp), boxes, args)
        end_to_end(Path(tmp), args)


def rotated(box: CropBox, angle: float, height: int, width: int) -> Region:
    """The region a crop shows when rotated by ``angle`` degrees about its centre (in pixels of
    a ``height`` x ``width`` image, so that the rotation is a rotation, not a shear)."""
    cx, cy = (box.x0 + box.x1) / 2 * width, (box.y0 + box.y1) / 2 * height
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    to_px = np.diag([width, height, 1.0])
    about = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    m = np.linalg.inv(to_px) @ about @ turn @ np.linalg.inv(about) @ to_px
    return Region(tuple((m @ np.array(Region.from_box(box).matrix).reshape(3, 3)).ravel()))


def affine_cost(indices: np.ndarray, values: np.ndarray, boxes: list, args: argparse.Namespace):
    """Per-sample and batched cost of pooling rotated crops against the crops themselves."""
    rng = np.random.default_rng(3)
    num_classes = args.classes
    regions = [rotated(b, rng.uniform(-30, 30), 375, 500) for b in boxes]
    torch.set_num_threads(1)
    medians = interleaved_medians(
        {
            "box": (lambda b: pool(indices, values, b, num_classes=num_classes), boxes),
            "region": (lambda r: pool(indices, values, r, num_classes=num_classes), regions),
        },
        args.repeats,
    )
    t_box, t_region = medians["box"], medians["region"]
    print("affine: the same boxes rotated by up to 30 degrees about their centre, per sample:")
    print(f"  pool(CropBox)                       {t_box * 1e6:8.1f} us")
    print(
        f"  pool(Region), rotated               {t_region * 1e6:8.1f} us   "
        f"x{t_region / t_box:.2f} box pooling   (target <= 2x)"
    )
    batch = args.batch
    bidx = torch.from_numpy(np.broadcast_to(indices, (batch, *indices.shape)).astype(np.int64))
    bval = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(values, (batch, *values.shape))))
    bbox, bflip = stack_boxes(boxes[:batch])
    bregion = stack_regions(regions[:batch])
    pooler = BatchPooler(num_classes)
    expected = np.stack(
        [pool(indices, values, r, num_classes=num_classes) for r in regions[:batch]]
    )
    batch_diff = float(np.abs(pooler(bidx, bval, regions=bregion).numpy() - expected).max())
    times: dict = {"box": [], "region": []}
    for _ in range(args.repeats * 3):
        for name, call in (
            ("box", lambda: pooler(bidx, bval, bbox, bflip)),
            ("region", lambda: pooler(bidx, bval, regions=bregion)),
        ):
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    t_b, t_r = (statistics.median(times[n]) for n in ("box", "region"))
    print(
        f"  BatchPooler, B={batch}, 1 thread: boxes {t_b * 1e3:.3f} ms, rotated regions "
        f"{t_r * 1e3:.3f} ms (x{t_r / t_b:.2f}); max |batch - pool()| = {batch_diff:.2e}"
    )


def read_and_pool(tmp: Path, boxes: list, args: argparse.Namespace) -> None:
    """Median of one record read from a local store plus pool(), random keys and boxes."""
    n = 8192
    rng = np.random.default_rng(1)
    path = write_synthetic_store(
        tmp / "read.relabel.zarr", imagenet_like_keys(n), grid=(args.grid, args.grid), k=args.k,
        num_classes=args.classes, seed=1,
    )  # fmt: skip
    store = load_relabel(path)
    rows = rng.integers(0, n, 20000).tolist()
    for r in rows[:2000]:
        store.get_row(r)
    times = []
    for r, box in zip(rows, boxes * 10, strict=False):
        t0 = time.perf_counter_ns()
        rec = store.get_row(r)
        pool(rec.indices, rec.values, box, num_classes=args.classes)
        times.append(time.perf_counter_ns() - t0)
    print(f"record read from a local store + pool(), median: {statistics.median(times) / 1e3:.1f} us"
          "   (target <= 50 us)")  # fmt: skip


def end_to_end(tmp: Path, args: argparse.Namespace) -> None:
    """DataLoader images/s: plain ImageFolder vs RelabelDataset, same transform and loader;
    crops and flips, then crops, TrivialAugmentWide and flips."""
    from torchvision.transforms import v2

    folder = write_photoset(tmp / "photos" / "all", args.images).parent
    files = sorted((folder / "all").glob("*.jpg"), key=lambda p: p.stem)
    write_synthetic_store(
        tmp / "e2e.relabel.zarr", [p.stem for p in files], grid=(args.grid, args.grid),
        k=args.k, num_classes=args.classes, seed=2, sizes=image_sizes(files),
    )  # fmt: skip
    normalise = [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
    crop = v2.RandomResizedCrop(224, antialias=True)
    for name, tf in (
        ("RandomResizedCrop(224)+flip", v2.Compose([crop, v2.RandomHorizontalFlip(), *normalise])),
        (
            "RandomResizedCrop(224)+TrivialAugmentWide+flip",
            v2.Compose([crop, v2.TrivialAugmentWide(), v2.RandomHorizontalFlip(), *normalise]),
        ),
    ):
        _loader_rates(tmp, folder, name, tf, args)


def _loader_rates(tmp: Path, folder: Path, title: str, tf, args: argparse.Namespace) -> None:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    plain = ImageFolder(folder, transform=tf)
    relabel = RelabelDataset(ImageFolder(folder), tmp / "e2e.relabel.zarr", tf)
    loaders = {
        name: DataLoader(
            ds,
            batch_size=64,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        for name, ds in (("plain", plain), ("relabel", relabel))
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for round_ in range(args.rounds + 1):
        for name, loader in loaders.items():
            t0 = time.perf_counter()
            count = sum(len(images) for images, _ in loader)
            if round_:  # the first round warms workers and the page cache
                rates[name].append(count / (time.perf_counter() - t0))
    a, b = statistics.median(rates["plain"]), statistics.median(rates["relabel"])
    print(
        f"end to end, {args.images} real JPEGs, {title}, batch 64, "
        f"{args.workers} workers, median of {args.rounds} epochs:"
    )
    print(f"  plain ImageFolder        {a:8.1f} images/s")
    print(f"  RelabelDataset (targets) {b:8.1f} images/s   slowdown {100 * (1 - b / a):.1f}%"
          "   (target <= 2%)")  # fmt: skip


if __name__ == "__main__":
    main()
