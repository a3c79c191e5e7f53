"""Pictures of label maps: the top-1 class of every cell over the image, and pooled targets.

``relabel-store show STORE KEY --image PHOTO --box x0,y0,x1,y1 -o out.png`` draws the image with
each cell tinted by its top-1 class (a legend names the classes), the crop box, and beside it the
crop with its LabelPooling soft target as a bar chart.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ConfigurationError
from relabel_store.pooling import CropBox, pool
from relabel_store.read.reader import RelabelStore

with requires_extra("show", "relabel_store.report.show"):
    from PIL import Image

__all__ = ["render_label_map"]

_MAX_LEGEND = 8


def _name(names: tuple[str, ...] | None, c: int, width: int = 28) -> str:
    text = f"{names[c].split(',')[0]} ({c})" if names else f"class {c}"
    return text if len(text) <= width else text[: width - 1] + "…"


def render_label_map(
    store: RelabelStore,
    key: str,
    output: str | os.PathLike[str],
    *,
    image: str | os.PathLike[str] | Image.Image | None = None,
    box: CropBox | None = None,
    top: int = 5,
) -> Path:
    """Draw record ``key`` of ``store`` (over ``image`` when given) into the PNG ``output``."""
    with requires_extra("show", "render_label_map"):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch, Rectangle

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
        ax.add_patch(
            Rectangle(
                (box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0, fill=False, ec="yellow", lw=2.5
            )
        )
        target = pool(rec.indices, rec.values, box, num_classes=meta.num_classes)
        best = np.argsort(-target)[:top]
        right = axes[0, 1]
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
        inset = right.inset_axes((0.0, 0.45, 1.0, 0.55))
        inset.imshow(crop)
        inset.set_xticks([])
        inset.set_yticks([])
        inset.set_title("crop" + (" (flipped)" if box.flipped else ""))
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
