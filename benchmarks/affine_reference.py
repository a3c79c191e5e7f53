"""Targets of rotating pipelines against brute-force references, over many random pipelines.

Run: ``python benchmarks/affine_reference.py [--trials 2000] [--classes 100]``.

Each trial draws a pipeline (RandomResizedCrop(112), then one of: torchvision v2
``TrivialAugmentWide``, v2 ``RandAugment`` m9, ``RandomRotation(30)``, timm ``rand-m9-mstd0.5``;
then a random horizontal flip) and a random 15 x 15 top-5 label map, and pushes an image whose
pixels hold their own coordinates (x, y, 1) through the real pipeline, tracked. The
AutoAugment-family steps run their geometric operations only (photometric ones would change the
coordinates; the tracker is the same code). Two references, both from the densified map:

- grid: the map sampled with ``grid_sample`` at RoIAlign's sampling grid laid out in output space
  and mapped through the tracked region (clips included), averaged, softmax. Checks the pooling
  arithmetic: agreement to float precision is the bar.
- pixels: the map sampled where each output pixel's own coordinates say it comes from (no tracked
  geometry involved; fill pixels count as zeros), averaged over the 112 x 112 output, softmax.
  Checks the geometry; it differs from RoIAlign's coarser grid by RoIAlign's own discretisation,
  which the same measure on plain crop+flip pipelines (printed alongside) shows.
"""

from __future__ import annotations

import argparse
import random
import statistics

import numpy as np
import timm.data.auto_augment as timm_aa
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from relabel_store.loaders import track_crops
from relabel_store.pooling import Region, pool
from relabel_store.pooling.affine import CLIP_TOLERANCE

H, W, OUT = 240, 320, 112
GEOMETRIC_V2 = {"Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
GEOMETRIC_TIMM = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
BL = v2.InterpolationMode.BILINEAR


def geometric_only(step):
    if hasattr(step, "_AUGMENTATION_SPACE"):
        space = step._AUGMENTATION_SPACE
        step._AUGMENTATION_SPACE = {k: v for k, v in space.items() if k in GEOMETRIC_V2}
    else:
        step.ops = [op for op in step.ops if op.name in GEOMETRIC_TIMM]
    return step


def pipelines() -> dict[str, tuple[object, bool]]:
    """name: (pipeline, runs on PIL float images)."""
    crop = v2.RandomResizedCrop(OUT, antialias=False)
    flip = v2.RandomHorizontalFlip()
    timm_ra = timm_aa.rand_augment_transform(
        "rand-m9-mstd0.5", {"img_mean": 0.0, "interpolation": Image.BILINEAR}
    )
    return {
        "TrivialAugmentWide": (
            v2.Compose([crop, geometric_only(v2.TrivialAugmentWide(interpolation=BL)), flip]),
            False,
        ),
        "RandAugment m9": (
            v2.Compose([crop, geometric_only(v2.RandAugment(magnitude=9, interpolation=BL)), flip]),
            False,
        ),
        "RandomRotation(30)": (
            v2.Compose([crop, v2.RandomRotation(30, interpolation=BL), flip]),
            False,
        ),
        "timm rand-m9-mstd0.5": (
            v2.Compose(
                [v2.RandomResizedCrop(OUT, interpolation=BL), geometric_only(timm_ra), flip]
            ),
            True,
        ),
        "crop+flip (boxes, baseline)": (v2.Compose([crop, flip]), False),
    }


def coordinates() -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64) + 0.5,
        torch.arange(W, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    return torch.stack([xs, ys, torch.ones_like(xs)]).float()


def run(
    tracker, on_pil: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
    """Source x, y of every output pixel and whether it shows the image; and the region."""
    image = coordinates()
    if not on_pil:
        torch.manual_seed(seed)
        out, region = tracker(tv_tensors.Image(image))
        shown = out[2] > 0.5
        return out[0] / out[2].clamp_min(1e-6), out[1] / out[2].clamp_min(1e-6), shown, region
    outs = []
    for channel in (image[0], image[1]):
        for seeded in (torch.manual_seed, np.random.seed, random.seed):
            seeded(seed)
        out, region = tracker(Image.fromarray(channel.numpy(), mode="F"))
        outs.append(torch.from_numpy(np.array(out, dtype=np.float32)))
    shown = (outs[0] > 0) & (outs[1] > 0)
    return outs[0], outs[1], shown, region


def dense(indices: np.ndarray, values: np.ndarray, num_classes: int) -> torch.Tensor:
    height, width, _ = indices.shape
    out = np.zeros((num_classes, height, width))
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    out[indices.astype(np.int64), ys[..., None], xs[..., None]] = values.astype(np.float64)
    return torch.from_numpy(out)[None]


def sample(dense_map: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, keep: torch.Tensor):
    """Mean of the map at original-image points (pixels), RoIAlign's edge rule, zeros at
    ``~keep``; softmax."""
    _, _, height, width = dense_map.shape
    px, py = sx.double() / W * width - 0.5, sy.double() / H * height - 0.5
    keep = keep & (px >= -1) & (px <= width) & (py >= -1) & (py <= height)
    grid = torch.stack([2 * sx.double() / W - 1, 2 * sy.double() / H - 1], dim=-1)
    values = torch.nn.functional.grid_sample(
        dense_map, grid[None], mode="bilinear", padding_mode="border", align_corners=False
    )[0]
    return torch.softmax((values * keep).mean(dim=(1, 2)), dim=0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    found = pipelines()
    trackers = {
        name: track_crops(tf, sample=coordinates() if not pil else Image.new("F", (W, H)))
        for name, (tf, pil) in found.items()
    }
    names = list(found)
    pixel_diffs: dict[str, list[float]] = {name: [] for name in names}
    grid_worst = 0.0
    for trial in range(args.trials):
        name = names[trial % len(names)]
        indices = np.argsort(rng.random((15, 15, args.classes)), axis=-1)[..., :5].astype(np.uint16)
        values = (-np.sort(-rng.normal(0, 3, (15, 15, 5)), axis=-1)).astype(np.float16)
        sx, sy, shown, region = run(trackers[name], found[name][1], trial)
        ours = pool(indices, values, region, num_classes=args.classes)
        dense_map = dense(indices, values, args.classes)
        pixel_diffs[name].append(float(np.abs(ours - sample(dense_map, sx, sy, shown)).max()))
        if isinstance(region, Region):
            reference = grid_sample_reference(dense_map, region, args.classes)
            grid_worst = max(grid_worst, float(np.abs(ours - reference).max()))
    print(
        f"{args.trials} random pipelines and maps ({args.classes} classes, 15 x 15 x 5, output {OUT} px)"
    )
    print(f"  |target - grid reference| worst over warped pipelines: {grid_worst:.2e}")
    print("  |target - pixel reference| (RoIAlign's discretisation included), per pipeline:")
    for name in names:
        d = pixel_diffs[name]
        print(f"    {name:30s} n={len(d):5d} median {statistics.median(d):.2e} worst {max(d):.2e}")


def grid_sample_reference(dense_map: torch.Tensor, region: Region, num_classes: int) -> np.ndarray:
    """RoIAlign's grid for a 1 x 1 output laid out in output space (sub-bin centres, ceil of
    the region's edge lengths in cells, stretched to a cell when shorter), through the region
    into the map by grid_sample (border clamping, out-of-range and clipped points zero)."""
    _, _, height, width = dense_map.shape
    m = torch.tensor(region.matrix, dtype=torch.float64).reshape(3, 3)
    cells = (
        torch.tensor([[width, 0, -0.5], [0, height, -0.5], [0, 0, 1.0]], dtype=torch.float64) @ m
    )
    lengths = [float(torch.hypot(cells[0, i], cells[1, i])) for i in (0, 1)]
    scales = [max(1.0, length) / length for length in lengths]  # aligned=False: at least a cell
    counts = [int(np.ceil(max(1.0, length))) for length in lengths]
    # the stretch keeps the first corner of the canonical orientation (dominant component > 0)
    starts = []
    for i in (0, 1):
        edge = cells[:2, i]
        starts.append(0.0 if float(edge[int(edge.abs().argmax())]) > 0 else 1.0)
    axes = []
    for i in (0, 1):
        t = (torch.arange(counts[i], dtype=torch.float64) + 0.5) / counts[i] * scales[i]
        axes.append(t if starts[i] == 0.0 else 1.0 - t)
    vv, uu = torch.meshgrid(axes[1], axes[0], indexing="ij")
    points = torch.stack([uu.ravel(), vv.ravel(), torch.ones(uu.numel(), dtype=torch.float64)])
    hom = m @ points
    s, t = hom[0] / hom[2], hom[1] / hom[2]
    px, py = s * width - 0.5, t * height - 0.5
    keep = (px >= -1) & (px <= width) & (py >= -1) & (py <= height)
    for clip in region.clips:
        ch = torch.tensor(clip, dtype=torch.float64).reshape(3, 3) @ points
        cs, ct = ch[0] / ch[2], ch[1] / ch[2]
        lo, hi = -CLIP_TOLERANCE, 1 + CLIP_TOLERANCE  # on a canvas's edge: inside
        keep &= (cs >= lo) & (cs <= hi) & (ct >= lo) & (ct <= hi)
    grid = torch.stack([2 * s - 1, 2 * t - 1], dim=-1).reshape(1, 1, -1, 2)
    values = torch.nn.functional.grid_sample(
        dense_map, grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0, :, 0]
    return torch.softmax((values * keep).mean(dim=1), dim=0).numpy()


if __name__ == "__main__":
    main()
