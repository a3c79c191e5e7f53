"""Images/s of a Hugging Face ``datasets`` training pipeline, with and without relabel_transform.

    python benchmarks/hf_datasets.py [--images 384] [--batch 64] [--workers 2] [--reps 9]

The dataset is what the Hub serves: a parquet file with the JPEG bytes embedded, read back with
``datasets.Dataset.from_parquet``. Its images are random crops (300-500 px a side) of the real
photos in scikit-image / scikit-learn, saved as JPEG (quality 90). The store holds realistic
synthetic 15x15 top-5 maps (see _synthetic.py) for every image.

Both pipelines run the same torchvision v2 training transform (RandomResizedCrop(224), flip,
ToImage, ToDtype, Normalize) through a torch DataLoader with the same workers, batch size and
shuffling:

- plain: ``ds.set_transform(fn)`` with ``fn`` as in the transformers image-classification
  example (decode, ``convert("RGB")``, transform; integer ``labels``);
- relabel: ``ds.cast_column("image", Image(decode=False))`` and
  ``ds.set_transform(relabel_transform(store, transform))`` (soft (C,) ``labels``).

Epochs of the two alternate (ABBA order), after one warm-up epoch each. The script prints the
median images/s of each and the slowdown, both as a ratio of medians and as the median of the
per-repetition ratios (each repetition runs both back to back, which cancels most changes of
background load), and the CPU time the reaped DataLoader workers spent per image (``getrusage``;
it includes worker start-up, the same for both). Wall-clock figures on a shared machine are
noisy; compare the paired figures. It then times one batch through each pipeline in-process on
one thread, and splits what relabel adds into crop tracking (the tracked transform against the
plain one, alternating image by image) and the batch's record read + pooling.
Target: slowdown <= 3%.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torchvision.transforms as T
from _synthetic import image_sizes, write_synthetic_store
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from relabel_store import load_relabel
from relabel_store.loaders import ReturnsCropBox, relabel_transform, track_crops
from relabel_store.loaders._core import pool_rows
from relabel_store.pooling import CropBox, PoolingSpec
from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo


def make_jpegs(n: int, rng: np.random.Generator) -> list[bytes]:
    photos = [sample_photo(name) for name in SAMPLE_PHOTOS]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = int(rng.integers(300, 501)), int(rng.integers(300, 501))
        cw = int(rng.integers(min(w, photo.width) // 2, min(w, photo.width) + 1))
        ch = int(rng.integers(min(h, photo.height) // 2, min(h, photo.height) + 1))
        left = int(rng.integers(0, photo.width - cw + 1))
        top = int(rng.integers(0, photo.height - ch + 1))
        image = photo.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def build_dataset(folder: Path, jpegs: list[bytes], keys: list[str], labels: list[int]):
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)}
    )
    cells = [{"bytes": b, "path": f"{k}.JPEG"} for b, k in zip(jpegs, keys, strict=True)]
    ds = datasets.Dataset.from_dict({"image": cells, "label": labels}, features)
    ds.to_parquet(str(folder / "train.parquet"))
    return datasets.Dataset.from_parquet(
        str(folder / "train.parquet"), cache_dir=str(folder / "cache")
    )


def train_transform() -> v2.Transform:
    return v2.Compose(
        [
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )


class PlainTransform:
    """The transformers image-classification example's batch transform."""

    def __init__(self, transform: Any, returns_box: bool = False) -> None:
        self.transform = transform
        self.returns_box = returns_box

    def __call__(self, batch: dict) -> dict:
        images = [self.transform(img.convert("RGB")) for img in batch["image"]]
        if self.returns_box:
            images = [image for image, _ in images]
        return {"pixel_values": images, "labels": batch["label"]}


class ExplicitBoxTransform:
    """train_transform() written with v2.functional calls that return the crop box, for
    ReturnsCropBox: the same augmentation without crop tracking (its plain counterpart drops
    the box). The pair shows what relabel costs when tracking is free."""

    def __init__(self) -> None:
        self.crop = v2.RandomResizedCrop(224, antialias=True)
        self.rest = v2.Compose(train_transform().transforms[2:])

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, CropBox]:
        h, w = image.height, image.width
        top, left, ch, cw = T.RandomResizedCrop.get_params(image, self.crop.scale, self.crop.ratio)
        out = v2.functional.resized_crop(image, top, left, ch, cw, [224, 224], antialias=True)
        flipped = bool(torch.rand(1) < 0.5)
        if flipped:
            out = v2.functional.horizontal_flip(out)
        return self.rest(out), CropBox.from_pixels(left, top, left + cw, top + ch, (h, w), flipped)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def epoch(ds, batch: int, workers: int, seed: int) -> tuple[float, float]:
    """(wall seconds, worker CPU seconds) of one shuffled epoch; workers are reaped at the end."""
    loader = DataLoader(
        ds,
        batch_size=batch,
        num_workers=workers,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    cpu = children_cpu()
    start = time.perf_counter()
    seen = 0
    for b in loader:
        seen += len(b["labels"])
    wall = time.perf_counter() - start
    del loader  # joins the workers, so their CPU time is counted
    if seen != len(ds):
        raise RuntimeError(f"epoch saw {seen} of {len(ds)} images")
    return wall, children_cpu() - cpu


def in_process(ds_plain, ds_relabel, batch: int, repeats: int) -> tuple[float, float]:
    """Fastest single-threaded ms for one batch through each transform (same rows, alternating
    order; the minimum is the figure least disturbed by other work on the machine)."""
    rows = list(range(batch))
    times: dict[str, list[float]] = {"plain": [], "relabel": []}
    for rep in range(repeats):
        pairs = [("plain", ds_plain), ("relabel", ds_relabel)]
        for name, ds in pairs if rep % 2 == 0 else pairs[::-1]:
            torch.manual_seed(rep)
            t = time.perf_counter()
            ds.__getitems__(rows)
            times[name].append((time.perf_counter() - t) * 1e3)
    return min(times["plain"]), min(times["relabel"])


def breakdown(store, tf, images: list[Image.Image], passes: int) -> dict[str, float]:
    """Median us/image of what relabel_transform adds: crop tracking over the plain transform
    (the two alternate image by image, so both see the same load) and one batched read + pooling
    of the batch's records, pooled row by row (pool_rows)."""
    track = track_crops(tf)
    spec = PoolingSpec()
    rows = np.arange(len(images))
    unknown = np.full(len(images), -1)
    boxes = [track(im)[1] for im in images]
    extra, read_pool = [], []
    for rep in range(passes):
        spent = {"plain": 0.0, "tracked": 0.0}
        for i, im in enumerate(images):
            pairs = [("plain", tf), ("tracked", track)]
            for name, fn in pairs if (i + rep) % 2 == 0 else pairs[::-1]:
                torch.manual_seed(i)
                t = time.perf_counter()
                fn(im)
                spent[name] += time.perf_counter() - t
        extra.append((spent["tracked"] - spent["plain"]) / len(images) * 1e6)
        t = time.perf_counter()
        pool_rows(store, rows, boxes, unknown, spec=spec)  # what the transform calls
        read_pool.append((time.perf_counter() - t) / len(images) * 1e6)
    return {"crop tracking": statistics.median(extra), "read + pool": statistics.median(read_pool)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keys = [f"n{i % 1000:08d}_{i}" for i in range(args.images)]
        labels = [i % 1000 for i in range(args.images)]
        jpegs = make_jpegs(args.images, rng)
        write_synthetic_store(
            folder / "bench.relabel.zarr", keys, labels=labels, shard_records=256,
            sizes=image_sizes(jpegs),
        )  # fmt: skip
        store = load_relabel(folder / "bench.relabel.zarr")
        ds = build_dataset(folder, jpegs, keys, labels)
        tf = train_transform()
        raw = ds.cast_column("image", datasets.Image(decode=False))
        pipelines = {
            "plain": ds.with_transform(PlainTransform(tf)),
            "relabel": raw.with_transform(relabel_transform(store, tf)),
            "plain, explicit box": ds.with_transform(
                PlainTransform(ExplicitBoxTransform(), returns_box=True)
            ),
            "relabel, explicit box": raw.with_transform(
                relabel_transform(store, ReturnsCropBox(ExplicitBoxTransform()))
            ),
        }
        mean_kb = sum(map(len, jpegs)) / len(jpegs) / 1024
        print(
            f"{args.images} JPEGs (mean {mean_kb:.0f} KB, 300-500 px), batch {args.batch}, "
            f"{args.workers} workers, {args.reps} rotating repetitions of an epoch each "
            "(+1 warm-up)"
        )
        for p in pipelines.values():
            epoch(p, args.batch, args.workers, seed=0)  # warm-up: page cache, lazy imports
        walls: dict[str, list[float]] = {n: [] for n in pipelines}
        cpus: dict[str, list[float]] = {n: [] for n in pipelines}
        names = list(pipelines)
        for rep in range(args.reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                wall, cpu = epoch(pipelines[name], args.batch, args.workers, seed=rep + 1)
                walls[name].append(args.images / wall)
                cpus[name].append(cpu / args.images * 1e3)
        rate = {n: statistics.median(v) for n, v in walls.items()}
        cpu = {n: statistics.median(v) for n, v in cpus.items()}
        for name in pipelines:
            print(
                f"  {name:22s} {rate[name]:6.1f} images/s (epochs: "
                f"{', '.join(f'{r:.0f}' for r in walls[name])}); "
                f"worker CPU {cpu[name]:.2f} ms/image"
            )
        # Each repetition runs every pipeline back to back: ratios within a repetition cancel
        # most of the machine's load changes from one repetition to the next.
        for base, name in (("plain", "relabel"), ("plain, explicit box", "relabel, explicit box")):
            paired = [p / r - 1 for p, r in zip(walls[base], walls[name], strict=True)]
            paired_cpu = [r / p - 1 for p, r in zip(cpus[base], cpus[name], strict=True)]
            print(
                f"slowdown, {name} vs {base}: {(rate[base] / rate[name] - 1) * 100:+.1f}% "
                f"(ratio of medians), {statistics.median(paired) * 100:+.1f}% (median of paired "
                f"epochs); worker CPU per image {statistics.median(paired_cpu) * 100:+.1f}% "
                "(paired)"
            )
        plain, relabel = pipelines["plain"], pipelines["relabel"]
        torch.set_num_threads(1)  # what a DataLoader worker runs with
        p_ms, r_ms = in_process(plain, relabel, args.batch, repeats=21)
        print(
            f"in-process, one thread, batch of {args.batch} (fastest of 21): plain {p_ms:.1f} ms, "
            f"relabel {r_ms:.1f} ms ({(r_ms / p_ms - 1) * 100:+.1f}%, "
            f"{(r_ms - p_ms) / args.batch * 1e3:+.0f} us/image)"
        )
        images = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs[: args.batch]]
        steps = breakdown(store, tf, images, passes=15)
        print(
            "  added per image (median of 15 passes): "
            + ", ".join(f"{name} {us:+.0f} us" for name, us in steps.items())
        )


if __name__ == "__main__":
    main()
