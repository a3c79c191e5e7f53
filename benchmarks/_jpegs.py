"""ImageNet-like JPEGs without any photo package: smooth colour fields with fine grain.

Sizes follow ImageNet's typical ones (500x375, 375x500, 500x333, 400x400 ...), quality 90; the
grain gives files of roughly ImageNet's bytes per pixel, so decoding costs what it costs there.
Written on all cores (PIL releases the GIL while encoding).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(500, 375), (375, 500), (500, 333), (400, 400), (500, 400), (640, 480), (333, 500)]


def _one(folder: Path, i: int) -> None:
    rng = np.random.default_rng(i)
    width, height = SIZES[i % len(SIZES)]
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    grain = rng.normal(0, 12, (height, width, 3))
    pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"img_{i:06d}.jpg", quality=90)


def write_synthetic_jpegs(folder: Path, count: int) -> Path:
    """``count`` JPEGs ``img_NNNNNN.jpg`` in ``folder`` (a plain folder: keys are the stems)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda i: _one(folder, i), range(count)))
    return folder
