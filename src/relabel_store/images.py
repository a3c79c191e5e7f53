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

__all__ = ["BACKGROUND", "IMAGE_EXTENSIONS", "decode_cell", "decode_image", "image_paths", "to_rgb"]

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
