"""Recover the crop box and flip that a user's own image transform applied.

Users keep their augmentation pipeline. :func:`track_crops` wraps it in a callable that returns
``(transformed_image, CropBox)``:

- Pipelines made of crops, resizes, horizontal flips and pixel-only steps (torchvision v1 or v2,
  and timm's ``create_transform(..., is_training=True)``): each step is recognised and tracked.
  Random crops record the parameters their own ``get_params``/``make_params`` drew, so the
  user's transform runs unchanged, and the box is composed step by step (~40 µs an image).
- Other ``torchvision.transforms.v2`` geometry that keeps the image axis-aligned (padding,
  ``RandomZoomOut``, translations and scaling, ...): a probe of three boxes rides along with
  the image — the whole image, its left half and its top half, with clamping off. The first
  box comes out as the original image in output pixels, which pins the crop window; the second
  says whether the crop was mirrored; all three together prove that the geometry was a scale,
  a shift and at most a horizontal flip (~300 µs an image). Pixel-only steps run on the image
  alone.
- Anything else: wrap a callable that returns ``(image, CropBox)`` in :class:`ReturnsCropBox`.

Pipelines that rotate, shear, put in perspective or flip vertically, and those with torchvision
v2's or timm's AutoAugment-family steps, go to :mod:`relabel_store.loaders.geometry`, which tracks
their full geometry and returns a :class:`~relabel_store.pooling.Region` instead of a box.
Elsewhere torchvision v1's AutoAugment family and AugMix count as pixel-only (their small shears
are ignored, as the original ReLabel code ignores them).

Nothing is approximated silently. Steps whose geometry nothing here describes (elastic warps,
multi-crop steps such as ``FiveCrop``) and steps the tracker cannot see through (plain functions
or ``v2.Lambda`` in a v2 pipeline) are refused when the tracker is built, naming the step and what to use instead; and the
tracker runs the pipeline on a test image then (a dry run, with the random number generators'
states restored afterwards), so a pipeline that would fail on its first sample fails at
construction instead.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image

from relabel_store.errors import ArgumentTypeError, InvalidBoxError, UnsupportedTransformError
from relabel_store.pooling import CropBox, Region

__all__ = ["CropTracker", "ReturnsCropBox", "track_crops"]

# A Region where the pipeline rotates, shears or flips vertically (loaders/geometry.py).
CropTracker = Callable[[Any], tuple[Any, CropBox | Region]]

_FIX = (
    "Use a torchvision.transforms.v2 pipeline of crops, resizes, padding and horizontal flips "
    "(any such geometry is tracked), or wrap a callable that returns (image, CropBox) in "
    "relabel_store.loaders.ReturnsCropBox."
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
_CONTAINERS = {"Compose", "RandomApply", "RandomChoice", "RandomOrder"}
_MULTI_CROP = {"FiveCrop", "TenCrop"}
# Geometry that no axis-aligned crop box describes.
_WARPS = {"RandomRotation", "RandomAffine", "RandomPerspective", "ElasticTransform"}
# Detection steps act on boxes themselves (they would act on the probe).
_BOX_STEPS = {
    "RandomIoUCrop", "SanitizeBoundingBoxes", "ClampBoundingBoxes", "ConvertBoundingBoxFormat",
}  # fmt: skip

# The dry run: a test image like an ImageNet photo, several draws of the random steps.
_DRY_RUN_SIZE = (384, 512)  # (height, width)
_DRY_RUNS = 4


class ReturnsCropBox:
    """Marks a callable that already returns ``(image, CropBox)`` (or ``(image, Region)``):
    the explicit escape hatch."""

    def __init__(self, fn: Callable[[Any], tuple[Any, CropBox | Region]]) -> None:
        self.fn = fn

    def __call__(self, image: Any) -> tuple[Any, CropBox | Region]:
        out, box = self.fn(image)
        if not isinstance(box, CropBox | Region):
            raise UnsupportedTransformError(
                f"ReturnsCropBox({self.fn!r}) returned {type(box).__name__}, not a CropBox or "
                "a Region"
            )
        return out, box


def track_crops(transform: Any, *, sample: Any = None) -> CropTracker:
    """Wrap ``transform`` so that it also returns the crop box it applied (see module docs).

    The tracker is checked before it is returned: ``sample`` (an untransformed image from the
    dataset; by default a synthetic 512 x 384 RGB image) goes through it a few times. A
    transform that cannot be tracked raises :class:`UnsupportedTransformError` here, and one
    that is no transform at all an :class:`ArgumentTypeError`.
    """
    if transform is not None and not callable(transform) and not isinstance(transform, tuple):
        raise ArgumentTypeError(
            f"transform must be callable (an image transform), got {type(transform).__name__}"
        )
    tracker = _build(transform)
    _dry_run(tracker, sample, transform)
    return tracker


def _build(transform: Any) -> CropTracker:
    if transform is None:
        return _Untransformed()
    if isinstance(transform, ReturnsCropBox):
        return transform
    steps = list(transform) if isinstance(transform, tuple | list) else [transform]
    from relabel_store.loaders import geometry

    if geometry.needs_geometry(steps):  # rotations, shears, vertical flips: a Region
        return geometry.GeometryTracker(steps)
    for position, step in enumerate(_flatten(steps), start=1):
        _refuse_untrackable(step, position)
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
    # The two common cases directly: torchvision's dispatching get_size costs ~6 µs a call,
    # which the step-by-step tracker paid for every step of every image.
    if isinstance(image, Image.Image):
        w, h = image.size
        return h, w
    if type(image) is torch.Tensor or (
        isinstance(image, torch.Tensor) and type(image).__name__ in ("Image", "Mask")
    ):
        h, w = image.shape[-2:]
        return int(h), int(w)
    from torchvision.transforms.v2 import functional as F

    h, w = F.get_size(image)
    return int(h), int(w)


# -- refusals ---------------------------------------------------------------------------------------


def _name(step: Any) -> str:
    """A step as the user wrote it: ``RandomRotation``, ``v2.Lambda(<lambda>)``, ``function f``."""
    from torchvision.transforms import v2

    if isinstance(step, v2.Lambda):
        return f"v2.Lambda({getattr(step.lambd, '__name__', type(step.lambd).__name__)})"
    if not isinstance(step, torch.nn.Module) and hasattr(step, "__qualname__"):
        return f"function {step.__qualname__}"
    return type(step).__name__


def _where(step: Any, position: int | None) -> str:
    return f"step {position} ({_name(step)})" if position is not None else _name(step)


def _refuse_untrackable(step: Any, position: int | None) -> None:
    """Raise for a step (or a step nested in RandomApply/RandomChoice/...) that no tracker can
    follow faithfully, naming it and the fix."""
    name = type(step).__name__
    where = _where(step, position)
    if name in _CONTAINERS:
        for child in getattr(step, "transforms", ()):
            _refuse_untrackable(child, position)
        return
    if name in _MULTI_CROP:
        raise UnsupportedTransformError(
            f"{where} returns several crops of each image; one soft target cannot describe "
            "them. Train on one crop per image (RandomResizedCrop, RandomCrop, CenterCrop), or "
            "pool each crop's target yourself with relabel_store.pooling.pool."
        )
    if name == "RandomVerticalFlip" and getattr(step, "p", 1) > 0:
        raise UnsupportedTransformError(
            f"{where}: ReLabel targets have no vertical flip (label maps are upright). Remove "
            f"it from the training transform. {_FIX}"
        )
    if name in _WARPS and not _is_axis_aligned(step):
        raise UnsupportedTransformError(
            f"{where} rotates, shears or warps the image; no crop box describes what such a "
            "crop shows, and relabel-store does not approximate it. Remove it from the "
            "training transform (RandomAffine without degrees or shear, translate and scale "
            "only, is tracked), or wrap a callable that computes the box you want in "
            "relabel_store.loaders.ReturnsCropBox."
        )
    if name in _BOX_STEPS:
        raise UnsupportedTransformError(
            f"{where} is a detection step that acts on bounding boxes, and would act on the "
            f"crop-box probe instead. Remove it from the classification transform. {_FIX}"
        )


def _is_axis_aligned(step: Any) -> bool:
    """Whether a warp-family step is configured as a pure shift/scale (or does nothing)."""
    name = type(step).__name__
    degrees = getattr(step, "degrees", None)
    no_rotation = degrees is not None and all(float(d) == 0.0 for d in _as_list(degrees))
    if name == "RandomAffine":
        shear = getattr(step, "shear", None)
        return no_rotation and (shear is None or all(float(s) == 0.0 for s in _as_list(shear)))
    if name == "RandomRotation":
        return no_rotation
    if name == "RandomPerspective":
        return float(step.p) == 0.0 or float(step.distortion_scale) == 0.0
    if name == "ElasticTransform":
        return all(float(a) == 0.0 for a in _as_list(step.alpha))
    return False


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


# -- the dry run ------------------------------------------------------------------------------------


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore torch's, Python's and numpy's global generators afterwards: the dry run must not
    change the draws (and so the reproducibility) of the user's training."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _test_image() -> Image.Image:
    h, w = _DRY_RUN_SIZE
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(noise)


def _dry_run(tracker: CropTracker, sample: Any, transform: Any) -> None:
    """Run the tracker on a test image a few times; any failure becomes a refusal now."""
    if isinstance(tracker, _Untransformed):
        return
    image = _test_image() if sample is None else sample
    # Warnings are the training run's to show (once per worker, as usual), not the dry run's.
    with _preserved_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(_DRY_RUNS):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            try:
                _check_output(tracker(image))
            except UnsupportedTransformError:
                raise
            except Exception as exc:
                notes = " ".join(getattr(exc, "__notes__", ()))
                where = notes or f"the transform {_name(transform)}"
                raise UnsupportedTransformError(
                    f"the training transform failed on a test image when the loader was built "
                    f"({where}): {type(exc).__name__}: {exc}. {_FIX}"
                ) from exc


def _check_output(result: Any) -> None:
    if not (
        isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], CropBox | Region)
    ):
        raise UnsupportedTransformError(
            f"the crop tracker returned {type(result).__name__}, not (image, CropBox)"
        )


def _failed_step(exc: BaseException, step: Any, position: int) -> None:
    """Name the step in an error it raised (the exception itself is re-raised unchanged)."""
    exc.add_note(f"raised by step {position} ({_name(step)}) of the training transform")


# -- torchvision v2: the box probe ----------------------------------------------------------------


class _V2Probe:
    def __init__(self, transform: Any) -> None:
        steps = _flatten([transform])
        # Steps that leave pixel positions alone run on the image alone: cheaper than carrying
        # the probe, and ToPureTensor would strip the probe's canvas_size.
        self.steps = [
            (step, position, _probe_kind(step, position))
            for position, step in enumerate(steps, start=1)
        ]
        self.geometry = [_name(s) for s, _, kind in self.steps if kind == "probe"]

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        from torchvision import tv_tensors

        h, w = image_size(image)
        probe = tv_tensors.BoundingBoxes(
            [[0, 0, w, h], [0, 0, w / 2, h], [0, 0, w, h / 2]],
            format="XYXY",
            canvas_size=(h, w),
            clamping_mode=None,
        )
        for step, position, kind in self.steps:
            try:
                if kind == "probe":
                    image, probe = step(image, probe)
                elif kind == "image":
                    image = step(image)
                else:  # a user function on images: it must keep the image's size
                    before = image_size(image)
                    image = step(image)
                    if image_size(image) != before:
                        raise UnsupportedTransformError(
                            f"step {position} ({_name(step)}) changed the image size from "
                            f"{before} to {image_size(image)}: it moves pixels, so it cannot "
                            f"run on the image alone. {_FIX}"
                        )
            except UnsupportedTransformError:
                raise
            except Exception as exc:
                _failed_step(exc, step, position)
                raise
        return image, _box_from_probe(probe, self.geometry)


def _probe_kind(step: Any, position: int) -> str:
    """How the probe runs a step: ``"probe"`` (image and boxes), ``"image"`` (pixel-only), or
    ``"user-image"`` (a user function restricted to images: its output size is checked)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    name = type(step).__name__
    if name in _PHOTOMETRIC:
        return "image"
    if isinstance(step, v2.Lambda):
        if any(issubclass(tv_tensors.BoundingBoxes, t) for t in step.types):
            raise UnsupportedTransformError(
                f"step {position} ({_name(step)}) applies its function to every input, the "
                "crop-box probe included. If the function only changes pixel values, restrict "
                "it to images: v2.Lambda(fn, PIL.Image.Image, tv_tensors.Image); if it moves "
                "pixels, write it as a v2.Transform that also transforms BoundingBoxes, or "
                "wrap the whole pipeline in relabel_store.loaders.ReturnsCropBox."
            )
        return "user-image"
    if name in _CONTAINERS:  # RandomApply, RandomChoice, ...: as their children need
        kinds = [_probe_kind(child, position) for child in step.transforms]
        return "image" if all(kind == "image" for kind in kinds) else "probe"
    if isinstance(step, v2.Transform):
        return "probe"
    if callable(step) and not isinstance(step, torch.nn.Module):
        raise UnsupportedTransformError(
            f"step {position} ({_name(step)}) is a plain function: a v2 pipeline passes it the "
            "image and the crop-box probe, and relabel-store cannot tell whether it moves "
            "pixels. If it only changes pixel values, wrap it as v2.Lambda(fn, "
            "PIL.Image.Image, tv_tensors.Image); if it moves pixels, write it as a "
            "v2.Transform that also transforms BoundingBoxes, or wrap the whole pipeline in "
            "relabel_store.loaders.ReturnsCropBox."
        )
    raise UnsupportedTransformError(
        f"step {position} ({name}) is not a torchvision.transforms.v2 transform, so it cannot "
        f"carry the crop-box probe through the other v2 steps; use its v2 version. {_FIX}"
    )


# Tolerance of the probe's consistency checks, in output pixels per output pixel of the box.
_PROBE_TOLERANCE = 1e-3


def _box_from_probe(probe: Any, geometry: Sequence[str]) -> CropBox:
    (a, b, c, d), (e, f, g, h), (i, j, k, m) = probe.tolist()
    oh, ow = probe.canvas_size
    steps = ", ".join(geometry) or "none"
    if not c - a > 0 or not d - b > 0:
        raise UnsupportedTransformError(
            f"the transform collapsed the image to an empty box (geometric steps: {steps}); "
            "cannot recover the crop"
        )
    # A shift and a scale per axis, plus at most a horizontal flip, map the left half onto
    # half the width at one side, full height; the top half onto the top half, full width.
    tol_x, tol_y = _PROBE_TOLERANCE * (c - a) + 1e-4, _PROBE_TOLERANCE * (d - b) + 1e-4
    flipped = (e + g) / 2 > (a + c) / 2
    side = abs(g - c) if flipped else abs(e - a)
    consistent = (
        abs((g - e) - (c - a) / 2) <= tol_x
        and side <= tol_x
        and abs(f - b) <= tol_y
        and abs(h - d) <= tol_y
        and abs(i - a) <= tol_x
        and abs(k - c) <= tol_x
        and abs(j - b) <= tol_y
        and abs((m - j) - (d - b) / 2) <= tol_y
    )
    if not consistent:
        raise UnsupportedTransformError(
            "the transform moved the image in a way no crop box describes (a rotation, "
            f"shear, warp or vertical flip; geometric steps: {steps}). {_FIX}"
        )
    x0 = (c - ow) / (c - a) if flipped else -a / (c - a)
    y0 = -b / (d - b)
    try:
        return CropBox(x0, y0, x0 + ow / (c - a), y0 + oh / (d - b), flipped=flipped)
    except InvalidBoxError as exc:
        raise InvalidBoxError(f"{exc} (geometric steps of the transform: {steps})") from None


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
        self.steps = [
            (*self._classify(t, position), position)
            for position, t in enumerate(_flatten(transforms), start=1)
        ]

    @staticmethod
    def _classify(step: Any, position: int) -> tuple[str, Any]:
        name = type(step).__name__
        if name in ("RandomResizedCrop", "RandomResizedCropAndInterpolation", "RandomCrop"):
            if name == "RandomCrop" and (getattr(step, "padding", None) or step.pad_if_needed):
                raise UnsupportedTransformError(
                    f"step {position} (RandomCrop with padding) is not tracked step by step. {_FIX}"
                )
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
            f"cannot recover the crop box through step {position} ({_name(step)}), a "
            "torchvision v1 or timm step that relabel-store does not know to move pixels or "
            f"not. {_FIX}"
        )

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        x0, y0, x1, y1, flipped = 0.0, 0.0, 1.0, 1.0, False
        for kind, step, position in self.steps:
            try:
                if kind == "flip":
                    if torch.rand(1) < step.p:  # the same draw the step itself makes
                        from torchvision.transforms.v2 import functional as F

                        image = F.horizontal_flip(image)
                        flipped = not flipped
                    continue
                if kind == "pixels" or kind == "resize":
                    image = step(image)
                    continue
                h, w = image_size(image)
                image = step(image)
            except Exception as exc:
                _failed_step(exc, step, position)
                raise
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
