"""How far apart content signatures are (relabel_store.images.image_signature), on real photos.

For every photo shipped with scikit-image and scikit-learn that loads offline, the signature of
the photo as the annotator reads it is compared with:

- the same photo as a loader may legitimately see it (JPEG re-encoded at qualities 50-95,
  resized to half or a quarter, squashed to 64x64, brightened, through numpy (H, W, C) and a
  normalised float tensor (C, H, W)): these must stay under the threshold;
- what must be refused: the other photos, the photo turned 90/180/270 degrees, flipped
  left-right or top-bottom, and cropped to 80% (centre and corners) or 90% (centre).

Prints the distribution of each group and the margin around the loaders' threshold.
``--grid 16`` measures a 16x16 thumbnail instead of the default.

    python benchmarks/signatures.py [--grid 8]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageEnhance

import relabel_store.images as images

_SKIMAGE = [
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
]


def photos() -> dict[str, Image.Image]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = {}
    for name in _SKIMAGE:
        array = np.asarray(getattr(skimage.data, name)())
        if array.dtype == bool:  # horse: a silhouette of 0/1
            array = array * 255
        out[name] = images.to_rgb(Image.fromarray(array.astype(np.uint8)))
    for name in ("china.jpg", "flower.jpg"):
        out[name] = Image.fromarray(load_sample_image(name))
    return out


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def crop(image: Image.Image, frac: float, where: str) -> Image.Image:
    w, h = image.size
    cw, ch = round(w * frac), round(h * frac)
    x = {"c": (w - cw) // 2, "tl": 0, "br": w - cw}[where]
    y = {"c": (h - ch) // 2, "tl": 0, "br": h - ch}[where]
    return image.crop((x, y, x + cw, y + ch))


def same(image: Image.Image) -> dict[str, object]:
    import torch

    w, h = image.size
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out: dict[str, object] = {f"jpeg q{q}": jpeg(image, q) for q in (50, 75, 95)}
    out.update(
        {
            "half": image.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
            "quarter jpeg75": jpeg(image.resize((w // 4, h // 4), Image.Resampling.LANCZOS), 75),
            "squashed 64x64": image.resize((64, 64), Image.Resampling.BICUBIC),
            "brighter 1.3": ImageEnhance.Brightness(image).enhance(1.3),
            "contrast 0.7": ImageEnhance.Contrast(image).enhance(0.7),
            "numpy HWC": np.asarray(jpeg(image, 90)),
            "tensor CHW normalised": (tensor - mean) / std,
        }
    )
    return out


def different(image: Image.Image) -> dict[str, Image.Image]:
    t = Image.Transpose
    return {
        "turned 90": image.transpose(t.ROTATE_90),
        "turned 180": image.transpose(t.ROTATE_180),
        "turned 270": image.transpose(t.ROTATE_270),
        "flipped left-right": image.transpose(t.FLIP_LEFT_RIGHT),
        "flipped top-bottom": image.transpose(t.FLIP_TOP_BOTTOM),
        "crop 80% centre": crop(image, 0.8, "c"),
        "crop 80% top-left": crop(image, 0.8, "tl"),
        "crop 80% bottom-right": crop(image, 0.8, "br"),
        "crop 90% centre": crop(image, 0.9, "c"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=images.SIGNATURE_GRID)
    args = parser.parse_args()
    images.SIGNATURE_GRID = args.grid
    images.SIGNATURE_BYTES = args.grid * args.grid
    threshold = images.SIGNATURE_THRESHOLD
    pics = photos()
    sig = {name: images.image_signature(p) for name, p in pics.items()}
    groups: dict[str, list[float]] = {}

    def add(group: str, d: float) -> None:
        groups.setdefault(group, []).append(d)

    names = list(pics)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            add("other photo", float(images.signature_distance(sig[a], sig[b])))
        for what, variant in same(pics[a]).items():
            add(
                f"same: {what}",
                float(images.signature_distance(sig[a], images.image_signature(variant))),
            )
        for what, variant in different(pics[a]).items():
            add(
                f"refuse: {what}",
                float(images.signature_distance(sig[a], images.image_signature(variant))),
            )
    print(
        f"{len(pics)} photos, {args.grid}x{args.grid} signature ({args.grid**2} bytes), threshold {threshold}"
    )
    print(f"{'group':34} {'n':>4} {'min':>6} {'p10':>6} {'median':>6} {'max':>6}  beyond threshold")
    for group, ds in sorted(groups.items(), key=lambda kv: (not kv[0].startswith("same"), kv[0])):
        a = np.array(ds)
        wrong = (a > threshold) if group.startswith("same") else (a <= threshold)
        print(
            f"{group:34} {len(a):4d} {a.min():6.3f} {np.percentile(a, 10):6.3f} "
            f"{np.median(a):6.3f} {a.max():6.3f}  {int(wrong.sum())} {'(false alarms)' if group.startswith('same') else '(missed)'}"
        )
    same_max = max(max(v) for k, v in groups.items() if k.startswith("same"))
    diff_min = min(min(v) for k, v in groups.items() if not k.startswith("same"))
    print(f"largest 'same' distance {same_max:.3f}; smallest 'refuse' distance {diff_min:.3f}")
    photo = pics["chelsea"]
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        images.image_signature(photo)
    per = (time.perf_counter() - t0) / n
    print(f"image_signature of a {photo.size[1]}x{photo.size[0]} PIL image: {per * 1e6:.0f} us")


if __name__ == "__main__":
    main()
