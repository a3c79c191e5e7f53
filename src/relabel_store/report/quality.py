"""What a store will teach: a label-quality report, from a sample of its records.

A weak annotator trains worse than the dataset's own labels (the ReLabel paper's ablation), and
labels can look fine record by record while being flat as a whole (an annotator run far from its
trained input size). :func:`quality_report` measures, on a random sample of records (all of them
in a small store; a few thousand of ImageNet's 1.28M take seconds):

* **agreement**: how often the whole-image pooled top-1 is the dataset's own label, the labels
  mapped onto the store's class ids by identity (ImageNet wnids / class names, as the loaders
  match them); ``None`` when the store knows no labels or no class names to map them by;
* **crop confidence**: the top-1 probability of the pooled target of random crops (torchvision's
  ``RandomResizedCrop`` defaults on each image's own size), what training sees; and of the whole
  image. A record without an image size (stores imported from the published maps, which record
  none) gets the same crops drawn on a square image, and the report says how many records that
  was: the crop fractions of an image depend on its aspect, which such a store does not know;
* **mass outside the map**: the share of each crop target on classes that no cell lists in its
  top-k (they keep logit 0 and share what the listed classes leave over);
* **classes per map**: distinct top-1 classes over a map's cells, and distinct class ids stored.

``relabel-store quality STORE [--plot out.png]`` prints it; ``generate`` prints the headline.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relabel_store.errors import ConfigurationError, InputError
from relabel_store.format.label_space import match_labels
from relabel_store.pooling import CropBox, pool
from relabel_store.read.reader import RelabelStore

__all__ = ["QualityReport", "quality_report"]

#: Records sampled by default: enough for two-digit percentages, seconds even on ImageNet.
DEFAULT_SAMPLE = 2000
_BATCH = 256
#: The side, in pixels, of the square image assumed for a record without an image size: large
#: enough that RandomResizedCrop's pixel rounding does not show in the crop fractions.
_UNSIZED_SIDE = 10_000


@dataclass(frozen=True)
class QualityReport:
    """Per-record and per-crop figures of a sample of a store (see the module docstring)."""

    location: str
    records: int  # in the store
    sampled: int
    crops_per_record: int
    labelled: int  # sampled records whose label maps onto a store class
    agreement: float | None  # share of ``labelled`` whose whole-image top-1 is their label
    label_note: str | None  # why labels are missing or only partly mapped
    whole_top1: np.ndarray  # (sampled,) top-1 probability of the whole-image target
    crop_top1: np.ndarray  # (sampled * crops,) top-1 probability of random-crop targets
    outside_mass: np.ndarray  # (sampled * crops,) probability on classes absent from the map
    distinct_top1: np.ndarray  # (sampled,) distinct top-1 classes over the cells
    distinct_ids: np.ndarray  # (sampled,) distinct class ids stored in the map
    unsized: int = 0  # sampled records without an image size: their crops assume a square image

    @property
    def crop_note(self) -> str | None:
        """What was assumed for records without an image size, if any was sampled."""
        if not self.unsized:
            return None
        which = "all" if self.unsized == self.sampled else f"{self.unsized} of"
        return (
            f"{which} {self.sampled} sampled records record no image size (maps imported from a "
            "release that has none): their random crops are RandomResizedCrop's scale and "
            "aspect ratio drawn on a square image"
        )

    def headline(self) -> list[str]:
        """The few lines ``generate`` prints: is this annotator worth training on?"""
        agree = (
            f"{self.agreement:.0%} of {self.labelled} labelled records"
            if self.agreement is not None
            else f"n/a ({self.label_note})"
        )
        return [
            f"agreement with the dataset's labels (whole-image top-1): {agree}",
            f"top-1 confidence of random-crop targets: median {np.median(self.crop_top1):.2f}"
            f" (whole image {np.median(self.whole_top1):.2f}"
            + (
                "; crops drawn on a square image: no image sizes recorded)" if self.unsized else ")"
            ),
            f"probability outside the stored classes: median {np.median(self.outside_mass):.2f}",
            f"distinct top-1 classes per map: median {np.median(self.distinct_top1):.0f}",
        ]

    def lines(self) -> list[str]:
        """The full report, one figure per line."""

        def spread(x: np.ndarray, fmt: str) -> str:
            q10, q50, q90 = np.quantile(x, [0.1, 0.5, 0.9])
            return f"mean {x.mean():{fmt}}, 10/50/90%: {q10:{fmt}} / {q50:{fmt}} / {q90:{fmt}}"

        sample = (
            f"all {self.records} records"
            if self.sampled == self.records
            else f"{self.sampled} of {self.records} records, sampled at random"
        )
        agree = (
            "n/a" if self.agreement is None else f"{self.agreement:.1%} ({self.labelled} labelled)"
        )
        out = [
            f"store:                       {self.location}",
            f"sample:                      {sample}, {self.crops_per_record} random crops each",
            f"agreement with labels:       {agree}",
        ]
        if self.label_note:
            out.append(f"  note: {self.label_note}")
        out += [
            f"whole-image top-1 conf.:     {spread(self.whole_top1, '.2f')}",
            f"random-crop top-1 conf.:     {spread(self.crop_top1, '.2f')}",
            *([f"  note: {self.crop_note}"] if self.crop_note else []),
            f"crops with top-1 >= 0.5:     {(self.crop_top1 >= 0.5).mean():.1%}",
            f"mass outside stored classes: {spread(self.outside_mass, '.2f')}",
            f"distinct top-1 per map:      {spread(self.distinct_top1, '.1f')}",
            f"distinct class ids per map:  {spread(self.distinct_ids, '.1f')}",
        ]
        return out

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Three histograms in one PNG (crop and whole-image confidence, mass outside the map,
        distinct top-1 classes per map), the agreement in the title."""
        from relabel_store._extras import requires_extra

        with requires_extra("show", "relabel-store quality --plot"):
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        bins = np.linspace(0, 1, 21)
        axes[0].hist(self.crop_top1, bins=bins, alpha=0.7, label="random crops", density=True)
        axes[0].hist(self.whole_top1, bins=bins, alpha=0.7, label="whole image", density=True)
        axes[0].set(xlabel="top-1 probability of the pooled target", ylabel="density")
        axes[0].legend()
        axes[1].hist(self.outside_mass, bins=bins, color="tab:red", density=True)
        axes[1].set(xlabel="probability on classes absent from the map")
        top = int(self.distinct_top1.max()) if len(self.distinct_top1) else 1
        axes[2].hist(self.distinct_top1, bins=np.arange(0.5, top + 1.5), color="tab:green")
        axes[2].set(xlabel="distinct top-1 classes per map", ylabel="records")
        agree = "n/a" if self.agreement is None else f"{self.agreement:.0%}"
        fig.suptitle(
            f"{Path(self.location).name}: {self.sampled} records, agreement with labels {agree}"
        )
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def quality_report(
    store: RelabelStore | str | os.PathLike[str],
    *,
    sample: int | None = DEFAULT_SAMPLE,
    crops: int = 4,
    seed: int = 0,
) -> QualityReport:
    """Measure what ``store`` will teach on ``sample`` random records (None: all of them),
    ``crops`` random crops each (see the module docstring)."""
    from relabel_store.read.api import load_relabel

    opened = load_relabel(store)
    meta = opened.metadata
    n = len(opened)
    if n == 0:
        raise InputError(f"{opened.source.location} holds no records to report on")
    if crops < 1:
        raise ConfigurationError(f"crops must be >= 1, got {crops}")
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if sample is None or sample >= n else np.sort(rng.choice(n, sample, False))
    label_map = match_labels(
        meta,
        meta.dataset.get("class_names"),
        dataset=f"the dataset ({meta.dataset.get('name') or 'unnamed'})",
        unnamed="the store does not record the dataset's class names",
    )
    c = meta.num_classes
    whole, crop, outside, distinct_top1, distinct_ids, agree, labelled = [], [], [], [], [], 0, 0
    unsized = 0
    for start in range(0, len(rows), _BATCH):
        batch = opened.get_rows(rows[start : start + _BATCH])
        sizes = batch.sizes.copy()
        unknown = (sizes <= 0).any(axis=1)
        sizes[unknown] = _UNSIZED_SIDE
        unsized += int(unknown.sum())
        boxes = _random_crops(rng, sizes, crops).tolist()
        truth = label_map.to_store(batch.labels)
        for i, (ids, logits) in enumerate(zip(batch.indices, batch.values, strict=True)):
            full = pool(ids, logits, CropBox.full(), num_classes=c)
            absent = np.ones(c, bool)
            absent[ids.ravel()] = False
            whole.append(full.max())
            for box in boxes[i * crops : (i + 1) * crops]:
                target = pool(ids, logits, CropBox(*box), num_classes=c)
                crop.append(target.max())
                outside.append(target[absent].sum())
            distinct_top1.append(len(np.unique(ids[..., 0])))
            distinct_ids.append(c - int(absent.sum()))
            if truth[i] >= 0:
                labelled += 1
                agree += int(full.argmax() == truth[i])
    note = label_map.problem
    if note is None and labelled == 0:
        note = "no sampled record has a known label (-1)"
    return QualityReport(
        location=opened.source.location,
        records=n,
        sampled=len(rows),
        crops_per_record=crops,
        labelled=labelled,
        agreement=agree / labelled if labelled else None,
        label_note=note,
        whole_top1=np.asarray(whole),
        crop_top1=np.asarray(crop),
        outside_mass=np.asarray(outside),
        distinct_top1=np.asarray(distinct_top1),
        distinct_ids=np.asarray(distinct_ids),
        unsized=unsized,
    )


def _random_crops(rng: np.random.Generator, sizes: np.ndarray, crops: int) -> np.ndarray:
    """``crops`` RandomResizedCrop boxes per image (torchvision's defaults: scale 0.08..1,
    ratio 3/4..4/3, 10 tries then a centre crop), normalised (x0, y0, x1, y1), float64."""
    out = np.empty((len(sizes) * crops, 4), np.float64)
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for i, (height, width) in enumerate(np.repeat(sizes, crops, axis=0).tolist()):
        height, width = max(int(height), 1), max(int(width), 1)
        for _ in range(10):
            area = height * width * rng.uniform(0.08, 1.0)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(area * ratio))
            h = round(math.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                y = int(rng.integers(0, height - h + 1))
                x = int(rng.integers(0, width - w + 1))
                break
        else:  # torchvision's fallback: the largest centred crop within the ratio range
            ratio = width / height
            if ratio < 3 / 4:
                w, h = width, round(width / (3 / 4))
            elif ratio > 4 / 3:
                h, w = height, round(height * (4 / 3))
            else:
                w, h = width, height
            y, x = (height - h) // 2, (width - w) // 2
        out[i] = (x / width, y / height, (x + w) / width, (y + h) / height)
    return out
