"""End-to-end DataLoader cost of each way of making ReLabel targets, side by side in one run.

Run: ``python benchmarks/dataloader.py [--images 512] [--workers 2] [--batch 64] [--rounds 7]``.

Every variant reads the same folder of real JPEGs through the same transform
(``RandomResizedCrop(224)`` + flip + normalise), workers and batch size:

- ``plain``: ``ImageFolder``, integer labels (the baseline);
- ``worker``: ``RelabelDataset`` (the default): each worker checks the image against its
  record (its shape; its content on the first samples, then one in 1000), tracks the crop,
  reads its batch's records and pools them (the CPU path; goal: <= 2.5% slower than plain);
- ``worker-maps``: as ``worker``, but the workers copy the records out of the store's maps in
  host memory (``RelabelDataset(maps=DeviceMaps.load(store))``, loaded before the workers
  start, shared by them) instead of decoding them;
- ``main``: ``RelabelDataset(pooling="batch")``: workers return references, a ``LabelPooler``
  reads and pools each batch in the training process (on ``--device``);
- ``resident``: the same references, pooled by a ``ResidentPooler`` whose maps live on
  ``--device`` (goal: <= 1% when that is a GPU);

With ``--device cuda`` every variant moves its images (and targets) to the GPU, as a training
loop does. Epochs of the variants are interleaved round by round (the order rotating each
round) so that a busy machine slows them alike; the figures are medians over rounds, and the
slowdown of each variant is also given as the median of its per-round ratios to ``plain``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _photoset import write_photoset
from _synthetic import image_sizes, write_synthetic_store
from torch.utils.data import DataLoader, default_collate
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from relabel_store import load_relabel
from relabel_store.loaders import DeviceMaps, LabelPooler, RelabelDataset, ResidentPooler
from relabel_store.loaders._core import check_shapes, reference
from relabel_store.pooling import pool
from relabel_store.pooling.batched import BatchPooler, stack_boxes
from relabel_store.write.sign import sign_store

GOALS = {"worker": 2.5, "worker-maps": 2.5, "resident": 1.0, "image check (default)": 0.3}


def transform() -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def variants(folder: Path, store_path: Path, device: torch.device) -> dict[str, Any]:
    """name -> (dataset, step(images, targets) run on each batch in the training process)."""
    store = load_relabel(store_path)

    def to_device(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images.to(device, non_blocking=True)
        return targets.to(device, non_blocking=True)

    refs_dataset = RelabelDataset(ImageFolder(folder), store, transform(), pooling="batch")
    main_pooler = LabelPooler(refs_dataset, device=device)
    resident_pooler = ResidentPooler(refs_dataset, device=device)
    in_workers = RelabelDataset(ImageFolder(folder), store, transform())
    maps = DeviceMaps.load(store, "cpu")  # before the workers start: they share it
    from_memory = RelabelDataset(ImageFolder(folder), store, transform(), maps=maps)

    class Pooled:
        """The training step of a variant that pools there."""

        def __init__(self, pooler: Callable) -> None:
            self.pooler = pooler

        def __call__(self, images: torch.Tensor, refs: dict) -> torch.Tensor:
            images.to(device, non_blocking=True)
            return self.pooler(refs)

    return {
        "plain": (ImageFolder(folder, transform=transform()), to_device),
        "worker": (in_workers, to_device),
        "worker-maps": (from_memory, to_device),
        "main": (refs_dataset, Pooled(main_pooler)),
        "resident": (refs_dataset, Pooled(resident_pooler)),
    }


def loader(dataset: Any, args: argparse.Namespace) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=args.device.startswith("cuda"),
    )


def where_time_goes(cases: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Seconds per image of each piece of target work, timed alone in this process (medians
    over the same batches, pieces interleaved), and of plain loading itself."""
    plain, _ = cases["plain"]
    dataset, _ = cases["worker"]
    maps = cases["worker-maps"][0].maps
    main, resident = cases["main"][1].pooler, cases["resident"][1].pooler
    store, spec, n = dataset.store, dataset.spec, args.batch
    classes = store.metadata.num_classes
    pooler = BatchPooler(classes, spec)
    rng = np.random.default_rng(0)
    image = dataset.base[0][0]
    check = dataset.steps.image_check
    assert check.active, "the benchmark's store must hold image signatures"
    row0 = dataset.rows[:1]
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable, *a: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*a)
        times.setdefault(name, []).append((time.perf_counter() - t0) / n)
        return out

    for _ in range(args.batches):
        batch = rng.permutation(len(plain))[:n].tolist()
        timed("plain", lambda b=batch: default_collate([plain[i] for i in b]))
        boxes = []
        for i in range(n):  # the transform alone and tracked, paired, taking turns first
            calls = [dataset.transform, dataset.track][:: 1 if i % 2 else -1]
            spent = []
            for call in calls:
                t0 = time.perf_counter()
                out = call(image)
                spent.append(time.perf_counter() - t0)
            boxes.append(out[1] if i % 2 else dataset.track(image)[1])
            tracked, alone = (spent[1], spent[0]) if i % 2 else (spent[0], spent[1])
            times.setdefault("tracking", []).append(tracked - alone)
        # The content check: what every sample pays (is it due?) in the steady state, and the
        # signature a checked sample pays; the default checks one sample in check.every.
        check._seen = check.FIRST + 1  # past the first samples: only every check.every-th
        check._pid = os.getpid()
        timed("check: is it due", lambda: [check.check(row0, [image]) for _ in range(n)])
        timed("check: one signature", lambda: [check.check(row0, [image], force=True)
                                               for _ in range(n)])  # fmt: skip
        timed("check: shape", lambda: [check_shapes(store, row0, [image]) for _ in range(n)])
        rows = dataset.rows[batch]
        records = timed("read records", store.get_rows, rows)
        timed("copy from maps", maps.records, rows)
        targets = timed(  # what a worker does (pool_rows): pool() row by row
            "pool (per row)",
            lambda r=records, b=boxes: torch.from_numpy(
                np.stack(
                    [
                        pool(r.indices[i], r.values[i], b[i], num_classes=classes, spec=spec)
                        for i in range(n)
                    ]
                )
            ),
        )
        timed(  # for comparison: one batched call, which sums in another order
            "pool (BatchPooler)",
            lambda r=records, b=boxes: pooler(
                torch.from_numpy(r.indices),
                torch.from_numpy(r.values),
                *stack_boxes(b),
                torch.zeros(n, dtype=torch.int64),
            ),
        )
        timed("collate targets", lambda t=targets: default_collate(list(t)))
        refs = timed(
            "make + collate refs",
            lambda r=rows, b=boxes: default_collate(
                [reference(int(row), box, -1) for row, box in zip(r, b, strict=True)]
            ),
        )
        timed("LabelPooler step", main, refs)
        timed("ResidentPooler step", resident, refs)
    out = {name: statistics.median(values) for name, values in times.items()}
    out["image check (default)"] = (
        out["check: is it due"] + out["check: one signature"] / check.every
    )
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes ``pids`` (all their threads) have run, from the kernel's
    nanosecond scheduler statistics."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def epoch(loader: DataLoader, step: Callable, device: torch.device) -> tuple[float, float, float]:
    """One pass over ``loader`` with ``step`` run on each batch: images per second, and CPU
    seconds per image spent by the workers and by the training process."""
    batches = iter(loader)
    workers = [w.pid for w in getattr(batches, "_workers", [])]
    t0, w0, m0 = time.perf_counter(), cpu_seconds(workers), cpu_seconds([os.getpid()])
    count = 0
    for images, targets in batches:
        step(images, targets)
        count += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    in_workers, in_main = cpu_seconds(workers) - w0, cpu_seconds([os.getpid()]) - m0
    return count / wall, in_workers / count, in_main / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512, help="JPEGs in the folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--rounds", type=int, default=7, help="epochs per variant (after one warm-up)"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="training device"
    )
    parser.add_argument(
        "--batches", type=int, default=40, help="batches timed piece by piece in one process"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the training process"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_photoset(root / "photos" / "all", args.images).parent
        files = sorted((folder / "all").glob("*.jpg"), key=lambda p: p.stem)
        keys = [p.stem for p in files]
        store = write_synthetic_store(
            root / "maps.relabel.zarr", keys, shard_records=256, sizes=image_sizes(files)
        )
        sign_store(store, folder, progress=False)  # the images' signatures: checks on
        cases = variants(folder, store, device)
        pieces = where_time_goes(cases, args)
        loaders = {name: (loader(dataset, args), step) for name, (dataset, step) in cases.items()}
        names = list(cases)
        rates: dict[str, list[float]] = {name: [] for name in names}
        costs: dict[str, list[float]] = {name: [] for name in names}
        split: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for round_ in range(args.rounds + 1):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                rate, in_workers, in_main = epoch(*loaders[name], device)
                if round_:  # the first round starts workers and warms the page cache
                    rates[name].append(rate)
                    costs[name].append(in_workers + in_main)
                    split[name].append((in_workers, in_main))

    base = pieces.pop("plain")
    print(
        f"Where the time goes, in one process ({args.batches} batches of {args.batch}, "
        f"medians): plain loading {base * 1e6:.0f} µs per image, and per image:"
    )
    for name, seconds in pieces.items():
        goal = f"  (goal <= {GOALS[name]:.1f}%)" if name in GOALS else ""
        print(f"  {name:<22}{seconds * 1e6:7.1f} µs {100 * seconds / base:5.2f}%{goal}")
    checks = ("check: shape", "image check (default)")
    models = {
        "worker": (*checks, "tracking", "read records", "pool (per row)", "collate targets"),
        "worker-maps": (*checks, "tracking", "copy from maps", "pool (per row)", "collate targets"),
        "main": (*checks, "tracking", "make + collate refs", "LabelPooler step"),
        "resident": (*checks, "tracking", "make + collate refs", "ResidentPooler step"),
    }
    print(f"  so each variant adds, with workers pooling on the CPU and the step on {device}:")
    for name, parts in models.items():
        extra = sum(pieces[p] for p in parts)
        goal = f"  (goal <= {GOALS[name]:.1f}%)" if name in GOALS else ""
        print(f"  {name:<22}{extra * 1e6:7.1f} µs {100 * extra / base:5.2f}%{goal}")
    print(
        f"DataLoader end to end: {args.images} real JPEGs, RandomResizedCrop(224) + flip + "
        f"normalise, batch {args.batch}, {args.workers} workers, pooling device {device}; "
        f"medians of {args.rounds} interleaved epochs per variant"
    )
    print(
        f"  {'variant':<12}{'images/s':>10}{'slower':>8}{'paired':>8}"
        f"{'CPU/image':>12}{'more CPU':>10}{'paired':>8}{'workers':>10}{'main':>8}  goal"
    )
    for name in names:
        print(
            f"  {name:<12}{statistics.median(rates[name]):10.1f}"
            f"{slowdown(rates, name, 'rate'):8.1f}%{paired(rates, name, 'rate'):7.1f}%"
            f"{statistics.median(costs[name]) * 1e6:10.0f} µs"
            f"{slowdown(costs, name, 'cost'):9.1f}%{paired(costs, name, 'cost'):7.1f}%"
            f"{statistics.median(w for w, _ in split[name]) * 1e6:7.0f} µs"
            f"{statistics.median(m for _, m in split[name]) * 1e6:5.0f} µs"
            + (f"  <= {GOALS[name]:.1f}%" if name in GOALS else "")
        )


def slowdown(values: dict[str, list[float]], name: str, kind: str) -> float:
    """How much worse ``name`` is than ``plain``, in percent, from the medians."""
    a, b = statistics.median(values["plain"]), statistics.median(values[name])
    return 100 * (1 - b / a) if kind == "rate" else 100 * (b / a - 1)


def paired(values: dict[str, list[float]], name: str, kind: str) -> float:
    """The same, as the median over rounds of each round's own comparison."""
    pairs = zip(values["plain"], values[name], strict=True)
    if kind == "rate":
        return statistics.median(100 * (1 - b / a) for a, b in pairs)
    return statistics.median(100 * (b / a - 1) for a, b in pairs)


if __name__ == "__main__":
    main()
