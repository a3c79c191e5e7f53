"""Pictures of label maps: the top-1 class of every cell over the image, and pooled targets.

``relabel-store show STORE KEY --image PHOTO --box x0,y0,x1,y1 -o out.png`` draws the image with
each cell tinted by its top-1 class (a legend names the classes), the crop box, and beside it the
crop with its LabelPooling soft target as a bar chart. ``--rotate DEG`` turns that crop as
``RandomRotation`` would: the picture then shows the rotated region (a
:class:`~relabel_store.pooling.Region`), the output image's outline mapped onto the photo as a
polygon, with RoIAlign's sampling points, and what the output image shows.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ConfigurationError
from relabel_store.pooling import CropBox, Region, pool
from relabel_store.pooling.affine import canonical, cell_matrix, clip_mask
from relabel_store.read.reader import RelabelStore

with requires_extra("show", "relabel_store.report.show"):
    from PIL import Image

__all__ = ["render_label_map", "rotated_region"]

_MAX_LEGEND = 8


def _name(names: tuple[str, ...] | None, c: int, width: int = 28) -> str:
    text = f"{names[c].split(',')[0]} ({c})" if names else f"class {c}"
    return text if len(text) <= width else text[: width - 1] + "…"


def rotated_region(box: CropBox, degrees: float, image_size: tuple[int, int]) -> Region:
    """The region ``box`` (flip included) shows once turned by ``degrees`` about its centre.

    As torchvision's ``RandomRotation(degrees)`` (``expand=False``) after the crop: counter-
    clockwise for positive angles, in pixels of the crop (``image_size`` is the original
    image's (height, width)), the corners outside the turned crop are fill (the crop's canvas
    is the region's clip).
    """
    h, w = image_size
    cw, ch = (box.x1 - box.x0) * w, (box.y1 - box.y0) * h
    if not (h > 0 and w > 0 and cw > 0 and ch > 0 and math.isfinite(degrees)):
        raise ConfigurationError(
            f"a rotated crop needs a box with positive size on a known image size and a finite "
            f"angle, got {box}, {degrees} degrees, image (height, width) {image_size}"
        )
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # output pixel p (about the centre) shows crop pixel R p, R = [[c, -s], [s, c]] (y down)
    to_crop = (
        np.diag([1 / cw, 1 / ch, 1.0])
        @ np.array(
            [
                [c, -s, cw / 2 - c * cw / 2 + s * ch / 2],
                [s, c, ch / 2 - s * cw / 2 - c * ch / 2],
                [0, 0, 1],
            ]
        )
        @ np.diag([cw, ch, 1.0])
    )
    matrix = Region.from_box(box).array() @ to_crop
    return Region(tuple(matrix.ravel()), clips=(tuple(to_crop.ravel()),))


def _sampling_points(region: Region, gh: int, gw: int) -> tuple[np.ndarray, np.ndarray]:
    """RoIAlign's sampling points of ``region`` for one bin, normalised to the image, and
    whether each shows the image (inside every clip): as the pooling lays them out."""
    original = cell_matrix(region.array(), gh, gw)
    mc, _, _, gx, gy = canonical(original.copy(), 1, 1)
    u, v = np.meshgrid((np.arange(gx) + 0.5) / gx, (np.arange(gy) + 0.5) / gy)
    x, y, z = mc @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    points = np.stack([(x / z + 0.5) / gw, (y / z + 0.5) / gh], axis=1)
    shown = clip_mask(region.clips, np.linalg.solve(original, mc), u.ravel(), v.ravel())
    return points, shown


def _warp(photo: Image.Image, region: Region) -> Image.Image:
    """What the output image of ``region`` shows, at about the photo's resolution."""
    w, h = photo.size
    m = region.array()
    corners = [m @ (u, v, 1.0) for u, v in ((0, 0), (1, 0), (0, 1))]
    px = [np.array([p[0] / p[2] * w, p[1] / p[2] * h]) for p in corners]
    ow = max(8, min(2000, round(float(np.hypot(*(px[1] - px[0]))))))
    oh = max(8, min(2000, round(float(np.hypot(*(px[2] - px[0]))))))
    pixels = np.diag([w, h, 1.0]) @ m @ np.diag([1 / ow, 1 / oh, 1.0])
    data = tuple((pixels / pixels[2, 2]).ravel()[:8])
    out = photo.transform((ow, oh), Image.Transform.PERSPECTIVE, data, Image.Resampling.BILINEAR)
    if region.clips:
        u, v = np.meshgrid((np.arange(ow) + 0.5) / ow, (np.arange(oh) + 0.5) / oh)
        arr = np.asarray(out).copy()
        arr[~clip_mask(region.clips, np.eye(3), u, v)] = 0
        out = Image.fromarray(arr)
    return out


def render_label_map(
    store: RelabelStore,
    key: str,
    output: str | os.PathLike[str],
    *,
    image: str | os.PathLike[str] | Image.Image | None = None,
    box: CropBox | Region | None = None,
    top: int = 5,
) -> Path:
    """Draw record ``key`` of ``store`` (over ``image`` when given) into the PNG ``output``.

    With ``box``, a :class:`CropBox` or any :class:`Region` (rotated, sheared, projective), the
    crop is outlined on the map and drawn beside it with its pooled soft target's top classes;
    a region's outline is the output image's edges mapped through its matrix (a dot marks the
    output's top-left corner; dashed: its clips' canvases), with RoIAlign's sampling points
    (hollow: behind a clip, they count as zeros)."""
    with requires_extra("show", "render_label_map"):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch, Polygon, Rectangle

    rec = store.get(key)
    meta = store.metadata
    names = meta.class_names
    h, w = rec.size  # (0, 0): not recorded (imported maps); any image size is then taken
    if image is not None:
        photo = image if isinstance(image, Image.Image) else Image.open(image)
        photo = photo.convert("RGB")
        if h and w and photo.size != (w, h):
            raise ConfigurationError(
                f"the image is {photo.size[0]}x{photo.size[1]} but record {key!r} was made from "
                f"a {w}x{h} image; pass the original image"
            )
    else:
        photo = Image.new("RGB", (w or 480, h or 480), (128, 128, 128))
    w, h = photo.size
    top1 = rec.indices[..., 0].astype(np.int64)
    classes, counts = np.unique(top1, return_counts=True)
    order = classes[np.argsort(-counts)]
    shown = order[:_MAX_LEGEND]
    palette = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]  # grey means "other"
    colour = {int(c): palette[i % len(palette)] for i, c in enumerate(shown)}
    other = (0.5, 0.5, 0.5, 1.0)

    ncols = 2 if box is not None else 1
    fig, axes = plt.subplots(
        1, ncols, figsize=(6.5 * ncols, 6.0), squeeze=False, constrained_layout=True
    )
    ax = axes[0, 0]
    ax.imshow(photo, extent=(0, 1, 1, 0))
    gh, gw = meta.grid
    overlay = np.zeros((gh, gw, 4))
    for y in range(gh):
        for x in range(gw):
            overlay[y, x] = colour.get(int(top1[y, x]), other)
    overlay[..., 3] = 0.45
    ax.imshow(overlay, extent=(0, 1, 1, 0), interpolation="nearest")
    for i in range(1, gw):
        ax.axvline(i / gw, color="white", lw=0.3, alpha=0.6)
    for i in range(1, gh):
        ax.axhline(i / gh, color="white", lw=0.3, alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_aspect(h / w)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{key}: top-1 class per cell ({gh}x{gw} grid)")
    handles = [Patch(color=colour[int(c)], label=_name(names, int(c))) for c in shown]
    if len(order) > len(shown):
        handles.append(Patch(color=other, label=f"{len(order) - len(shown)} more classes"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.01), ncol=2, fontsize=8)

    if box is not None:
        if isinstance(box, Region):
            m = box.array()
            outline = [m @ (u, v, 1.0) for u, v in ((0, 0), (1, 0), (1, 1), (0, 1))]
            corners = [(p[0] / p[2], p[1] / p[2]) for p in outline]
            ax.add_patch(Polygon(corners, closed=True, fill=False, ec="yellow", lw=2.5))
            for clip in box.clips:  # an intermediate canvas (the crop before it was turned)
                canvas = m @ np.linalg.inv(np.array(clip).reshape(3, 3))
                edges = [canvas @ (x, y, 1.0) for x, y in ((0, 0), (1, 0), (1, 1), (0, 1))]
                ax.add_patch(
                    Polygon([(p[0] / p[2], p[1] / p[2]) for p in edges], closed=True,
                            fill=False, ec="yellow", lw=1.2, ls="--")
                )  # fmt: skip
            ax.plot(*corners[0], "o", color="yellow", ms=7)
            points, inside = _sampling_points(box, gh, gw)
            ax.scatter(*points[inside].T, s=6, c="white", edgecolors="black", linewidths=0.3)
            ax.scatter(*points[~inside].T, s=14, facecolors="none", edgecolors="white", lw=0.9)
            crop = _warp(photo, box)
            label = f"output image ({len(points)} sampling points)"
        else:
            ax.add_patch(
                Rectangle(
                    (box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0, fill=False, ec="yellow",
                    lw=2.5,
                )
            )  # fmt: skip
            crop = photo.crop(
                (
                    max(0, round(box.x0 * w)),
                    max(0, round(box.y0 * h)),
                    min(w, round(box.x1 * w)),
                    min(h, round(box.y1 * h)),
                )
            )
            if box.flipped:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            label = "crop" + (" (flipped)" if box.flipped else "")
        target = pool(rec.indices, rec.values, box, num_classes=meta.num_classes)
        best = np.argsort(-target)[:top]
        right = axes[0, 1]
        inset = right.inset_axes((0.0, 0.45, 1.0, 0.55))
        inset.imshow(crop)
        inset.set_xticks([])
        inset.set_yticks([])
        inset.set_title(label)
        bars = right.inset_axes((0.35, 0.0, 0.65, 0.38))
        ypos = np.arange(len(best))[::-1]
        bars.barh(ypos, target[best], color=[colour.get(int(c), other) for c in best])
        bars.set_yticks(ypos, [_name(names, int(c)) for c in best])
        bars.set_xlim(0, max(0.05, float(target[best[0]]) * 1.15))
        bars.set_xlabel("LabelPooling soft target")
        bars.tick_params(labelsize=8)
        right.axis("off")
    out = Path(output)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
