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
- albumentations pipelines (``A.Compose``): a copy runs with the image's corners as keypoints,
  whose output positions pin the crop window, scale and flip (see :class:`_Albumentations`).
- kornia crops of a batch after the loader: :func:`kornia_refs` moves the ``pooling="batch"``
  references by the windows kornia drew.
- Anything else: wrap a callable that returns ``(image, CropBox)`` in :class:`ReturnsCropBox`.

The pixels confirm the box (``check_crops``, on by default): on the first samples of every
process, the image after each tracked geometric step must show the source image under the box
tracked so far (see :class:`_Confirmation`); a step the tracker misreads (a user's crop that
transforms images but not boxes, a re-implementation under a known name) is refused by name.

Pipelines that rotate, shear, put in perspective or flip vertically, and those with torchvision
v2's or timm's AutoAugment-family steps, go to :mod:`relabel_store.loaders.geometry`, which tracks
their full geometry and returns a :class:`~relabel_store.pooling.Region` instead of a box
(confirmed from the pixels in the same way).
Elsewhere torchvision v1's AutoAugment family and AugMix count as pixel-only (their small shears
are ignored, as the original ReLabel code ignores them).

Nothing is approximated silently. Steps whose geometry nothing here describes (elastic warps,
multi-crop steps such as ``FiveCrop``) and steps the tracker cannot see through (plain functions
or ``v2.Lambda`` in a v2 pipeline) are refused when the tracker is built, naming the step and
what to use instead; and the tracker runs the pipeline on a test image then (a dry run, with the random number generators'
states restored afterwards), so a pipeline that would fail on its first sample fails at
construction instead.
"""

from __future__ import annotations

import copy
import os
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

__all__ = ["CropTracker", "ReturnsCropBox", "kornia_refs", "track_crops"]

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


#: How many samples each process confirms from their pixels by default (``check_crops``).
CONFIRMED_SAMPLES = 8


def track_crops(
    transform: Any, *, sample: Any = None, check_crops: bool | int = True
) -> CropTracker:
    """Wrap ``transform`` so that it also returns the crop box it applied (see module docs).

    The tracker is checked before it is returned: ``sample`` (an untransformed image from the
    dataset; by default a synthetic 512 x 384 RGB image) goes through it a few times. A
    transform that cannot be tracked raises :class:`UnsupportedTransformError` here, and one
    that is no transform at all an :class:`ArgumentTypeError`.

    ``check_crops``: the first samples of every process (each DataLoader worker) are
    confirmed from their pixels: after each tracked geometric step, the image must show the
    source image under the box tracked so far, and pixel-only steps must keep the image's
    size; a step the tracker misreads is refused by name (see :class:`_Confirmation`). True
    confirms :data:`CONFIRMED_SAMPLES` samples, an int that many, False (or 0) none.
    """
    if transform is not None and not callable(transform) and not isinstance(transform, tuple):
        raise ArgumentTypeError(
            f"transform must be callable (an image transform), got {type(transform).__name__}"
        )
    if not isinstance(check_crops, bool | int) or check_crops < 0:
        raise ArgumentTypeError(
            f"check_crops must be True, False or a number of samples, got {check_crops!r}"
        )
    samples = CONFIRMED_SAMPLES if check_crops is True else int(check_crops)
    tracker = _build(transform, samples)
    _dry_run(tracker, sample, transform)
    return tracker


def _build(transform: Any, confirm: int = CONFIRMED_SAMPLES) -> CropTracker:
    if transform is None:
        return _Untransformed()
    if isinstance(transform, ReturnsCropBox):
        return transform
    adapted = _adapt_foreign(transform, confirm)
    if adapted is not None:
        return adapted
    steps = list(transform) if isinstance(transform, tuple | list) else [transform]
    from relabel_store.loaders import geometry

    if geometry.needs_geometry(steps):  # rotations, shears, vertical flips: a Region
        return geometry.GeometryTracker(steps, confirm)
    for position, step in enumerate(_flatten(steps), start=1):
        _refuse_foreign(step, position)
        _refuse_untrackable(step, position)
    from torchvision.transforms import v2

    try:
        return _StepWalker(steps, confirm)
    except UnsupportedTransformError:
        if isinstance(transform, v2.Transform):
            return _V2Probe(transform, confirm)
        raise


def _adapt_foreign(transform: Any, confirm: int) -> CropTracker | None:
    """The tracker of another library's whole pipeline (albumentations), or None."""
    if type(transform).__module__.split(".")[0] == "albumentations":
        return _Albumentations(transform, confirm)
    return None


def _refuse_foreign(step: Any, position: int) -> None:
    """Name albumentations and kornia steps inside torchvision/timm pipelines: neither carries
    the probe, and kornia's augmentations work on batches after the loader."""
    library = type(step).__module__.split(".")[0]
    if library == "albumentations":
        raise UnsupportedTransformError(
            f"step {position} ({type(step).__name__}) is an albumentations transform inside a "
            "torchvision/timm pipeline; relabel-store tracks albumentations pipelines whole. "
            "Pass the albumentations pipeline itself (A.Compose([...])) as the transform, with "
            "the image as a numpy array (the dataset's images are converted for it), and keep "
            "conversions such as ToTensorV2 inside it."
        )
    if library == "kornia":
        raise UnsupportedTransformError(
            f"step {position} ({type(step).__name__}) is a kornia augmentation: kornia "
            "augments batches of tensors, usually on the GPU after the DataLoader, where no "
            "per-sample crop can be tracked. Crop in the loader with a torchvision/timm/"
            "albumentations transform, or run kornia's crop on the batch and pool its boxes "
            "with relabel_store.loaders.kornia_refs and LabelPooler (docs/loaders.md, 'kornia')."
        )


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
    """Smooth random blobs, as photos are smooth: the output check compares block means,
    which pixel noise would blur across block edges."""
    h, w = _DRY_RUN_SIZE
    coarse = np.random.default_rng(0).integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)


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
    confirm = getattr(tracker, "confirm", None)
    if confirm is not None:  # the training samples are confirmed afresh
        confirm.reset()


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


# -- confirming boxes from the pixels ------------------------------------------------------------

# Agreement (|normalised cross-correlation| of up to 12 x 12 block means) at which a tracked
# step's image is taken to show the source under its box. Measured on the sample photos
# through RandomResizedCrop pipelines (ColorJitter, grayscale, inversion included): right
# boxes 0.96 to 1.0; the whole image where a crop was taken, or the mirror image: median
# 0.2-0.4, rarely above 0.6. Images of pixel noise cropped to 32 x 32 (the tests' JPEGs): right
# boxes 0.75 and up.
_AGREEMENT = 0.6
_GRID = 12
# Pixel steps that also rotate, shear and translate now and then (ignored by the target, see
# the module docs): after one, a sample's images are no evidence about the later steps.
_SOMETIMES_MOVE = {"AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix", "AugMixAugment"}


class _Confirmation:
    """Confirms the first samples of each process from their pixels (``check_crops``).

    A tracker calls :meth:`due` once a sample; while it says True, the tracker hands each
    tracked geometric step's image and box so far to :meth:`look`, then calls :meth:`done`.
    A sample whose image disagrees with its box at some step counts against that step;
    a sample with no decidable look (flat images, unknown image types) does not count. Two
    disagreeing samples, more than agree, are refused with the step's name: a misread is
    systematic, while a rare disagreement (a heavy augmentation before the crop) is not.
    Per process: DataLoader workers inherit the counts at fork, and reset them here by pid.
    """

    def __init__(self, samples: int, geometry: str, tracked: str = "crop box") -> None:
        self.samples = samples
        self.geometry = geometry
        self.tracked = tracked  # what the tracker tracks, for the refusal: "crop box", "region"
        self.reset()

    def reset(self) -> None:
        self.pid = os.getpid()
        self.calls = self.fits = self.misfits = 0
        self.blamed: dict[str, list[float]] = {}
        self._sample_blame: tuple[str, float] | None = None
        self._sample_looked = False

    def due(self) -> bool:
        if not self.samples:
            return False
        if os.getpid() != self.pid:
            self.reset()
        # Undecidable samples still use the budget, twice over: never check forever.
        return self.calls < 2 * self.samples and self.fits + self.misfits < self.samples

    def blind(self, step: Any) -> bool:
        """Whether ``step`` (pixel-only, just run) ends this sample's looks: the AutoAugment
        family moves pixels now and then, which the target ignores by design; the looks
        before it stand."""
        name = type(step).__name__
        return name in _SOMETIMES_MOVE or (
            name in _CONTAINERS
            and any(type(t).__name__ in _SOMETIMES_MOVE for t in _flatten(step.transforms))
        )

    def look(self, source: Any, image: Any, box: Any, step: str) -> None:
        """Compare ``image`` (after ``step``) with ``source`` under ``box`` (a CropBox, or
        the box's (x0, y0, x1, y1, flipped))."""
        if isinstance(box, tuple):
            x0, y0, x1, y1, flipped = box
            box = _LooseBox(x0, y0, x1, y1, flipped)
        self.record(_agreement(source, image, box), step)

    def record(self, score: float | None, step: str) -> None:
        """Count one look's agreement (None: undecidable) after ``step`` for this sample."""
        if score is None:
            return
        self._sample_looked = True
        if abs(score) < _AGREEMENT and self._sample_blame is None:
            self._sample_blame = (step, score)

    def done(self) -> None:
        self.calls += 1
        blame, looked = self._sample_blame, self._sample_looked
        self._sample_blame, self._sample_looked = None, False
        if blame is not None:
            self.misfits += 1
            self.blamed.setdefault(blame[0], []).append(blame[1])
        elif looked:
            self.fits += 1
        if self.misfits >= 2 and self.misfits > self.fits:
            step, scores = max(self.blamed.items(), key=lambda item: len(item[1]))
            raise UnsupportedTransformError(
                f"the {self.tracked} tracked through {step} does not match the image it "
                f"produced: on {self.misfits} of the first {self.fits + self.misfits} samples, "
                f"the transformed image does not show the source image under the tracked "
                f"{self.tracked} "
                f"(agreement {', '.join(f'{abs(x):.2f}' for x in scores[:4])}; right boxes "
                f"score above {_AGREEMENT}). The step moves pixels in a way relabel-store "
                "misreads (a subclass or a re-implementation that crops, flips, resizes or "
                "rotates differently from the step it is named after, or one that transforms images "
                f"but not bounding boxes); geometric steps: {self.geometry}. Replace it with "
                "the torchvision step it imitates, make it transform tv_tensors.BoundingBoxes "
                "too, or wrap a callable that returns (image, CropBox or Region) in "
                "relabel_store.loaders.ReturnsCropBox. (If the images are really shown right "
                "and only look different, e.g. heavy augmentation before the crop, pass "
                "check_crops=False to the loader.)"
            )


class _LooseBox:
    """A box that may still be degenerate or inverted mid-pipeline (no CropBox checks)."""

    __slots__ = ("flipped", "x0", "x1", "y0", "y1")

    def __init__(self, x0: float, y0: float, x1: float, y1: float, flipped: bool) -> None:
        self.x0, self.y0, self.x1, self.y1, self.flipped = x0, y0, x1, y1, flipped


def _plane(image: Any) -> Image.Image | None:
    """The image as one PIL plane (``"L"``, or ``"F"``: the mean of its channels), or None
    for what is not one image (a batch, a list of crops, a type this does not know)."""
    if isinstance(image, Image.Image):
        if image.mode in ("L", "F"):
            return image
        return image.convert("F" if image.mode.startswith("I") else "L")
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        return None
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:  # (C, H, W)
        array = array.mean(0, dtype=np.float32)
    elif array.ndim == 3 and array.shape[-1] <= 4:  # (H, W, C): numpy images
        array = array.mean(-1, dtype=np.float32)
    elif array.ndim != 2:
        return None
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F")


def _agreement(source: Any, image: Any, box: Any) -> float | None:
    """How well ``image`` shows ``source`` under ``box``: the normalised cross-correlation of
    a 12 x 12 grid of block means of both (PIL's exact BOX resampling, sub-pixel box
    edges). Robust to whatever acts on values (colour jitter, normalisation, grayscale;
    inversion gives -1: callers take the magnitude). None when undecidable: an image type
    this does not read, a box mostly outside the source, too few pixels, a flat source."""
    src, out = _plane(source), _plane(image)
    if src is None or out is None:
        return None
    width, height = src.size
    out_w, out_h = out.size
    bw, bh = box.x1 - box.x0, box.y1 - box.y0
    if not bw > 0 or not bh > 0:
        return None
    # The part of the box inside the source (zoom-out and padding lie outside), and where it
    # lands in the image.
    ix0, ix1 = max(box.x0, 0.0), min(box.x1, 1.0)
    iy0, iy1 = max(box.y0, 0.0), min(box.y1, 1.0)
    if ix1 - ix0 < 0.25 * bw or iy1 - iy0 < 0.25 * bh:
        return None
    u0, u1 = (ix0 - box.x0) / bw, (ix1 - box.x0) / bw
    if box.flipped:
        u0, u1 = 1 - u1, 1 - u0
    v0, v1 = (iy0 - box.y0) / bh, (iy1 - box.y0) / bh
    # Blocks of at least 4 x 4 pixels on both sides: resampling blurs their edges.
    gx = min(_GRID, int((u1 - u0) * out_w) // 4, int((ix1 - ix0) * width) // 4)
    gy = min(_GRID, int((v1 - v0) * out_h) // 4, int((iy1 - iy0) * height) // 4)
    if gx < 4 or gy < 4:
        return None
    # The source under the box is first resampled to the image's own resolution (PIL's
    # antialiased bilinear filter, like the steps' own), so that both sides blur alike across
    # block edges: pixel noise then agrees too.
    region = (u0 * out_w, v0 * out_h, u1 * out_w, v1 * out_h)
    size = (max(1, round(region[2] - region[0])), max(1, round(region[3] - region[1])))
    under = (ix0 * width, iy0 * height, ix1 * width, iy1 * height)
    resampled = src.resize(size, Image.Resampling.BILINEAR, under)
    a = np.asarray(resampled.resize((gx, gy), Image.Resampling.BOX), np.float64)
    b = np.asarray(out.resize((gx, gy), Image.Resampling.BOX, region), np.float64)
    if box.flipped:
        b = b[:, ::-1]
    return _correlation(a, b)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """The normalised cross-correlation of the source's block means ``a`` and the image's
    ``b`` (None for a flat source, which shows nothing): what every output check compares
    against its bar, blind to brightness, contrast, inversion and normalisation."""
    scale = float(np.abs(a).max())
    a, b = a - a.mean(), b - b.mean()
    na, nb = float(np.sqrt((a * a).sum())), float(np.sqrt((b * b).sum()))
    if na <= 2e-3 * scale * np.sqrt(a.size) or nb == 0.0:
        return None
    return float((a * b).sum() / (na * nb))


def _size_or_none(image: Any) -> tuple[int, int] | None:
    try:
        return image_size(image)
    except Exception:
        return None


def _pixels_kept_size(step: Any, position: int, before: Any, image: Any) -> None:
    """Refuse a step taken to change pixel values only that changed the image's size."""
    after = _size_or_none(image)
    if before is not None and after is not None and after != before:
        raise UnsupportedTransformError(
            f"step {position} ({_name(step)}) is taken to change pixel values only, but it "
            f"changed the image's size from {before} to {after} (height, width): it moves "
            f"pixels, and the crop box would miss what it did. {_FIX}"
        )


# -- torchvision v2: the box probe ----------------------------------------------------------------


class _V2Probe:
    def __init__(self, transform: Any, confirm: int = CONFIRMED_SAMPLES) -> None:
        steps = _flatten([transform])
        # Steps that leave pixel positions alone run on the image alone: cheaper than carrying
        # the probe, and ToPureTensor would strip the probe's canvas_size.
        self.steps = [
            (step, position, _probe_kind(step, position))
            for position, step in enumerate(steps, start=1)
        ]
        self.geometry = [_name(s) for s, _, kind in self.steps if kind in ("probe", "centre")]
        self.confirm = _Confirmation(confirm, ", ".join(self.geometry) or "none")

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        from torchvision import tv_tensors

        h, w = image_size(image)
        probe = tv_tensors.BoundingBoxes(
            [[0, 0, w, h], [0, 0, w / 2, h], [0, 0, w, h / 2]],
            format="XYXY",
            canvas_size=(h, w),
            clamping_mode=None,
        )
        source, checking = image, self.confirm.due()
        for step, position, kind in self.steps:
            try:
                if kind == "probe" or kind == "centre":
                    if kind == "probe":
                        image, probe = step(image, probe)
                    else:
                        image, probe = _centre_crop_probe(step, image, probe)
                    _probe_kept_up(step, position, image, probe)
                    if checking:
                        self.confirm.look(source, image, _loose_box(probe), _where(step, position))
                elif kind == "image":
                    before = _size_or_none(image) if checking else None
                    image = step(image)
                    if checking:
                        _pixels_kept_size(step, position, before, image)
                        if self.confirm.blind(step):
                            checking = False
                            self.confirm.done()
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
        if checking:
            self.confirm.done()
        return image, _box_from_probe(probe, self.geometry)


def _probe_kept_up(step: Any, position: int, image: Any, probe: Any) -> None:
    """Refuse a step after which the image and the probe's canvas differ in size: it
    transformed the image and not the boxes (a v2.Transform whose ``transform`` or
    ``_transformed_types`` handles images only), so the probe missed what it did."""
    size = _size_or_none(image)
    canvas = tuple(int(v) for v in probe.canvas_size)
    if size is not None and size != canvas:
        raise UnsupportedTransformError(
            f"step {position} ({_name(step)}) made the image {size[0]} x {size[1]} pixels "
            f"(height x width) but left the crop-box probe on a {canvas[0]} x {canvas[1]} "
            "canvas: it transforms images and not bounding boxes (a v2.Transform whose "
            "transform() or _transformed_types handles images only), so relabel-store cannot "
            "see the crop it took. Make it transform tv_tensors.BoundingBoxes too (apply the "
            "same v2.functional call to every input), or wrap a callable that returns "
            "(image, CropBox) in relabel_store.loaders.ReturnsCropBox."
        )


def _loose_box(probe: Any) -> _LooseBox:
    """The box a probe shows so far (as :func:`_box_from_probe`, without its checks)."""
    (a, b, c, d), (e, _, g, _), _ = probe.tolist()
    oh, ow = probe.canvas_size
    if not (c - a > 0 and d - b > 0):
        return _LooseBox(0.0, 0.0, 0.0, 0.0, False)
    flipped = (e + g) / 2 > (a + c) / 2
    x0 = (c - ow) / (c - a) if flipped else -a / (c - a)
    y0 = -b / (d - b)
    return _LooseBox(x0, y0, x0 + ow / (c - a), y0 + oh / (d - b), flipped)


def _probe_kind(step: Any, position: int) -> str:
    """How the probe runs a step: ``"probe"`` (image and boxes), ``"image"`` (pixel-only),
    ``"centre"`` (a centre crop, see :func:`_centre_crop_probe`) or ``"user-image"`` (a user
    function restricted to images: its output size is checked)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    name = type(step).__name__
    if name in _PHOTOMETRIC:
        return "image"
    if type(step) is v2.CenterCrop:
        return "centre"
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


def _centre_crop_probe(step: Any, image: Any, probe: Any) -> tuple[Any, Any]:
    """``v2.CenterCrop`` on the image, and the probe moved by the offset the image's crop
    took. torchvision's box kernel rounds a crop larger than the image by an odd number of
    pixels the other way than its image kernel pads it (torchvision 0.29: the box lands a
    pixel off the pixels), so the probe does not go through it."""
    from torchvision import tv_tensors

    h, w = image_size(image)
    image = step(image)
    ch, cw = image_size(image)
    top, left = _centre_offset(h, ch), _centre_offset(w, cw)
    shift = torch.tensor([left, top, left, top], dtype=probe.dtype)
    moved = probe.as_subclass(torch.Tensor) - shift
    return image, tv_tensors.wrap(moved, like=probe, canvas_size=(ch, cw))


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
    def __init__(self, transforms: Sequence[Any], confirm: int = CONFIRMED_SAMPLES) -> None:
        self.steps = [
            (*self._classify(t, position), position)
            for position, t in enumerate(_flatten(transforms), start=1)
        ]
        geometry = [_where(s, p) for kind, s, p in self.steps if kind != "pixels"]
        self.confirm = _Confirmation(confirm, ", ".join(geometry) or "none")

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
        if name in ("CenterCrop", "CenterCropOrPad"):  # torchvision's, timm's
            return "center", step
        if name == "RandomApply" and all(
            type(t).__name__ in _PHOTOMETRIC for t in _flatten(step.transforms)
        ):
            return "pixels", step
        if name in _PHOTOMETRIC:
            return "pixels", step
        library = type(step).__module__.split(".")[0]
        what = (
            "a torchvision v1 or timm step"
            if library in ("torchvision", "timm")
            else f"a step from {type(step).__module__} (not torchvision, timm or albumentations)"
        )
        raise UnsupportedTransformError(
            f"cannot recover the crop box through step {position} ({_name(step)}), {what} "
            f"that relabel-store does not know to move pixels or not. {_FIX}"
        )

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        x0, y0, x1, y1, flipped = 0.0, 0.0, 1.0, 1.0, False
        source, checking = image, self.confirm.due()
        for kind, step, position in self.steps:
            try:
                if kind == "flip":
                    if torch.rand(1) < step.p:  # the same draw the step itself makes
                        from torchvision.transforms.v2 import functional as F

                        image = F.horizontal_flip(image)
                        flipped = not flipped
                        if checking:
                            box = (x0, y0, x1, y1, flipped)
                            self.confirm.look(source, image, box, _where(step, position))
                    continue
                if kind == "pixels" or kind == "resize":
                    before = _size_or_none(image) if checking else None
                    image = step(image)
                    if checking and kind == "pixels":
                        _pixels_kept_size(step, position, before, image)
                        if self.confirm.blind(step):
                            checking = False
                            self.confirm.done()
                    elif checking:
                        box = (x0, y0, x1, y1, flipped)
                        self.confirm.look(source, image, box, _where(step, position))
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
            else:
                ch, cw = image_size(image)
                top, left = _centre_offset(h, ch), _centre_offset(w, cw)
            sx, sy = (x1 - x0) / w, (y1 - y0) / h
            if flipped:
                x0, x1 = x1 - (left + cw) * sx, x1 - left * sx
            else:
                x0, x1 = x0 + left * sx, x0 + (left + cw) * sx
            y0, y1 = y0 + top * sy, y0 + (top + ch) * sy
            if checking:
                self.confirm.look(source, image, (x0, y0, x1, y1, flipped), _where(step, position))
        if checking:
            self.confirm.done()
        return image, CropBox(x0, y0, x1, y1, flipped=flipped)


def _centre_offset(size: int, crop: int) -> int:
    """Where torchvision's and timm's centre crops start, in pixels of the input: a crop
    larger than the image pads it first, the smaller half of the padding before it (an odd
    difference puts the extra pixel after); a smaller one rounds the offset half to even."""
    if crop > size:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)


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


# -- albumentations: a keypoint probe -------------------------------------------------------------

# albumentations steps whose geometry no crop box describes (or that flip vertically).
_ALBU_WARPS = {
    "VerticalFlip", "Transpose", "RandomRotate90", "Rotate", "SafeRotate", "ShiftScaleRotate",
    "Perspective", "ElasticTransform", "GridDistortion", "OpticalDistortion", "PiecewiseAffine",
    "D4", "RandomGridShuffle", "GridElasticDeform", "ThinPlateSpline", "Morphological",
}  # fmt: skip
_ALBU_MULTI = {"Mosaic", "OverlayElements"}


class _Albumentations:
    """Tracks an albumentations pipeline (``A.Compose``, or one transform) from its own
    geometry: a copy of it runs with three keypoints riding along (the image's corners
    (0, 0), (W, 0) and (0, H), kept when they leave the image), whose positions in the output
    pin the crop window, the scale and a horizontal flip, as the v2 box probe does. Crops,
    resizes, padding, flips, and Affine without rotation or shear are tracked; steps that
    only change pixel values (``ImageOnlyTransform``) are free. Images go in as numpy arrays
    (PIL images and (C, H, W) tensors are converted); the output is the pipeline's image.

    albumentations moves keypoints with a horizontal flip to ``W - 1 - x`` (pixel indices),
    and with a crop or a resize as continuous coordinates; in the copy, flips move them to
    ``W - x``, so that the box is the one the pixels show.
    """

    def __init__(self, transform: Any, confirm: int) -> None:
        import albumentations as A

        pipeline = transform if isinstance(transform, A.Compose) else A.Compose([transform])
        if pipeline.processors:
            raise UnsupportedTransformError(
                "this albumentations pipeline already takes bounding boxes or keypoints "
                f"({', '.join(pipeline.processors)}): relabel-store tracks the crop with "
                "keypoints of its own. Pass a classification pipeline (A.Compose(transforms) "
                "without bbox_params or keypoint_params)."
            )
        steps = copy.deepcopy(list(pipeline.transforms))
        leaves = list(_albu_leaves(steps))
        for position, step in enumerate(leaves, start=1):
            _refuse_albu(step, position)
            exact = _EXACT_KEYPOINTS.get(type(step).__name__)
            if exact is not None and type(step).__module__.startswith("albumentations."):
                step._key2func["keypoints"] = exact  # module-level functions: picklable
        self.geometry = [
            type(s).__name__ for s in leaves if not isinstance(s, A.ImageOnlyTransform)
        ]
        self.pipeline = A.Compose(
            steps,
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            p=pipeline.p,
            is_check_shapes=pipeline.is_check_shapes,
        )
        self.confirm = _Confirmation(confirm, ", ".join(self.geometry) or "none")

    def __call__(self, image: Any) -> tuple[Any, CropBox]:
        array = _albu_array(image)
        h, w = array.shape[:2]
        corners = np.array([[0.0, 0.0], [w, 0.0], [0.0, h]], np.float32)
        try:
            result = self.pipeline(image=array, keypoints=corners)
        except Exception as exc:
            exc.add_note("raised by the albumentations pipeline")
            raise
        out = result["image"]
        (a, b), (c, b1), (a1, d) = np.asarray(result["keypoints"], np.float64)[:, :2].tolist()
        oh, ow = _albu_size(out)
        steps = ", ".join(self.geometry) or "none"
        tol_x, tol_y = _PROBE_TOLERANCE * abs(c - a) + 1e-3, _PROBE_TOLERANCE * abs(d - b) + 1e-3
        if abs(c - a) < 1e-6 or not d - b > 0 or abs(b1 - b) > tol_y or abs(a1 - a) > tol_x:
            raise UnsupportedTransformError(
                "the albumentations pipeline moved the image in a way no crop box describes "
                f"(a rotation, shear, warp or vertical flip; geometric steps: {steps}). "
                "Remove that step from the training transform, or wrap a callable that returns "
                "(image, CropBox) in relabel_store.loaders.ReturnsCropBox."
            )
        flipped = c < a
        left, right = -a / (c - a), (ow - a) / (c - a)
        x0, x1 = (right, left) if flipped else (left, right)
        y0, y1 = -b / (d - b), (oh - b) / (d - b)
        box = CropBox(x0, y0, x1, y1, flipped=flipped)
        if self.confirm.due():
            self.confirm.look(array, out, box, "the albumentations pipeline")
            self.confirm.done()
        return out, box


def _albu_leaves(steps: Sequence[Any]) -> Iterator[Any]:
    """The transforms inside (nested) albumentations compositions (OneOf, SomeOf, ...)."""
    for step in steps:
        inner = getattr(step, "transforms", None)
        if inner is not None and not hasattr(step, "apply"):
            yield from _albu_leaves(inner)
        else:
            yield step


def _refuse_albu(step: Any, position: int) -> None:
    name = type(step).__name__
    if name in _ALBU_WARPS or (name == "Affine" and not _albu_axis_aligned(step)):
        raise UnsupportedTransformError(
            f"albumentations step {position} ({name}) rotates, shears, warps or flips the "
            "image vertically; no crop box describes what such a crop shows, and relabel-store "
            "does not approximate it. Remove it from the training transform (Affine with "
            "rotate=0 and shear=0, scale and translate only, is tracked), or wrap a callable "
            "that returns (image, CropBox) in relabel_store.loaders.ReturnsCropBox."
        )
    if name in _ALBU_MULTI:
        raise UnsupportedTransformError(
            f"albumentations step {position} ({name}) pastes other images into the sample; "
            "one record's label map cannot describe them. Remove it from the training "
            "transform (mix samples after the loader with relabel-store's mixing instead)."
        )


def _albu_axis_aligned(step: Any) -> bool:
    """Whether an albumentations Affine is configured without rotation or shear."""
    rotate = getattr(step, "rotate", None)
    shear = getattr(step, "shear", None)
    if rotate is None or shear is None:
        return False
    shears = list(shear.values()) if isinstance(shear, dict) else [shear]
    values = [*_as_list(rotate), *(v for s in shears for v in _as_list(s))]
    return all(float(v) == 0.0 for v in values)


def _albu_array(image: Any) -> np.ndarray:
    """An image as albumentations takes it: a (H, W[, C]) numpy array."""
    if isinstance(image, Image.Image):
        return np.asarray(image)
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] <= 4:
        return np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # (C, H, W) -> (H, W, C)
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return image
    raise UnsupportedTransformError(
        f"an albumentations pipeline takes images as numpy arrays; got {type(image).__name__} "
        f"{tuple(getattr(image, 'shape', ()))}"
    )


def _albu_size(image: Any) -> tuple[int, int]:
    """(height, width) of an albumentations output: (H, W, C) arrays, (C, H, W) tensors
    (ToTensorV2)."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return int(image.shape[0]), int(image.shape[1])


def _exact_flip_keypoints(keypoints: np.ndarray, **params: Any) -> np.ndarray:
    """albumentations' HorizontalFlip for keypoints, as continuous coordinates (``W - x``)."""
    out = np.array(keypoints, copy=True)
    out[:, 0] = params["shape"][1] - out[:, 0]
    return out


def _scaled_keypoints(keypoints: np.ndarray, new_h: int, new_w: int, shape: Any) -> np.ndarray:
    out = np.array(keypoints, copy=True)
    out[:, 0] *= new_w / shape[1]
    out[:, 1] *= new_h / shape[0]
    return out


def _exact_max_size_keypoints(keypoints: np.ndarray, scale: float, **params: Any) -> np.ndarray:
    """LongestMaxSize/SmallestMaxSize for keypoints: by the sides' rounded sizes, as the
    image (albumentations scales keypoints by the unrounded factor)."""
    h, w = params["shape"][:2]
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    return _scaled_keypoints(keypoints, new_h, new_w, params["shape"])


def _exact_scale_keypoints(keypoints: np.ndarray, scale: float, **params: Any) -> np.ndarray:
    """RandomScale for keypoints: by the truncated sizes the image gets."""
    h, w = params["shape"][:2]
    return _scaled_keypoints(keypoints, int(h * scale), int(w * scale), params["shape"])


# Steps whose keypoint arithmetic differs from what they do to the pixels, and the fix.
_EXACT_KEYPOINTS = {
    "HorizontalFlip": _exact_flip_keypoints,
    "LongestMaxSize": _exact_max_size_keypoints,
    "SmallestMaxSize": _exact_max_size_keypoints,
    "RandomScale": _exact_scale_keypoints,
}


# -- kornia: batch crops after the loader ---------------------------------------------------------

_KORNIA_CROPS = {"RandomResizedCrop", "RandomCrop", "CenterCrop"}


def kornia_refs(refs: dict[str, Any], *augmentations: Any) -> dict[str, Any]:
    """The ``pooling="batch"`` references of a batch after kornia augmented it, for
    :class:`~relabel_store.loaders.LabelPooler`.

    ``refs`` come from the loader (their boxes: what each loader image shows of its source
    image); ``augmentations`` are the kornia augmentations that then ran on the batch, in
    the order they ran (or one ``AugmentationSequential``): ``RandomResizedCrop``,
    ``RandomCrop`` (without padding) and ``CenterCrop`` move the boxes by the windows they
    drew, ``RandomHorizontalFlip`` flips them, intensity augmentations change nothing. Other
    geometry is refused by name (:class:`UnsupportedTransformError`). Each augmentation's
    parameters are read from its last call: call this right after the batch went through.
    kornia samples a crop's pixel centres from the window's first to its last pixel centre;
    the boxes are those the pixels show (exact to float precision).
    """
    box = torch.as_tensor(refs["box"]).to(torch.float64).clone()
    flipped = torch.as_tensor(refs["flipped"]).to(torch.bool).clone()
    for aug in _kornia_steps(augmentations):
        name = type(aug).__name__
        params = getattr(aug, "_params", None) or {}
        if name == "RandomHorizontalFlip":
            flipped ^= torch.as_tensor(params["batch_prob"]).cpu() > 0.5
        elif name in _KORNIA_CROPS:
            box = _kornia_crop(aug, params, box, flipped)
        elif not _kornia_intensity(aug):
            raise UnsupportedTransformError(
                f"kornia {name} moves pixels in a way relabel-store does not track on batches "
                f"(tracked: {', '.join(sorted(_KORNIA_CROPS))}, RandomHorizontalFlip, and "
                "intensity augmentations). Remove it, or crop in the loader's transform."
            )
    return {**refs, "box": box, "flipped": flipped}


def _kornia_steps(augmentations: Sequence[Any]) -> Iterator[Any]:
    for aug in augmentations:
        if type(aug).__name__ in ("AugmentationSequential", "ImageSequential"):
            yield from _kornia_steps(list(aug.children()))
        else:
            yield aug


def _kornia_intensity(aug: Any) -> bool:
    from kornia.augmentation import IntensityAugmentationBase2D

    return isinstance(aug, IntensityAugmentationBase2D)


def _kornia_crop(aug: Any, params: dict[str, Any], box: torch.Tensor, flipped: torch.Tensor) -> Any:
    name = type(aug).__name__
    if "src" not in params:
        raise UnsupportedTransformError(
            f"kornia {name} has not run yet: call kornia_refs right after the batch went through it"
        )
    padding = params.get("padding_size")
    if padding is not None and bool(torch.as_tensor(padding).ne(0).any()):
        raise UnsupportedTransformError(
            f"kornia {name} with padding is not tracked on batches; crop without padding"
        )
    if bool((torch.as_tensor(params["batch_prob"]) < 0.5).any()):
        raise UnsupportedTransformError(
            f"kornia {name} skipped some samples (p < 1): use p=1.0 for crops on batches"
        )
    src = torch.as_tensor(params["src"]).to(torch.float64).cpu()  # (B, 4, 2) corners, (x, y)
    in_h, in_w = (int(v) for v in torch.as_tensor(params["forward_input_shape"])[-2:])
    out = torch.as_tensor(params["output_size"]).to(torch.float64).cpu()  # (B, 2): (h, w)
    edges = []
    for axis, size, n_out in ((0, in_w, out[:, 1]), (1, in_h, out[:, 0])):
        first, last = src[:, 0, axis], src[:, 2, axis]
        step = (last - first) / (n_out - 1).clamp_min(1)  # source pixels per output pixel
        edges.append(
            ((first + 0.5 - 0.5 * step) / size, (first + 0.5 + (n_out - 0.5) * step) / size)
        )
    (u0, u1), (v0, v1) = edges
    x0, y0, x1, y1 = box.unbind(1)
    width, height = x1 - x0, y1 - y0
    nx0 = torch.where(flipped, x1 - u1 * width, x0 + u0 * width)
    nx1 = torch.where(flipped, x1 - u0 * width, x0 + u1 * width)
    return torch.stack([nx0, y0 + v0 * height, nx1, y0 + v1 * height], 1)
