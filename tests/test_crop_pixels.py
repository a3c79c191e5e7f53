"""Pixel-exact crop boxes: every tracked step, checked against images that encode their own
coordinates.

A float image whose channels are each pixel's own x and y centre (and 1) goes through the
user's step; each output pixel then says which source position it was sampled from. The tracked
box predicts the same positions (output pixel centre ``u`` in 0..1 comes from
``x0 + u * (x1 - x0)``, mirrored when flipped), and the two must agree to a fraction of a
source pixel on the output's interior (resamplers clamp at the crop's edges). An off-by-one in
any offset (CenterCrop larger than the image by an odd number of pixels, say) is a whole pixel.
PIL images carry one float channel ("F" mode), so their x and y go through the step one after
the other, with the same seeds.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import timm.data
import timm.data.transforms as timm_t
import torch
import torchvision.transforms as v1
from PIL import Image
from torchvision.transforms import v2

from relabel_store.loaders import track_crops
from relabel_store.pooling import CropBox

H, W = 100, 150  # source image (height, width)
# Resamplers' own rounding: torch's antialiased downscaling of a linear ramp is off by up to
# ~0.05 px inside the image, PIL's by less; a box bug is half a pixel or more.
TOL = 0.1


def coordinates(h: int = H, w: int = W) -> torch.Tensor:
    """(3, h, w) float image: each pixel's x centre, y centre, and 1 (0 where padding fills)."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + 0.5,
        torch.arange(w, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([x, y, torch.ones_like(x)])


def traced(transform, seed: int, kind: str) -> tuple[torch.Tensor, CropBox]:
    """The tracked transform's output coordinates (2, oh, ow) and box, for a tensor or PIL
    ("F" mode, one channel at a time) coordinate image."""
    tracker = track_crops(transform, sample=_image(kind, 0))
    outs, boxes = [], []
    for channel in range(2) if kind == "pil" else [None]:
        torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
        out, box = tracker(_image(kind, channel))
        outs.append(_as_tensor(out))
        boxes.append(box)
    if kind == "pil":
        assert boxes[0] == boxes[1]
        return torch.cat(outs)[:2], boxes[0]
    return outs[0][:2], boxes[0]


def _image(kind: str, channel: int | None):
    image = coordinates()
    if kind == "tensor":
        return image
    return Image.fromarray(image[channel or 0].numpy(), mode="F")


def _as_tensor(out) -> torch.Tensor:
    if isinstance(out, Image.Image):
        return torch.from_numpy(np.asarray(out, dtype=np.float32).copy())[None]
    return out.float()


def assert_pixels_show_the_box(coords: torch.Tensor, box: CropBox, tol: float = TOL) -> None:
    """Every interior output pixel's source position is where ``box`` says it is."""
    oh, ow = coords.shape[-2:]
    bx0, bx1, by0, by1 = box.x0 * W, box.x1 * W, box.y0 * H, box.y1 * H
    u = (torch.arange(ow, dtype=torch.float64) + 0.5) / ow
    v = (torch.arange(oh, dtype=torch.float64) + 0.5) / oh
    ex = bx1 - u * (bx1 - bx0) if box.flipped else bx0 + u * (bx1 - bx0)
    ey = by0 + v * (by1 - by0)
    # Interior: away from the image's edges (padding, clamping) and from the output's edges
    # (the resampler's support of one source pixel clamps at the crop's edges).
    sx, sy = (bx1 - bx0) / ow, (by1 - by0) / oh
    keep_x = (ex > 1 + 2 * sx) & (ex < W - 1 - 2 * sx)
    keep_y = (ey > 1 + 2 * sy) & (ey < H - 1 - 2 * sy)
    mx, my = int(np.ceil(1 / sx)) + 2, int(np.ceil(1 / sy)) + 2
    keep_x[:mx], keep_x[-mx:], keep_y[:my], keep_y[-my:] = False, False, False, False
    assert keep_x.sum() >= 4 and keep_y.sum() >= 4, "too little of the image to compare"
    got_x = coords[0].double()[keep_y][:, keep_x]
    got_y = coords[1].double()[keep_y][:, keep_x]
    err_x = float((got_x - ex[keep_x]).abs().max())
    err_y = float((got_y - ey[keep_y][:, None]).abs().max())
    assert err_x <= tol and err_y <= tol, (
        f"box {box} is off the pixels by {err_x:.3f} px in x and {err_y:.3f} px in y"
    )


# Crop sizes against the 100 x 150 image: smaller, larger by an even and by an odd number of
# pixels, and larger on one side only.
CENTRE_SIZES = [(57, 91), (57, 90), (110, 160), (107, 155), (101, 151), (107, 90), (57, 163)]

STEPS = {
    # torchvision v1 (tensor and PIL)
    "v1 RandomResizedCrop": lambda: v1.RandomResizedCrop((48, 64), scale=(0.1, 1.0)),
    "v1 RandomResizedCrop up": lambda: v1.RandomResizedCrop(300, scale=(0.1, 1.0)),
    "v1 RandomCrop": lambda: v1.RandomCrop((41, 77)),
    "v1 Resize+CenterCrop": lambda: v1.Compose([v1.Resize(64), v1.CenterCrop(57)]),
    "v1 flip+crop": lambda: v1.Compose(
        [v1.RandomHorizontalFlip(), v1.RandomResizedCrop(64), v1.RandomHorizontalFlip()]
    ),
    **{f"v1 CenterCrop{s}": (lambda s=s: v1.CenterCrop(s)) for s in CENTRE_SIZES},
    # torchvision v2, tracked step by step
    "v2 RandomResizedCrop+flip": lambda: v2.Compose(
        [v2.RandomResizedCrop(64, scale=(0.05, 1.0)), v2.RandomHorizontalFlip()]
    ),
    "v2 RandomCrop": lambda: v2.RandomCrop((41, 77)),
    "v2 Resize(max_size)+CenterCrop": lambda: v2.Compose(
        [v2.Resize(80, max_size=100), v2.CenterCrop(61)]
    ),
    **{f"v2 CenterCrop{s}": (lambda s=s: v2.CenterCrop(s)) for s in CENTRE_SIZES},
    # timm
    "timm RandomResizedCropAndInterpolation": lambda: timm_t.RandomResizedCropAndInterpolation(
        64, interpolation="bilinear"
    ),
    "timm ResizeKeepRatio+CenterCropOrPad": lambda: v1.Compose(
        [timm_t.ResizeKeepRatio(90, longest=1.0), timm_t.CenterCropOrPad(81)]
    ),
    **{f"timm CenterCropOrPad{s}": (lambda s=s: timm_t.CenterCropOrPad(s)) for s in CENTRE_SIZES},
}

PROBED = {
    # torchvision v2 geometry the box probe tracks
    "v2 RandomZoomOut+crop": lambda: v2.Compose(
        [v2.RandomZoomOut(side_range=(1.0, 2.0), p=1.0), v2.RandomResizedCrop(64)]
    ),
    "v2 Pad+RandomCrop": lambda: v2.Compose([v2.Pad((3, 5, 7, 2)), v2.RandomCrop((80, 120))]),
    "v2 RandomCrop(padding)": lambda: v2.RandomCrop((90, 140), padding=9),
    "v2 RandomCrop(pad_if_needed)": lambda: v2.RandomCrop((113, 167), pad_if_needed=True),
    # Bilinear: the default nearest-neighbour sampling is itself up to half a pixel off.
    "v2 RandomAffine(translate, scale)": lambda: v2.RandomAffine(
        degrees=0,
        translate=(0.1, 0.2),
        scale=(0.8, 1.2),
        interpolation=v2.InterpolationMode.BILINEAR,
    ),
    "v2 ScaleJitter+crop": lambda: v2.Compose(
        [
            v2.ScaleJitter((100, 150), scale_range=(0.8, 1.5)),
            v2.RandomCrop((50, 60)),
            v2.RandomHorizontalFlip(),
        ]
    ),
    "v2 RandomShortestSize+flip": lambda: v2.Compose(
        [v2.RandomShortestSize([60, 70, 80]), v2.RandomHorizontalFlip(p=1.0)]
    ),
    "v2 odd CenterCrop after a probe step": lambda: v2.Compose(
        [v2.Pad(1), v2.CenterCrop((109, 157))]
    ),
}


@pytest.mark.parametrize("kind", ["tensor", "pil"])
@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_by_step_boxes_are_pixel_exact(name, kind):
    if kind == "pil" and name.startswith("v2 ") and "CenterCrop" not in name:
        pytest.skip("v2 on PIL images: the same code paths as tensors, covered by v1")
    for seed in range(4):
        coords, box = traced(STEPS[name](), seed, kind)
        assert_pixels_show_the_box(coords, box)


@pytest.mark.parametrize("name", sorted(PROBED))
def test_probed_boxes_are_pixel_exact(name):
    for seed in range(4):
        coords, box = traced(PROBED[name](), seed, "tensor")
        assert_pixels_show_the_box(coords, box)


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda: timm.data.create_transform(64, is_training=False), id="eval"),
        pytest.param(
            lambda: timm.data.create_transform(64, is_training=False, crop_mode="border"),
            id="eval-border",
        ),
        pytest.param(
            lambda: timm.data.create_transform(64, is_training=False, crop_mode="squash"),
            id="eval-squash",
        ),
        pytest.param(
            lambda: timm.data.create_transform(64, is_training=True, color_jitter=None),
            id="train",
        ),
    ],
)
def test_timm_pipelines_geometry_is_pixel_exact(transform):
    # timm's pipelines end in MaybeToTensor and Normalize, which act on values only: left off
    # here so that the pixels keep their coordinates (the tracker treats them as pixel-only).
    steps = [
        s for s in transform().transforms if type(s).__name__ not in ("MaybeToTensor", "Normalize")
    ]
    for step in steps:
        if hasattr(step, "fill"):  # the mean colour, three channels: the "F" images have one
            step.fill = 0
    for seed in range(4):
        coords, box = traced(v1.Compose(steps), seed, "pil")
        assert_pixels_show_the_box(coords, box)


def test_the_check_itself_sees_a_one_pixel_error():
    coords, box = traced(v2.CenterCrop((57, 91)), 0, "tensor")
    moved = CropBox(box.x0 + 1 / W, box.y0, box.x1 + 1 / W, box.y1)
    with pytest.raises(AssertionError, match=r"off the pixels by 1\.000 px in x"):
        assert_pixels_show_the_box(coords, moved)
