"""Image decoding shared by generation and training: every image mode to 8-bit RGB.

``relabel-store generate`` (:mod:`relabel_store.write.inputs`) and the Hugging Face loader
(:mod:`relabel_store.loaders.hf`) decode images the same way, so a map and the training image it
labels see the same pixels: as stored, without applying an EXIF orientation (PIL, torchvision
and DALI with ``adjust_orientation=False`` decode them so too). Training-time code imports this
module, never the generation side. :func:`decode_cell` is the one reader of a Hugging Face
``datasets`` image cell (a PIL image, a ``{"bytes", "path"}`` dict or a path), and
:func:`image_paths` the one reader of a column's file paths (where path-derived keys come from).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, InputError

with requires_extra("torch", "relabel_store.images"):
    from PIL import Image

__all__ = [
    "BACKGROUND",
    "IMAGE_EXTENSIONS",
    "SIGNATURE_BYTES",
    "SIGNATURE_GRID",
    "SIGNATURE_KIND",
    "SIGNATURE_THRESHOLD",
    "decode_cell",
    "decode_image",
    "image_paths",
    "image_signature",
    "signature_distance",
    "to_rgb",
]

#: File suffixes (lower case) taken as images when scanning folders.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

#: Transparent pixels are composited onto this colour.
BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    * grayscale, bilevel, CMYK, YCbCr: PIL's conversion;
    * palette, LA / PA / RGBA, or any mode with a ``transparency`` entry: composited onto
      ``background`` (white) so transparent areas do not show whatever colour they store;
    * 16-bit and 32-bit integer grayscale (``I;16*``, ``I``): scaled from 0..65535 to 0..255
      (PIL's own conversion clips instead, turning most 16-bit photos white);
    * float (``F``): clipped to 0..255.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT:
        array = np.asarray(image).astype(np.float64)
        array = np.clip(np.rint(array / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if mode == "F":
        array = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("RGB")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def decode_image(data: bytes | str | os.PathLike[str]) -> tuple[Image.Image, tuple[int, int]]:
    """Decode encoded bytes or a file to an RGB image and its original (height, width).

    Raises whatever PIL raises for a truncated, corrupt or non-image input
    (:class:`~relabel_store.write.inputs.InputDataset` is the never-raising version).
    """
    if isinstance(data, bytes | bytearray | memoryview):  # nothing to close: no copy needed
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes fully: truncation and corruption surface here
        return to_rgb(image), (image.height, image.width)
    with Image.open(data) as image:  # closing the file frees the image: an RGB one is copied
        image.load()
        rgb = to_rgb(image)
        return (image.copy() if rgb is image else rgb), (image.height, image.width)


def decode_cell(cell: Any, column: str = "image") -> tuple[Image.Image, str | None]:
    """An RGB image and its file path (None when unknown) from one cell of a ``datasets``
    image column: a PIL image (decoded by ``datasets``), a ``datasets.Image(decode=False)``
    dict ``{"bytes", "path"}``, or a file path (local, or an fsspec URL such as
    ``zip://...::hf://...``). Bytes and files are decoded with :func:`decode_image`.

    ``datasets`` applies a JPEG's EXIF orientation when it decodes (``generate`` does not), so
    a decoded cell of a turned photo is not the image its record was made from; loaders refuse
    those whose shape differs, and ``Image(decode=False)`` cells avoid the question.
    """
    if isinstance(cell, Image.Image):
        return to_rgb(cell), getattr(cell, "filename", None) or None
    if isinstance(cell, Mapping):
        data, path = cell.get("bytes"), cell.get("path")
        if data is not None:
            return decode_image(data)[0], path
        if path:
            return _open_path(path), path
        raise InputError(f"a cell of column {column!r} has neither image bytes nor a path")
    if isinstance(cell, str | os.PathLike):
        path = os.fspath(cell)
        return _open_path(path), path
    raise ArgumentTypeError(
        f"column {column!r} holds {type(cell).__name__}; expected datasets.Image values "
        "(PIL images or {'bytes', 'path'} dicts) or file paths"
    )


def image_paths(dataset: Any, column: str) -> list[str | None]:
    """The file path of every image of ``column`` (``Image`` values or path strings), read from
    Arrow without decoding an image; None where a row has none."""
    paths: list[str | None] = []
    images = dataset.select_columns([column]).with_format("arrow")
    for batch in images.iter(batch_size=8192):
        values = batch.column(column)
        if str(values.type).startswith("struct"):
            values = values.combine_chunks() if hasattr(values, "chunks") else values
            values = values.field("path")
        paths.extend(values.to_pylist())
    return paths


def _open_path(path: str) -> Image.Image:
    if "://" in path:  # remote or chained (zip://...::hf://...): read through fsspec
        import fsspec

        with fsspec.open(path, "rb") as f:
            return decode_image(f.read())[0]
    return decode_image(path)[0]


# -- content signatures ---------------------------------------------------------------------------

#: Side of the signature's thumbnail: SIGNATURE_GRID x SIGNATURE_GRID cells (benchmarks/signatures.py
#: measured 8 and 16 on real photos; see docs/format.md for the figures).
SIGNATURE_GRID = 8
#: Bytes of one signature (one uint8 per cell).
SIGNATURE_BYTES = SIGNATURE_GRID * SIGNATURE_GRID
#: Name of the signature recipe, recorded with the ``signatures`` array: a reader refuses
#: signatures of a recipe it does not know instead of comparing unlike numbers.
SIGNATURE_KIND = f"gray-box{SIGNATURE_GRID}-z32"
#: Signatures further apart than this (:func:`signature_distance`) are of different images.
SIGNATURE_THRESHOLD = 0.5
_Z_SCALE = 32.0  # one standard deviation = 32 steps; +-4 sigma fills 0..255
_LUMA = np.array([0.299, 0.587, 0.114])
_FLAT = 1e-3  # a thumbnail this uniform (relative to its mean level) has no signature: all 128


def image_signature(image: Any) -> np.ndarray:
    """The content signature of a whole image: ``SIGNATURE_BYTES`` uint8.

    The image is area-averaged to a ``SIGNATURE_GRID`` square thumbnail (whatever its aspect
    ratio), turned to gray, normalised to zero mean and unit standard deviation and quantised
    (``128 + 32 z``). Re-encoding, resizing (squashing included), brightness and contrast hardly
    move it; another photo, a 90 or 180 degree turn, a flip or a crop move it far
    (:func:`signature_distance`). Takes a PIL image, a numpy array (H, W) or (H, W, C) or a
    torch tensor (C, H, W) or (H, W), any dtype and value range (float tensors normalised with
    a mean and std included). About 0.1 ms for an ImageNet-sized PIL image.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and _is_rgb_or_gray(image):
        image = Image.fromarray(image)  # PIL's area average is 10x faster than numpy's
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L"):
            image = to_rgb(image)
        g = SIGNATURE_GRID  # an exact area average (reducing_gap's shortcut moved it 2x more)
        small = image.resize((g, g), Image.Resampling.BOX)
        cells = np.asarray(small, np.float64)
    else:
        cells = _box_cells(_channels_last(image))
    gray = (
        cells @ _LUMA[: cells.shape[-1]] / _LUMA[: cells.shape[-1]].sum()
        if cells.ndim == 3
        else cells
    )
    return _quantise(gray)


def _is_rgb_or_gray(array: np.ndarray) -> bool:
    return array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)


def _channels_last(image: Any) -> np.ndarray:
    """A numpy array (H, W) or (H, W, C) of an array or tensor image."""
    if type(image).__module__.startswith("torch"):
        array = image.detach().cpu().numpy()
        if array.ndim == 3:  # torch images are (C, H, W)
            array = np.moveaxis(array, 0, -1)
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4):
        raise ArgumentTypeError(
            f"an image array of shape {array.shape} is neither (H, W, C) nor (C, H, W) with "
            "1, 3 or 4 channels"
        )
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise ArgumentTypeError(f"an image array must be (H, W) or (H, W, C), got {array.shape}")
    if array.ndim == 3:
        array = array[..., :3] if array.shape[-1] >= 3 else array[..., 0]
    return array


def _box_cells(array: np.ndarray) -> np.ndarray:
    """Area averages of ``array`` (H, W[, C]) over a SIGNATURE_GRID square grid of cells."""
    g = SIGNATURE_GRID
    h, w = array.shape[:2]
    # Cells of whole pixels (an image smaller than the grid repeats its pixels).
    ys = (np.arange(g) * h) // g
    xs = (np.arange(g) * w) // g
    if h < g or w < g:
        ys_idx = np.minimum((np.arange(g) * h) // g, h - 1)
        xs_idx = np.minimum((np.arange(g) * w) // g, w - 1)
        return array[ys_idx][:, xs_idx].astype(np.float64)
    sums = np.add.reduceat(np.add.reduceat(array.astype(np.float64), ys, axis=0), xs, axis=1)
    counts = np.diff(np.append(ys, h))[:, None] * np.diff(np.append(xs, w))[None, :]
    return sums / (counts[..., None] if sums.ndim == 3 else counts)


def _quantise(gray: np.ndarray) -> np.ndarray:
    flat = gray.reshape(-1)
    mean = flat.mean()
    std = flat.std()
    if not np.isfinite(std) or std <= _FLAT * max(abs(mean), 1.0) or std == 0:
        return np.full(SIGNATURE_BYTES, 128, np.uint8)
    z = (flat - mean) / std
    return np.clip(np.rint(128.0 + _Z_SCALE * z), 0, 255).astype(np.uint8)


def signature_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between signatures (the last axis; broadcasts): the root mean square of their
    difference in standard deviations. 0 for the same image; about 1.4 (sqrt 2) for unrelated
    images, 2 for a negative. Loaders treat above :data:`SIGNATURE_THRESHOLD` as another image."""
    d = (np.asarray(a, np.float32) - np.asarray(b, np.float32)) / _Z_SCALE
    return np.sqrt((d * d).mean(axis=-1))
