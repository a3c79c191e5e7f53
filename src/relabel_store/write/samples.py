"""Real photos that ship inside scikit-image and scikit-learn: the demo's offline dataset.

``chelsea`` (a cat), ``coffee`` (an espresso cup), ``astronaut`` and ``rocket`` come from
``skimage.data``; ``china`` and ``flower`` from scikit-learn's sample images. Install them with
``pip install "relabel-store[photos]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ConfigurationError

with requires_extra("photos", "relabel_store.write.samples"):
    from PIL import Image

__all__ = ["SAMPLE_PHOTOS", "SYNSETS", "sample_photo", "side_by_side", "write_sample_photos"]

_SOURCES = {
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "astronaut": ("skimage", "astronaut"),
    "rocket": ("skimage", "rocket"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
}
SAMPLE_PHOTOS: tuple[str, ...] = tuple(_SOURCES)
#: ImageNet folder (synset) of the photos whose class is clear; others use their own name.
SYNSETS = {"chelsea": "n02124075", "coffee": "n07920052"}


def sample_photo(name: str) -> Image.Image:
    """One of :data:`SAMPLE_PHOTOS` as an RGB PIL image."""
    if name not in _SOURCES:
        raise ConfigurationError(
            f"no sample photo {name!r}; choose from {', '.join(SAMPLE_PHOTOS)}"
        )
    package, item = _SOURCES[name]
    with requires_extra("photos", f"the sample photo {name!r}"):
        if package == "skimage":
            import skimage.data

            array = getattr(skimage.data, item)()
        else:
            from sklearn.datasets import load_sample_image

            array = load_sample_image(item)
    return Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB")


def side_by_side(
    left: Image.Image, right: Image.Image, *, half_aspect: float = 1.0, height: int = 480
) -> Image.Image:
    """Two photos side by side: each centre-cropped to ``half_aspect`` (width / height) and
    resized to ``height``, so the composite is ``2 * half_aspect`` times as wide as it is tall.
    A test of where a label map puts each photo's class: each half should get its own."""
    width = max(1, round(height * half_aspect))
    halves = []
    for photo in (left, right):
        w, h = photo.size
        if w / h > half_aspect:  # too wide: crop the sides
            cw, ch = round(h * half_aspect), h
        else:
            cw, ch = w, round(w / half_aspect)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        box = (x0, y0, x0 + cw, y0 + ch)
        halves.append(photo.convert("RGB").resize((width, height), Image.Resampling.BICUBIC, box))
    out = Image.new("RGB", (2 * width, height))
    out.paste(halves[0], (0, 0))
    out.paste(halves[1], (width, 0))
    return out


def write_sample_photos(
    folder: str | os.PathLike[str],
    names: Iterable[str] | None = None,
    *,
    class_folders: bool = False,
    suffix: str = ".jpg",
    quality: int = 95,
) -> dict[str, Path]:
    """Write photos as files into ``folder`` (ImageNet ``<synset>/<name>.jpg`` layout with
    ``class_folders``); returns name -> path."""
    folder = Path(folder)
    written: dict[str, Path] = {}
    for name in SAMPLE_PHOTOS if names is None else names:
        target = folder / SYNSETS.get(name, name) if class_folders else folder
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{name}{suffix}"
        options: dict[str, Any] = (
            {"quality": quality} if suffix.lower() in (".jpg", ".jpeg") else {}
        )
        sample_photo(name).save(path, **options)
        written[name] = path
    return written
