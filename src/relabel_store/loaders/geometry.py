"""Track the full geometry of a user's transform: rotations, shears, translations, vertical flips,
perspective and the geometric operations of the AutoAugment family, composed with crops, resizes
and flips, as one :class:`~relabel_store.pooling.Region`.

:func:`~relabel_store.loaders.track_crops` hands a pipeline here when one of its steps moves
pixels in a way no crop box describes; the tracker returned gives ``(image, Region)``, and the
target is pooled over exactly the region of the label map the output image shows.

How: every step is recognised and its geometry computed from the parameters the step itself drew
(the user's transform runs unchanged, on copies whose parameter functions record what they
returned), as a 3 x 3 matrix from the step's output pixel coordinates to its input pixel
coordinates. Pixel coordinates put pixel ``i`` on ``[i, i + 1)``: the convention in which
torchvision's tensor kernels (grid_sample, ``align_corners=False``) and PIL's ``transform``
place pixels. Composing the matrices gives the map from output pixels to original pixels,
:meth:`Region.from_pixels` normalises it. The matrices follow torchvision's and timm's own
kernels (``_get_inverse_affine_matrix``; PIL ``AFFINE`` data), checked pixel for pixel by
images whose pixels hold their own coordinates (tests/test_geometry.py).

Tracked: crops (``RandomResizedCrop``, timm's ``RandomResizedCropAndInterpolation``,
``RandomCrop`` without padding, ``CenterCrop``), ``Resize``, horizontal and vertical flips,
``RandomRotation`` (``expand`` either way), ``RandomAffine``, ``RandomPerspective`` (v2), the
geometric operations (ShearX/Y, TranslateX/Y, Rotate) of torchvision v2's ``AutoAugment``,
``RandAugment`` and ``TrivialAugmentWide`` and of timm's ``RandAugment``/``AutoAugment``
(``rand-m9-mstd0.5``, ...), ``RandomApply`` around any of these, and pixel-only steps.

The pixels confirm the region (``check_crops``, as for crop boxes): on the first samples of every
process, the image after each geometric step must show the source warped through the region
tracked so far (:func:`_warped_agreement`; the bar and the counting of
:class:`~relabel_store.loaders.crops._Confirmation`), so a step the tracker misreads (a user's
``RandomRotation`` that turns by another angle than it drew) is refused by name.

Refused, by name: steps with no matrix (``ElasticTransform``), steps this module cannot see
through (``Lambda``, plain functions, unknown transforms), and ``AugMix`` (it blends several
differently warped copies: no one region). torchvision v1's AutoAugment family is refused when
geometry is tracked (it draws its operations inside a module-level function).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from relabel_store.errors import UnsupportedTransformError
from relabel_store.loaders.crops import (
    _GRID,
    _PHOTOMETRIC,
    CONFIRMED_SAMPLES,
    _Confirmation,
    _correlation,
    _flatten,
    _is_axis_aligned,
    _name,
    _pixels_kept_size,
    _plane,
    _RecordParams,
    _where,
    image_size,
)
from relabel_store.pooling import Region

__all__ = ["GeometryTracker", "needs_geometry"]

# Step by step: (output-to-input pixel matrix, input size (h, w), whether the step warps).
_Pieces = list[tuple[np.ndarray, tuple[int, int], bool]]

# Steps whose geometry no crop box describes, and which this module tracks.
_ROTATIONS = {"RandomRotation", "RandomAffine", "RandomPerspective"}
_AUTO_V2 = {"AutoAugment", "RandAugment", "TrivialAugmentWide"}
_AUGMIX = {"AugMix", "AugMixAugment"}
_CROPS = {"RandomResizedCrop", "RandomResizedCropAndInterpolation", "RandomCrop"}
# AutoAugment operations that move pixels: torchvision v2 names and timm's op names.
_GEOMETRIC_OPS_V2 = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
_GEOMETRIC_OPS_TIMM = {
    "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel",
}  # fmt: skip

# Operations and steps that invert only some pixel values (solarisation): the image after one
# no longer correlates with the source, so the output check stops looking at that sample.
_SCRAMBLING_OPS = {"Solarize", "SolarizeAdd", "SolarizeIncreasing"}
_SCRAMBLING_STEPS = {"RandomSolarize"}

_FIX = (
    "Tracked exactly: crops, resizes, flips, RandomRotation, RandomAffine, RandomPerspective and "
    "the AutoAugment family of torchvision.transforms.v2 and timm; or wrap a callable that "
    "returns (image, CropBox or Region) in relabel_store.loaders.ReturnsCropBox."
)


def _is_timm_auto(step: Any) -> bool:
    return type(step).__module__.startswith("timm.data.auto_augment") and type(step).__name__ in (
        "RandAugment",
        "AutoAugment",
    )


def _is_v2(step: Any) -> bool:
    """A torchvision v2 step, or a user's subclass of one (which draws with ``make_params``)."""
    from torchvision.transforms import v2

    return isinstance(step, v2.Transform)


def _timm_ops(step: Any) -> list[Any]:
    if type(step).__name__ == "RandAugment":
        return list(step.ops)
    return [op for sub in step.policy for op in sub]


def needs_geometry(steps: Sequence[Any]) -> bool:
    """Whether a pipeline has a step that moves pixels beyond crops, resizes and horizontal
    flips: a rotation, shear, perspective or vertical flip, or an AutoAugment-family step with
    such operations. Such pipelines are tracked here; the others as crop boxes."""
    for step in _flatten(list(steps)):
        name = type(step).__name__
        if name in ("RandomApply", "RandomChoice", "RandomOrder"):
            if needs_geometry(list(step.transforms)):
                return True
        elif (
            (name == "RandomVerticalFlip" and getattr(step, "p", 1) > 0)
            or (name in _ROTATIONS and not _is_axis_aligned(step))
            or (name in _AUTO_V2 and _is_v2(step))
            or (
                _is_timm_auto(step)
                and any(op.name in _GEOMETRIC_OPS_TIMM for op in _timm_ops(step))
            )
        ):
            return True
    return False


# -- matrices: output pixel coordinates to input pixel coordinates -----------------------------


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _torch_affine(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    angle: float,
    translate: Sequence[float],
    scale: float,
    shear: Sequence[float],
    center: Sequence[float] | None,
) -> np.ndarray:
    """The map of torchvision's ``F.affine``/``F.rotate`` kernels: ``_get_inverse_affine_matrix``
    about the image centre (or ``center``, in input pixels), output centred on its own canvas
    (``expand``)."""
    from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

    h, w = in_size
    oh, ow = out_size
    center_f = [0.0, 0.0] if center is None else [center[0] - w * 0.5, center[1] - h * 0.5]
    m = _get_inverse_affine_matrix(
        center_f,
        float(angle),
        [float(t) for t in translate],
        float(scale),
        [float(s) for s in shear],
    )
    inverse = np.array([m[0:3], m[3:6], [0.0, 0.0, 1.0]])
    return _translate(w * 0.5, h * 0.5) @ inverse @ _translate(-ow * 0.5, -oh * 0.5)


def _pil_affine(data: Sequence[float]) -> np.ndarray:
    """PIL's ``Image.transform(..., AFFINE, data)``: data maps output to input coordinates."""
    a, b, c, d, e, f = (float(x) for x in data)
    return np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])


def _pil_rotate(degrees: float, size: tuple[int, int]) -> np.ndarray:
    """``PIL.Image.rotate(degrees)`` (no expand, about the centre), as PIL computes it."""
    h, w = size
    angle = -math.radians(degrees % 360.0)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = w / 2.0, h / 2.0
    return np.array(
        [
            [cos, sin, cos * -cx + sin * -cy + cx],
            [-sin, cos, -sin * -cx + cos * -cy + cy],
            [0.0, 0.0, 1.0],
        ]
    )


def _auto_v2_op(op: str, magnitude: float, size: tuple[int, int]) -> np.ndarray | None:
    """torchvision v2 ``_AutoAugmentBase._apply_image_or_video_transform``'s geometry."""
    if op == "ShearX":
        shear = [math.degrees(math.atan(magnitude)), 0.0]
        return _torch_affine(size, size, 0.0, (0, 0), 1.0, shear, (0.0, 0.0))
    if op == "ShearY":
        shear = [0.0, math.degrees(math.atan(magnitude))]
        return _torch_affine(size, size, 0.0, (0, 0), 1.0, shear, (0.0, 0.0))
    if op == "TranslateX":
        return _torch_affine(size, size, 0.0, (int(magnitude), 0), 1.0, (0.0, 0.0), None)
    if op == "TranslateY":
        return _torch_affine(size, size, 0.0, (0, int(magnitude)), 1.0, (0.0, 0.0), None)
    if op == "Rotate":
        return _torch_affine(size, size, -magnitude, (0, 0), 1.0, (0.0, 0.0), None)
    return None


def _timm_op(name: str, args: tuple[Any, ...], size: tuple[int, int]) -> np.ndarray | None:
    """timm ``auto_augment``'s geometric operations, as the PIL data they pass."""
    h, w = size
    if name == "Rotate":
        return _pil_rotate(float(args[0]), size)
    if name == "ShearX":
        return _pil_affine((1, args[0], 0, 0, 1, 0))
    if name == "ShearY":
        return _pil_affine((1, 0, 0, args[0], 1, 0))
    if name == "TranslateXRel":
        return _pil_affine((1, 0, args[0] * w, 0, 1, 0))
    if name == "TranslateYRel":
        return _pil_affine((1, 0, 0, 0, 1, args[0] * h))
    if name == "TranslateX":
        return _pil_affine((1, 0, args[0], 0, 1, 0))
    if name == "TranslateY":
        return _pil_affine((1, 0, 0, 0, 1, args[0]))
    return None


# -- recording wrappers ---------------------------------------------------------------------------


class _OpLog(list[tuple[np.ndarray, tuple[int, int], bool]]):
    """The pieces an AutoAugment-family step recorded, and whether it solarised the image."""

    solarized = False

    def clear(self) -> None:
        super().clear()
        self.solarized = False


class _RecordV2Ops:
    """Stands in for a v2 AutoAugment step's ``_apply_image_or_video_transform`` and records
    the geometry of every operation it applies."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.matrices = _OpLog()

    def __call__(self, image: Any, transform_id: str, magnitude: float, **kwargs: Any) -> Any:
        if transform_id in _SCRAMBLING_OPS:
            self.matrices.solarized = True
        if transform_id in _GEOMETRIC_OPS_V2:
            size = image_size(image)
            matrix = _auto_v2_op(transform_id, magnitude, size)
            if matrix is not None:
                self.matrices.append((matrix, size, True))
        return self.fn(image, transform_id, magnitude, **kwargs)


class _RecordTimmOp:
    """Stands in for a timm ``AugmentOp.aug_fn`` and records its geometry."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        log: _OpLog,
    ) -> None:
        self.name = name
        self.fn = fn
        self.log = log

    def __call__(self, image: Any, *args: Any, **kwargs: Any) -> Any:
        if self.name in _SCRAMBLING_OPS:
            self.log.solarized = True
            return self.fn(image, *args, **kwargs)
        size = image_size(image)
        matrix = _timm_op(self.name, args, size)
        if matrix is not None:
            self.log.append((matrix, size, True))
        return self.fn(image, *args, **kwargs)


def _recording_timm(step: Any) -> tuple[Any, _OpLog]:
    """A copy of a timm RandAugment/AutoAugment whose geometric ops record their matrices,
    and whose solarising ops say they ran (same op list, same order: the same random draws)."""
    log = _OpLog()
    step = copy.copy(step)

    def wrap(op: Any) -> Any:
        if op.name not in _GEOMETRIC_OPS_TIMM and op.name not in _SCRAMBLING_OPS:
            return op
        op = copy.copy(op)
        op.aug_fn = _RecordTimmOp(op.name, op.aug_fn, log)
        return op

    if type(step).__name__ == "RandAugment":
        step.ops = [wrap(op) for op in step.ops]
    else:
        step.policy = [[wrap(op) for op in sub] for sub in step.policy]
    return step, log


def _clips(
    pieces: Sequence[tuple[np.ndarray, tuple[int, int], bool]],
    original: tuple[int, int],
    output: tuple[int, int],
) -> tuple[tuple[float, ...], ...]:
    """The canvases of the warping steps that hide part of the output (see :class:`Region`):
    each a map from normalised output coordinates to normalised coordinates of the step's
    input. Canvases that cut nothing, and those that are the whole original image (RoIAlign's
    own out-of-map rule covers them), are left out."""
    if not any(warps for _, _, warps in pieces):
        return ()
    oh, ow = output
    clips = []
    suffix = np.eye(3)  # final output pixels to the current step's input pixels
    prefixes = [np.eye(3)]
    for matrix, _, _ in pieces:
        prefixes.append(prefixes[-1] @ matrix)
    corners = np.array([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    for i in range(len(pieces) - 1, -1, -1):
        matrix, (h, w), warps = pieces[i]
        suffix = matrix @ suffix
        if not warps or _is_whole_image(prefixes[i], (h, w), original):
            continue
        clip = np.diag([1.0 / w, 1.0 / h, 1.0]) @ suffix @ np.diag([ow, oh, 1.0])
        mapped = clip @ corners
        mapped = mapped[:2] / mapped[2]
        if (mapped >= -1e-9).all() and (mapped <= 1 + 1e-9).all():
            continue  # the whole output lies within this canvas
        clips.append(tuple(float(x) for x in clip.ravel()))
    return tuple(clips)


def _is_whole_image(prefix: np.ndarray, size: tuple[int, int], original: tuple[int, int]) -> bool:
    """Whether a canvas of ``size`` is the whole original image (maybe mirrored or resized):
    ``prefix`` (its pixels to the original's) maps its corners onto the original's."""
    h, w = size
    if prefix[0, 1] != 0.0 or prefix[1, 0] != 0.0 or prefix[2, 0] != 0.0 or prefix[2, 1] != 0.0:
        return False
    x = sorted(prefix[0, 0] * np.array([0.0, w]) + prefix[0, 2])
    y = sorted(prefix[1, 1] * np.array([0.0, h]) + prefix[1, 2])
    oh, ow = original
    return all(
        abs(a - b) <= 1e-6 for a, b in zip((x[0], x[1], y[0], y[1]), (0, ow, 0, oh), strict=True)
    )


# -- the output check ------------------------------------------------------------------------------


def _warped_agreement(source: Any, image: Any, pieces: _Pieces) -> float | None:
    """How well ``image`` shows ``source`` warped through ``pieces`` (the output check of
    :class:`~relabel_store.loaders.crops._Confirmation`, for regions): the source is sampled
    (bilinear) at the image's pixel centres mapped through the composed matrix, after being
    brought to about the image's resolution (PIL's antialiased resize, as the steps' own);
    both (the image first reduced to 4 x 4 points a block) are reduced to up to 12 x 12 block means over the points that show the source (those
    outside it, behind an intermediate step's canvas, or one pixel from either are left out,
    not compared as fill), and compared by normalised cross-correlation. None when undecidable
    (an image type this does not read, too little of the source shown, a flat source)."""
    src, out = _plane(source), _plane(image)
    if src is None or out is None:
        return None
    (sw, sh), (ow, oh) = src.size, out.size
    total = np.eye(3)
    for matrix, _, _ in pieces:
        total = total @ matrix
    clips = _clips(pieces, (sh, sw), (oh, ow))  # normalised: the same at any resolution
    # 12 x 12 blocks need no more than 4 x 4 points each: the image is first reduced to that
    # (PIL's exact BOX means), which keeps a check at about a millisecond.
    tw, th = min(ow, 4 * _GRID), min(oh, 4 * _GRID)
    if (tw, th) != (ow, oh):
        out = out.resize((tw, th), Image.Resampling.BOX)
        total = total @ np.diag([ow / tw, oh / th, 1.0])
        ow, oh = tw, th
    # Source pixels per output pixel (the mapped output's area), to match resolutions.
    corners = total @ np.array([[0.0, ow, ow, 0.0], [0.0, 0.0, oh, oh], [1.0, 1.0, 1.0, 1.0]])
    x, y = corners[:2] / corners[2]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    shrink = math.sqrt(area / (ow * oh))
    if shrink > 1.25:
        nw, nh = max(1, round(sw / shrink)), max(1, round(sh / shrink))
        src = src.resize((nw, nh), Image.Resampling.BILINEAR)
        total = np.diag([nw / sw, nh / sh, 1.0]) @ total
        sw, sh = nw, nh
    plane = np.asarray(src, np.float64)
    # The image's pixel centres, mapped into the source's pixels (pixel i covers [i, i + 1)).
    gy, gx = np.mgrid[0:oh, 0:ow]
    centres = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5, np.ones(oh * ow)])
    mapped = total @ centres
    px, py = mapped[0] / mapped[2], mapped[1] / mapped[2]
    shown = (px >= 0) & (px <= sw) & (py >= 0) & (py <= sh)
    for clip in clips:
        c = np.asarray(clip).reshape(3, 3) @ (centres / [[ow], [oh], [1.0]])
        cu, cv = c[0] / c[2], c[1] / c[2]
        shown &= (cu >= 0) & (cu <= 1) & (cv >= 0) & (cv <= 1)
    shown = shown.reshape(oh, ow)
    inner = shown.copy()  # one pixel in from every edge: interpolation blends with the fill
    inner[1:] &= shown[:-1]
    inner[:-1] &= shown[1:]
    inner[:, 1:] &= shown[:, :-1]
    inner[:, :-1] &= shown[:, 1:]
    keep = inner.ravel()
    if keep.sum() < 0.1 * keep.size or sw < 2 or sh < 2:
        return None
    fx = np.clip(px[keep] - 0.5, 0, sw - 1)
    fy = np.clip(py[keep] - 0.5, 0, sh - 1)
    x0, y0 = np.minimum(fx.astype(np.intp), sw - 2), np.minimum(fy.astype(np.intp), sh - 2)
    ax, ay = fx - x0, fy - y0
    sampled = (
        plane[y0, x0] * (1 - ax) * (1 - ay)
        + plane[y0, x0 + 1] * ax * (1 - ay)
        + plane[y0 + 1, x0] * (1 - ax) * ay
        + plane[y0 + 1, x0 + 1] * ax * ay
    )
    # Block means over the points shown; a block counts when at least half of it is shown.
    bx, by = min(_GRID, ow // 4), min(_GRID, oh // 4)
    if bx < 4 or by < 4:
        return None
    block = ((gy.ravel() * by) // oh * bx + (gx.ravel() * bx) // ow)[keep]
    count = np.bincount(block, minlength=bx * by)
    full = np.bincount((gy.ravel() * by) // oh * bx + (gx.ravel() * bx) // ow, minlength=bx * by)
    used = count >= 0.5 * full
    if used.sum() < 16:
        return None
    values = np.asarray(out, np.float64).ravel()[keep]
    a = np.bincount(block, sampled, bx * by)[used] / count[used]
    b = np.bincount(block, values, bx * by)[used] / count[used]
    return _correlation(a, b)


class _Looks:
    """One sample's output check: ``looks(image, pieces, where)`` after each geometric step
    confirms the image against the source warped through the pieces so far. ``blind`` ends
    the sample's looks (after solarisation; the looks before it stand)."""

    def __init__(self, confirm: _Confirmation, source: Any) -> None:
        # The source as one plane, once for all the sample's looks.
        self.confirm, self.source, self.blind = confirm, _plane(source), False

    def __call__(self, image: Any, pieces: _Pieces, where: str) -> None:
        if not self.blind and self.source is not None:
            self.confirm.record(_warped_agreement(self.source, image, pieces), where)


def _solarizes(step: Any) -> bool:
    return type(step).__name__ in _SCRAMBLING_STEPS or any(
        type(t).__name__ in _SCRAMBLING_STEPS for t in _flatten(getattr(step, "transforms", []))
    )


# -- the tracker ----------------------------------------------------------------------------------


class GeometryTracker:
    """``tracker(image) -> (transformed image, Region)`` for a pipeline of steps (see module)."""

    def __init__(self, transforms: Sequence[Any], confirm: int = CONFIRMED_SAMPLES) -> None:
        flat = _flatten(list(transforms))
        self.names = {position: _name(step) for position, step in enumerate(flat, start=1)}
        self.steps = [
            (*self._classify(step, position), position)
            for position, step in enumerate(flat, start=1)
        ]
        geometry = [_where(s, p) for kind, s, p in self.steps if kind != "pixels"]
        self.confirm = _Confirmation(confirm, ", ".join(geometry) or "none", "region")

    @classmethod
    def _classify(cls, step: Any, position: int) -> tuple[str, Any]:
        name = type(step).__name__
        where = f"step {position} ({_name(step)})"
        if name in _CROPS:
            if name == "RandomCrop" and (getattr(step, "padding", None) or step.pad_if_needed):
                raise UnsupportedTransformError(
                    f"{where}: RandomCrop with padding is not tracked with rotations. {_FIX}"
                )
            step = copy.copy(step)  # never patch the user's own object
            attr = "make_params" if hasattr(step, "make_params") else "get_params"
            setattr(step, attr, _RecordParams(getattr(step, attr)))
            return ("crop_v2" if attr == "make_params" else "crop"), step
        if name == "CenterCrop":
            return "center", step
        if name in ("Resize", "ResizeKeepRatio"):
            return "resize", step
        if name == "RandomHorizontalFlip":
            return "hflip", step
        if name == "RandomVerticalFlip":
            return "vflip", step
        if name in _ROTATIONS:
            step = copy.copy(step)
            attr = "make_params" if _is_v2(step) else "get_params"
            if name == "RandomPerspective" and not _is_v2(step):
                raise UnsupportedTransformError(
                    f"{where}: torchvision v1's RandomPerspective is not tracked; use "
                    f"torchvision.transforms.v2.RandomPerspective. {_FIX}"
                )
            setattr(step, attr, _RecordParams(getattr(step, attr)))
            return name, step
        if name in _AUTO_V2 and _is_v2(step):
            step = copy.copy(step)
            step._apply_image_or_video_transform = _RecordV2Ops(
                step._apply_image_or_video_transform
            )
            return "auto_v2", step
        if _is_timm_auto(step):
            return "auto_timm", _recording_timm(step)
        if name in _AUGMIX:
            raise UnsupportedTransformError(
                f"{where} blends several differently rotated, sheared and translated copies of "
                "the image, so no one region of the label map describes it. Use RandAugment or "
                f"TrivialAugmentWide with rotations, or AugMix without them. {_FIX}"
            )
        if name in _AUTO_V2:  # torchvision v1's AutoAugment family
            raise UnsupportedTransformError(
                f"{where} is torchvision v1's {name}, whose geometric operations cannot be "
                f"followed; use torchvision.transforms.v2.{name}. {_FIX}"
            )
        if name == "RandomApply":
            inner = cls(list(step.transforms), 0)
            # The inner steps are named as the user sees them: inside this RandomApply.
            inner.names = {p: f"{n} in {where}" for p, n in inner.names.items()}
            return "apply", (step.p, inner, _is_v2(step))
        if name in _PHOTOMETRIC or (
            name in ("RandomChoice", "RandomOrder", "RandomApply")
            and all(type(t).__name__ in _PHOTOMETRIC for t in _flatten(list(step.transforms)))
        ):
            return "pixels", step
        if name == "ElasticTransform":
            raise UnsupportedTransformError(
                f"{where} warps the image non-linearly: no affine or projective map describes "
                f"it, and relabel-store does not approximate it. Remove it. {_FIX}"
            )
        raise UnsupportedTransformError(
            f"cannot follow the geometry through {where}: relabel-store does not know how it "
            f"moves pixels. {_FIX}"
        )

    def __call__(self, image: Any) -> tuple[Any, Region]:
        original = image_size(image)
        look = _Looks(self.confirm, image) if self.confirm.due() else None
        image, pieces = self.apply(image, look=look)
        if look is not None:
            self.confirm.done()
        output = image_size(image)
        total = np.eye(3)
        for matrix, _, _ in pieces:
            total = total @ matrix
        (ih, iw), (oh, ow) = original, output
        unit = np.diag([1.0 / iw, 1.0 / ih, 1.0]) @ total @ np.diag([ow, oh, 1.0])
        normalised = tuple(float(x) for x in unit.ravel())  # as Region.from_pixels does
        return image, Region(normalised, clips=_clips(pieces, original, output))

    def apply(
        self, image: Any, pieces: _Pieces | None = None, look: _Looks | None = None
    ) -> tuple[Any, _Pieces]:
        """Run the steps; return the image and, step by step, ``(matrix, input size, warps)``:
        the output-to-input pixel matrix, the size of the step's input, and whether the step
        may show points outside its input (rotations, shears, translations, perspective).
        ``pieces``: those of the steps before (appended to); ``look``: called after each
        geometric step with the image and the pieces so far (the output check)."""
        from torchvision.transforms.v2 import functional as F

        pieces = [] if pieces is None else pieces
        for kind, step, position in self.steps:
            try:
                before = image_size(image)
                h, w = before
                matrix: np.ndarray | None = None
                if kind == "pixels":
                    image = step(image)
                    if look is not None:
                        _pixels_kept_size(step, position, before, image)
                        look.blind |= _solarizes(step)
                elif kind == "hflip" or kind == "vflip":
                    if torch.rand(1) < step.p:  # the same draw the step itself makes
                        if kind == "hflip":
                            image = F.horizontal_flip(image)
                            matrix = np.array([[-1.0, 0, w], [0, 1.0, 0], [0, 0, 1.0]])
                        else:
                            image = F.vertical_flip(image)
                            matrix = np.array([[1.0, 0, 0], [0, -1.0, h], [0, 0, 1.0]])
                elif kind == "apply":
                    p, inner, is_v2 = step
                    draw = torch.rand(1)
                    if (draw < p) if is_v2 else not (p < draw):
                        image, _ = inner.apply(image, pieces, look)  # confirmed step by step
                elif kind == "auto_v2":
                    ops = step._apply_image_or_video_transform.matrices
                    ops.clear()
                    image = step(image)
                    pieces.extend(ops)
                elif kind == "auto_timm":
                    auto, log = step
                    log.clear()
                    image = auto(image)
                    pieces.extend(log)
                    ops = log
                else:
                    recorder = getattr(step, "make_params", None) or getattr(
                        step, "get_params", None
                    )
                    if isinstance(recorder, _RecordParams):
                        recorder.last = None
                    image = step(image)
                    matrix = self._matrix(kind, step, before, image_size(image))
                    if matrix is not None and kind in _ROTATIONS:
                        pieces.append((matrix, before, True))
                        matrix = None
            except UnsupportedTransformError:
                raise
            except Exception as exc:
                name = self.names[position]
                exc.add_note(f"raised by step {position} ({name}) of the training transform")
                raise
            if matrix is not None:
                pieces.append((matrix, before, False))
            if look is not None and kind not in ("pixels", "apply"):
                if kind in ("auto_v2", "auto_timm"):
                    look.blind |= ops.solarized
                look(image, pieces, f"step {position} ({self.names[position]})")
        return image, pieces

    @staticmethod
    def _matrix(
        kind: str, step: Any, before: tuple[int, int], after: tuple[int, int]
    ) -> np.ndarray | None:
        h, w = before
        oh, ow = after
        if kind == "resize":
            return _scale(w / ow, h / oh)
        if kind == "center":
            top, left = round((h - oh) / 2.0), round((w - ow) / 2.0)
            return _translate(left, top)
        if kind in ("crop", "crop_v2"):
            recorder = step.make_params if kind == "crop_v2" else step.get_params
            top, left, ch, cw = recorder.window()
            return _translate(left, top) @ _scale(cw / ow, ch / oh)
        recorder = step.make_params if _is_v2(step) else step.get_params
        last = recorder.last
        if last is None:  # a random step that did not fire (RandomPerspective's p)
            return None
        if kind == "RandomRotation":
            angle = last["angle"] if isinstance(last, dict) else float(last)
            return _torch_affine(before, after, -angle, (0, 0), 1.0, (0.0, 0.0), step.center)
        if kind == "RandomAffine":
            if isinstance(last, dict):
                angle, translate, scale, shear = (
                    last["angle"], last["translate"], last["scale"], last["shear"],
                )  # fmt: skip
            else:
                angle, translate, scale, shear = last
            return _torch_affine(before, after, angle, translate, scale, shear, step.center)
        if kind == "RandomPerspective":
            a, b, c, d, e, f, g, hh = last["coefficients"]
            return np.array([[a, b, c], [d, e, f], [g, hh, 1.0]])
        raise AssertionError(kind)
