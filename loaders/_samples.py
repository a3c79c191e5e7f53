"""What every loader does with a sample: its record, its target or reference, the checks.

``RelabelDataset`` (map-style), ``RelabelStream`` (iterable pipelines) and ``DaliFiles`` (DALI)
turn a store row, the crop box that was taken and the dataset's label into the same things: a
pooled soft target (``pooling="sample"``) or a small reference that
:class:`~.pytorch.LabelPooler` pools later, batched. Both live here, with the checks every
loader makes on what its samples say about their records (one key per file, an image of the
record's shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from relabel_store.errors import (
    ArgumentTypeError,
    ConfigurationError,
    RecordNotFoundError,
)
from relabel_store.pooling import CropBox, PoolingSpec, pool
from relabel_store.reader import RelabelStore

if TYPE_CHECKING:
    from relabel_store.loaders.resident import DeviceMaps

__all__ = [
    "check_image_sizes",
    "check_maps",
    "check_unique_keys",
    "dataset_label",
    "one_hot",
    "reference",
    "sample_target",
]


def dataset_label(value: Any) -> int:
    """The dataset's integer label, or -1 when it is not one (unknown, or transformed)."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)
    return -1


def one_hot(label: int, num_classes: int, spec: PoolingSpec, name: str | None = None) -> np.ndarray:
    """The target of a sample without a record (``missing="original"``): its label, one-hot."""
    if not 0 <= label < num_classes:
        raise RecordNotFoundError(
            f"{f'key {name!r}' if name else 'a sample'} has no record in the store and no "
            f"usable label ({label}) to fall back to"
        )
    out = np.zeros((*spec.grid, num_classes) if spec.output_size != 1 else num_classes, np.float32)
    out[..., label] = 1.0
    return out


def sample_target(
    store: RelabelStore,
    row: int,
    box: CropBox,
    label: int,
    spec: PoolingSpec,
    maps: DeviceMaps | None = None,
) -> np.ndarray:
    """The soft target of store row ``row`` for ``box`` (the one-hot of ``label``, a store
    class id, when ``row`` is -1), from ``maps`` in host memory when given."""
    num_classes = store.metadata.num_classes
    if row < 0:
        return one_hot(label, num_classes, spec)
    if maps is not None:
        ids, values = maps.records(np.array([row]))
        indices, values = ids[0], values[0]
    else:
        rec = store.get_row(row)
        indices, values = rec.indices, rec.values
    return pool(indices, values, box, num_classes=num_classes, spec=spec, label=label)


def check_maps(maps: Any, store: RelabelStore) -> DeviceMaps | None:
    """``maps`` if they are ``store``'s maps in host memory (or None), else an error."""
    if maps is None:
        return None
    from relabel_store.loaders.resident import DeviceMaps

    if not isinstance(maps, DeviceMaps):
        raise ArgumentTypeError(f"maps must be DeviceMaps, got {type(maps).__name__}")
    maps.check_store(store)
    if maps.device.type != "cpu":
        raise ConfigurationError(
            f"maps= gives DataLoader workers maps to pool from, in host memory; these are on "
            f"{maps.device}. Load them with DeviceMaps.load(store, 'cpu'), or pool on the "
            "device in the training step: pooling='batch' with ResidentPooler."
        )
    return maps


def reference(row: int, box: CropBox, label: int) -> dict[str, Any]:
    """What ``pooling="batch"`` returns in place of a target; DataLoader's default collation
    turns a batch of them into the tensors :class:`~.pytorch.LabelPooler` takes."""
    return {
        "row": row,
        "box": torch.tensor((box.x0, box.y0, box.x1, box.y1), dtype=torch.float64),
        "flipped": box.flipped,
        "label": label,
    }


def check_image_sizes(
    store: RelabelStore, rows: np.ndarray, sizes: np.ndarray, names: Any = None
) -> None:
    """Refuse images whose shape is not their record's image, resized or not.

    ``sizes`` are (B, 2) (height, width) of the images as the pipeline decoded them, before
    any crop. Crop boxes are fractions of the whole image the store annotated, so an image
    resized with its aspect ratio kept (shards of downscaled ImageNet) is fine; one cropped,
    padded or squashed on the way into the shards is not, and neither is the image of another
    record. Rows of -1 (no record) are skipped. ``names`` (keys, or anything indexable) name the
    first offender in the error.
    """
    rows = np.asarray(rows)
    present = np.flatnonzero(rows >= 0)
    if not len(present):
        return
    stored = store.sizes[rows[present]].astype(np.int64)
    got = np.asarray(sizes, np.int64).reshape(-1, 2)[present]
    big_h, big_w = stored[:, 0], stored[:, 1]
    h, w = got[:, 0], got[:, 1]
    # Resizing rounds each side to whole pixels: h/w may differ from H/W by half a pixel per
    # side, which bounds |h*W - w*H| by (H + W) / 2; allow a pixel per side.
    bad = (h <= 0) | (w <= 0) | (np.abs(h * big_w - w * big_h) > big_h + big_w)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        j = int(present[i])
        name = f" {names[j]!r}" if names is not None else ""
        count = (
            f" ({int(bad.sum())} of {len(present)} images in this batch)" if len(got) > 1 else ""
        )
        raise ConfigurationError(
            f"image{name} is {int(h[i])} x {int(w[i])} pixels (height x width), but its record "
            f"in store {store.source.location} was made from a {int(big_h[i])} x {int(big_w[i])} "
            f"image: another shape, not just another size{count}. Crop boxes are fractions of "
            "the image the store annotated, so the images must be those images, whole (resized "
            "with their aspect ratio kept is fine). Check that the keys match the images, and that the shards were not "
            "written from center-cropped or squashed images."
        )


def check_unique_keys(keys: Sequence[str], paths: Sequence[str] | None, key_mode: str) -> None:
    """Refuse different files that share a key: they would share one label map."""
    if paths is None:
        return
    first: dict[str, str] = {}
    clashes = []
    for key, path in zip(keys, paths, strict=True):
        seen = first.setdefault(key, path)
        if seen != path:
            clashes.append(f"{key!r} ({seen} and {path})")
    if clashes:
        fix = (
            "Key files by their path below the dataset root: key_mode='relpath' here, with a "
            "store generated by relabel-store generate --key-mode relpath."
            if key_mode == "stem"
            else "Give each sample its own key with key_fn=..."
        )
        raise ConfigurationError(
            f"{len(clashes)} samples share their store key with a different file, so they "
            f"would get another image's label map (for example {'; '.join(clashes[:3])}). {fix}"
        )
