"""The published dense label maps (ReLabel's and TokenLabeling's ``.pt`` files), decoded safely.

Both releases hold one torch-serialized tensor per training image, ``[2, K, H, W]``: ``[0]`` the
top-K logits of each cell (descending), ``[1]`` their class ids stored as floats, rows = y and
columns = x. ReLabel (naver-ai/relabel_imagenet) saves float32 ``[2, 5, 15, 15]`` in torch's
legacy serialization; TokenLabeling (zihangJiang/TokenLabeling ``generate_label.py``) saves
float16 ``[2, 5, H, W]``. Bytes are only ever given to ``torch.load(..., weights_only=True)``;
whatever comes back is checked (type, dtype, shape, finite logits, integral ids in range) before
a single value reaches a store, and every refusal says why.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import InputError

with requires_extra("torch", "reading published .pt label maps"):
    import torch

#: No label map comes near this; a bigger member is refused without being read into memory.
MAX_MAP_BYTES = 16 << 20
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class MapRejected(InputError):
    """One published file is not a usable label map; ``str(exc)`` says why."""


@dataclass(frozen=True)
class PublishedFormat:
    """One release's file layout and what is known about the model that produced it."""

    name: str
    dtype: torch.dtype
    origin: str
    annotator: dict[str, Any]

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


_UNKNOWN_PREPROCESS = ["interpolation", "mean", "std"]

FORMATS: dict[str, PublishedFormat] = {
    "relabel": PublishedFormat(
        name="relabel",
        dtype=torch.float32,
        origin="naver-ai/relabel_imagenet (relabel_imagenet.tar)",
        annotator={
            "model": "tf_efficientnet_l2_ns_475",
            "description": "EfficientNet-L2 (Noisy Student, trained with JFT-300M) fine-tuned "
            "on ImageNet with multi-labels, the ReLabel paper's annotator (Yun et al., CVPR "
            "2021, arXiv 2101.05022)",
            "preprocess": {"input_size": [475, 475], "resize_mode": "whole-image"},
            "value_kind": "logits",
            "weights": None,
            "unknown": [*(f"preprocess.{f}" for f in _UNKNOWN_PREPROCESS), "weights"],
        },
    ),
    "tokenlabeling": PublishedFormat(
        name="tokenlabeling",
        dtype=torch.float16,
        origin="zihangJiang/TokenLabeling (label_top5_train_nfnet)",
        annotator={
            "model": "dm_nfnet_f6",
            "description": "NFNet-F6 at 576x576, TokenLabeling's annotator (Jiang et al., "
            "arXiv 2104.10858). Its README generates the maps with `generate_label.py "
            "--model dm_nfnet_f6 --pretrained --img-size 576 --crop-pct 1.0`, timm's eval "
            "transform (shorter side to 576, then a central 576x576 crop): if the release was "
            "made that way, the cells cover the central square of each image, not all of it",
            "preprocess": {"input_size": [576, 576], "resize_mode": None},
            "value_kind": "logits",
            "weights": None,
            "unknown": [
                "preprocess.resize_mode",
                *(f"preprocess.{f}" for f in _UNKNOWN_PREPROCESS),
                "weights",
            ],
        },
    ),
}

FORMAT_NAMES = tuple(FORMATS)


@dataclass(frozen=True)
class MapSpec:
    """What every member of one import must be, and how its maps are stored."""

    format: PublishedFormat
    k: int
    grid: tuple[int, int]
    num_classes: int
    values_dtype: str  # the store's: "float16" or "float32"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (2, self.k, *self.grid)


def load_tensor(data: bytes) -> torch.Tensor:
    """``torch.load(weights_only=True)`` of one file's bytes; anything but a tensor is refused."""
    try:
        with warnings.catch_warnings():  # torch asks to "file an issue" about hostile bytes
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or hostile bytes
        raise MapRejected(f"torch.load(weights_only=True) refused it: {_first_line(exc)}") from None
    if not isinstance(obj, torch.Tensor):
        raise MapRejected(f"holds a {type(obj).__name__}, not a tensor")
    if obj.layout != torch.strided or obj.is_quantized or obj.is_complex():
        raise MapRejected(f"holds a {obj.layout} / {obj.dtype} tensor, not a dense real one")
    return obj


def detect(tensor: torch.Tensor) -> str | None:
    """The format a loaded tensor looks like (by dtype and ``[2, K, H, W]`` shape), or None."""
    if tensor.dim() != 4 or tensor.shape[0] != 2 or min(tensor.shape) < 1:
        return None
    for fmt in FORMATS.values():
        if tensor.dtype == fmt.dtype:
            return fmt.name
    return None


def decode_map(data: bytes, spec: MapSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One file's ``(indices, values, source_values)``, each (H, W, K).

    ``indices`` are uint16 class ids, ``values`` the logits in the store's dtype and
    ``source_values`` as the file holds them. Raises :class:`MapRejected` with the reason when the
    file is not a ``spec``-shaped map with finite logits and integral ids in ``[0, C)``.
    """
    if len(data) > MAX_MAP_BYTES:
        raise MapRejected(f"is {len(data)} bytes, more than any label map ({MAX_MAP_BYTES})")
    tensor = load_tensor(data)
    fmt = spec.format
    if tensor.dtype != fmt.dtype or tuple(tensor.shape) != spec.shape:
        raise MapRejected(
            f"holds a {tensor.dtype} tensor of shape {list(tensor.shape)}; the {fmt.name} format "
            f"of this import needs {fmt.dtype} {list(spec.shape)}"
        )
    array = tensor.detach().numpy()
    logits, ids = array[0], array[1]
    low, high = float(logits.min()), float(logits.max())  # NaN and inf show here
    if not (np.isfinite(low) and np.isfinite(high)):
        raise MapRejected("has NaN or infinite logits")
    if (ids != np.rint(ids)).any():  # also NaN
        raise MapRejected("has class ids that are not whole numbers")
    first, last = float(ids.min()), float(ids.max())  # also inf
    if first < 0 or last >= spec.num_classes:
        raise MapRejected(
            f"has class ids outside 0..{spec.num_classes - 1} (min {first:g}, max {last:g})"
        )
    if spec.values_dtype == "float16" and max(-low, high) > _FLOAT16_MAX:
        raise MapRejected(
            "has logits beyond the float16 range (|logit| > 65504); import with "
            "--values float32 to keep them"
        )
    source = logits.transpose(1, 2, 0)
    indices = ids.transpose(1, 2, 0).astype(np.uint16)
    return indices, source.astype(spec.values_dtype), source


def _first_line(exc: BaseException) -> str:
    """The informative line of a loading error (torch's weights-only refusal puts it third)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    if line.startswith("Weights only load failed"):
        detail = [
            ln
            for ln in lines[1:]
            if not ln.startswith(("Check the documentation", "Please file an issue", "(1)", "(2)"))
        ]
        line = "pickled content weights_only does not allow" + (f" ({detail[0]})" if detail else "")
    return line if len(line) <= 240 else line[:237] + "..."
