"""Recover the crop box and flip that a user's own image transform applied.

Users keep their augmentation pipeline. :func:`track_crops` wraps it in a callable that returns
``(transformed_image, CropBox)``:

- Pipelines made of crops, resizes, horizontal flips and pixel-only steps (torchvision v1 or v2,
  and timm's ``create_transform(..., is_training=True)``): each step is recognised and tracked.
  Random crops record the parameters their own ``get_params``/``make_params`` drew, so the
  user's transform runs unchanged, and the box is composed step by step (~40 µs an image).
- Other ``torchvision.transforms.v2`` geometry (rotations, affine, padding, ...): a probe of two
  boxes rides along with the image — the whole image and its left half, with clamping off. The
  first box comes out as the original image in output pixels, which pins the crop window; the
  second says whether the crop was mirrored (~300 µs an image). Pixel-only steps run on the
  image alone.

The AutoAugment family (AutoAugment, RandAugment, TrivialAugmentWide, AugMix) counts as
pixel-only: some of its operations shear, rotate or translate by a few pixels, which the target
ignores, as the original ReLabel code does; torchvision v2 refuses boxes in these steps anyway.
- Anything else: wrap a callable that returns ``(image, CropBox)`` in :class:`ReturnsCropBox`.

Unsupported pipelines fail when the tracker is built, not in the middle of an epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from relabel_store.errors import UnsupportedTransformError
from relabel_store.pooling import CropBox

__all__ = ["CropTracker", "ReturnsCropBox", "track_crops"]

CropTracker = Callable[[Any], tuple[Any, CropBox]]

_FIX = (
    "Use a torchvision.transforms.v2 pipeline (any geometry is tracked), or wrap a callable that "
    "returns (image, CropBox) in relabel_store.loaders.ReturnsCropBox."
)
# Steps that leave pixel positions alone (photometric, conversion, normalisation, erasing).
_PHOTOMETRIC = {
    "ToTensor", "PILToTensor", "ToImage", "ToDtype", "ConvertImageDtype", "ToPureTensor",
    "MaybeToTensor", "MaybePILToTensor", "ToNumpy", "Normalize", "NormalizeAndToTensor",
    "ColorJitter", "Grayscale", "RandomGrayscale", "GaussianBlur", "GaussianNoise",
    "RandomErasing", "RandomAutocontrast", "RandomEqualize", "RandomPosterize",
    "RandomSolarize", "RandomAdjustSharpness", "RandomInvert", "RandomPhotometricDistort",
    "RandomChannelPermutation", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix",
    "AugMixAugment",
}  # fmt: skip


class ReturnsCropBox:
    """Marks a callable that already returns ``(image, CropBox)``: the explicit escape hatch."""

    def __init__(self, fn: Callable[[Any], tuple[Any, CropBox]]) -> None:
        self.fn = fn

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        out, box = self.fn(image)
        if not isinstance(box, CropBox):
            raise UnsupportedTransformError(
                f"ReturnsCropBox({self.fn!r}) returned {type(box).__name__}, not a CropBox"
            )
        return out, box


def track_crops(transform: Any) -> CropTracker:
    """Wrap ``transform`` so that it also returns the crop box it applied (see module docs)."""
    if transform is None:
        return _Untransformed()
    if isinstance(transform, ReturnsCropBox):
        return transform
    steps = list(transform) if isinstance(transform, tuple | list) else [transform]
    from torchvision.transforms import v2

    try:
        return _StepWalker(steps)
    except UnsupportedTransformError:
        if isinstance(transform, v2.Transform):
            return _V2Probe(transform)
        raise


class _Untransformed:
    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        return image, CropBox.full()


def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of a PIL image, tensor or tv_tensor."""
    from torchvision.transforms.v2 import functional as F

    h, w = F.get_size(image)
    return int(h), int(w)


# -- torchvision v2: the box probe ----------------------------------------------------------------


class _V2Probe:
    def __init__(self, transform: Any) -> None:
        from torchvision.transforms import v2

        steps = _flatten([transform])
        # Steps that leave pixel positions alone run on the image alone: cheaper than carrying
        # the probe, and ToPureTensor would strip the probe's canvas_size.
        self.steps = [(s, type(s).__name__ in _PHOTOMETRIC) for s in steps]
        for step, _ in self.steps:
            if isinstance(step, v2.RandomVerticalFlip):
                raise UnsupportedTransformError(
                    "RandomVerticalFlip is not tracked (ReLabel targets assume upright crops). "
                    + _FIX
                )

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        from torchvision import tv_tensors

        h, w = image_size(image)
        probe = tv_tensors.BoundingBoxes(
            [[0, 0, w, h], [0, 0, w / 2, h]],
            format="XYXY",
            canvas_size=(h, w),
            clamping_mode=None,
        )
        for step, image_only in self.steps:
            if image_only:
                image = step(image)
            else:
                image, probe = step(image, probe)
        return image, _box_from_probe(probe)


def _box_from_probe(probe: Any) -> CropBox:
    (a, b, c, d), (e, _, f, _) = probe.tolist()
    oh, ow = probe.canvas_size
    if c - a <= 0 or d - b <= 0:
        raise UnsupportedTransformError(
            "the transform collapsed the image to an empty box; cannot recover the crop"
        )
    flipped = (e + f) / 2 > (a + c) / 2
    x0 = (c - ow) / (c - a) if flipped else -a / (c - a)
    y0 = -b / (d - b)
    return CropBox(x0, y0, x0 + ow / (c - a), y0 + oh / (d - b), flipped=flipped)


# -- crops, resizes and flips: step by step ---------------------------------------------------------


class _RecordParams:
    """Stands in for a crop's ``get_params``/``make_params`` and remembers what it returned.

    v1 and timm crops return ``(top, left, height, width)``; v2 crops a dict with those keys.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.last: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.last = self.fn(*args, **kwargs)
        return self.last

    def window(self) -> tuple[int, int, int, int]:
        last = self.last
        if isinstance(last, dict):
            return last["top"], last["left"], last["height"], last["width"]
        return last


class _StepWalker:
    def __init__(self, transforms: Sequence[Any]) -> None:
        self.steps = [self._classify(t) for t in _flatten(transforms)]

    @staticmethod
    def _classify(step: Any) -> tuple[str, Any]:
        name = type(step).__name__
        if name in ("RandomResizedCrop", "RandomResizedCropAndInterpolation", "RandomCrop"):
            if name == "RandomCrop" and (getattr(step, "padding", None) or step.pad_if_needed):
                raise UnsupportedTransformError(f"RandomCrop with padding is not tracked. {_FIX}")
            step = copy.copy(step)  # never patch the user's own object
            attr = "make_params" if hasattr(step, "make_params") else "get_params"  # v2 / v1
            setattr(step, attr, _RecordParams(getattr(step, attr)))
            return ("crop_v2" if attr == "make_params" else "crop"), step
        if name == "RandomHorizontalFlip":
            return "flip", step
        if name in ("Resize", "ResizeKeepRatio"):
            return "resize", step
        if name == "CenterCrop":
            return "center", step
        if name == "RandomApply" and all(
            type(t).__name__ in _PHOTOMETRIC for t in _flatten(step.transforms)
        ):
            return "pixels", step
        if name in _PHOTOMETRIC:
            return "pixels", step
        raise UnsupportedTransformError(
            f"cannot recover the crop box through {name} (a torchvision v1 or timm step that "
            f"relabel-store does not know to move pixels or not). {_FIX}"
        )

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        x0, y0, x1, y1, flipped = 0.0, 0.0, 1.0, 1.0, False
        for kind, step in self.steps:
            if kind == "flip":
                if torch.rand(1) < step.p:  # the same draw the step itself makes
                    from torchvision.transforms.v2 import functional as F

                    image = F.horizontal_flip(image)
                    flipped = not flipped
                continue
            h, w = image_size(image)
            image = step(image)
            if kind == "pixels" or kind == "resize":
                continue
            if kind == "crop":
                top, left, ch, cw = step.get_params.window()
            elif kind == "crop_v2":
                top, left, ch, cw = step.make_params.window()
            else:  # center crop: torchvision rounds the offset the same way
                ch, cw = image_size(image)
                top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
            sx, sy = (x1 - x0) / w, (y1 - y0) / h
            if flipped:
                x0, x1 = x1 - (left + cw) * sx, x1 - left * sx
            else:
                x0, x1 = x0 + left * sx, x0 + (left + cw) * sx
            y0, y1 = y0 + top * sy, y0 + (top + ch) * sy
        return image, CropBox(x0, y0, x1, y1, flipped=flipped)


def _flatten(transforms: Sequence[Any]) -> list[Any]:
    """The steps of (nested) v1/v2 Compose pipelines, in order."""
    out = []
    for t in transforms:
        inner = getattr(t, "transforms", None)
        if type(t).__name__ == "Compose" and inner is not None:
            out.extend(_flatten(inner))
        else:
            out.append(t)
    return out
