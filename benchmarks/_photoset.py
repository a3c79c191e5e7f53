"""A folder of real photos and many crops, flips and rescalings of them (for benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from relabel_store.write.samples import SAMPLE_PHOTOS, sample_photo


def write_photoset(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs: the sample photos, then random crops / flips / rescalings of them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    originals = [sample_photo(n) for n in SAMPLE_PHOTOS]
    for i in range(count):
        img = originals[i % len(originals)]
        if i >= len(originals):
            w, h = img.size
            s = rng.uniform(0.35, 1.0)
            cw, ch = int(w * s), int(h * rng.uniform(0.35, 1.0))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = img.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            scale = rng.uniform(0.6, 1.4)
            img = img.resize((max(32, int(img.width * scale)), max(32, int(img.height * scale))))
        img.save(folder / f"img_{i:05d}.jpg", quality=90)
    return folder
