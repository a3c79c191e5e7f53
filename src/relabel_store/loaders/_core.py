"""What every loader does with its store and its samples, in one place.

``RelabelDataset`` (map-style), ``RelabelStream`` (iterable pipelines), ``relabel_transform``
(Hugging Face ``datasets``) and ``DaliFiles`` (DALI) open a store the same way
(:func:`open_loader`: the checks of their common arguments, the store, its maps in memory, how
keys are derived), resolve keys to store rows the same way (:func:`resolve_rows`), make the same
checks on what their samples say about their records (one key per file, at least one key in the
store, an image of the record's shape) and turn a store row, the crop box that was taken and the
dataset's label into the same things: a pooled soft target (:func:`pool_rows`) or a small
reference that :class:`~relabel_store.loaders.LabelPooler` pools later, batched
(:func:`reference`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image

from relabel_store.errors import (
    ArgumentTypeError,
    ConfigurationError,
    RecordNotFoundError,
)
from relabel_store.format.keys import KeyMode, check_key_mode, legacy_key
from relabel_store.loaders.maps import DeviceMaps
from relabel_store.pooling import CropBox, PoolingSpec, Region, pool
from relabel_store.read.api import load_relabel
from relabel_store.read.reader import RelabelStore

if TYPE_CHECKING:
    from relabel_store.format.label_space import LabelMap

__all__ = [
    "REGION_CLIPS",
    "KeyTally",
    "Missing",
    "Opened",
    "Pooling",
    "check_image_sizes",
    "check_images",
    "check_maps",
    "check_unique_keys",
    "dataset_label",
    "find_rows",
    "no_keys_found",
    "one_hot",
    "open_loader",
    "pool_rows",
    "reference",
    "require_labels",
    "resolve_rows",
]

#: What a sample without a record gets: an error, or the one-hot of its own label.
Missing = Literal["error", "original"]
#: Clips (intermediate canvases) a ``pooling="batch"`` reference carries for a Region.
REGION_CLIPS = 8
#: Where targets are pooled: in the loader (``"sample"``) or later, batched, by a LabelPooler.
Pooling = Literal["sample", "batch"]


# -- opening a loader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """What :func:`open_loader` found: the open store, the pooling spec, the maps in host
    memory (or None), the key mode paths are keyed by, and how this loader derives keys (for
    messages: ``"key_fn"``, ``"key_column='id'"``, ``"key_mode='stem'"``)."""

    store: RelabelStore
    spec: PoolingSpec
    maps: DeviceMaps | None
    key_mode: KeyMode
    keys_from: str
    check_sizes: bool


def open_loader(
    store: RelabelStore | str | os.PathLike[str],
    *,
    spec: Any,
    missing: Any,
    pooling: Any = "sample",
    maps: Any = None,
    key_fn: Any = None,
    key_fn_is: str = "index -> key",
    key_mode: Any = None,
    key_column: str | None = None,
    other_keys: str = "key_fn=...",
    check_sizes: Any = True,
) -> Opened:
    """The opening every loader shares: its common arguments checked, the store opened with
    :func:`relabel_store.load_relabel`, ``maps`` checked to be the store's, and how keys come
    to be: ``key_fn`` (a function ``key_fn_is``), ``key_column``, or file paths keyed in
    ``key_mode`` (default: the mode the store was generated with).

    A store generated with keys from a dataset column (``generate --key-column``) holds no
    path-derived keys, so deriving them from paths is refused; ``other_keys`` names what this
    loader takes instead.
    """
    if missing not in ("error", "original"):
        raise ConfigurationError(f"missing must be 'error' or 'original', got {missing!r}")
    if pooling not in ("sample", "batch"):
        raise ConfigurationError(f"pooling must be 'sample' or 'batch', got {pooling!r}")
    if not isinstance(check_sizes, bool):
        raise ArgumentTypeError(f"check_sizes must be True or False, got {check_sizes!r}")
    if spec is not None and not isinstance(spec, PoolingSpec):
        raise ArgumentTypeError(f"spec must be a PoolingSpec, got {type(spec).__name__}")
    if key_fn is not None and not callable(key_fn):
        raise ArgumentTypeError(
            f"key_fn must be a function {key_fn_is}, got {type(key_fn).__name__}"
        )
    opened = load_relabel(store)
    dataset = opened.metadata.dataset
    mode = check_key_mode(key_mode if key_mode is not None else dataset.get("key_mode") or "stem")
    if key_fn is not None:
        keys_from = "key_fn"
    elif key_column is not None:
        keys_from = f"key_column={key_column!r}"
    else:
        keys_from = f"key_mode={mode!r}"
        column = _store_key_column(dataset)
        if column is not None:
            raise ConfigurationError(
                f"store {opened.source.location} was generated with keys from {column} of its "
                "dataset (relabel-store generate --key-column), not from file paths: keys "
                f"derived from paths ({keys_from}) would not be its keys. Give each sample the "
                f"key the store has: {other_keys}"
            )
    maps = check_maps(maps, opened)
    return Opened(opened, spec or PoolingSpec(), maps, mode, keys_from, check_sizes)


def _store_key_column(dataset: Any) -> str | None:
    """Which column a store's keys came from (``"column 'id'"``), or None when they were
    derived from file paths. Stores written before the column was recorded say
    ``key_mode: null``."""
    column = dataset.get("key_column")
    if column:
        return f"column {column!r}"
    if "key_mode" in dataset and dataset["key_mode"] is None:
        return "a column"
    return None


def require_labels(
    label_map: LabelMap, spec: PoolingSpec, missing: Missing, absent: int | None
) -> str:
    """What mixes the dataset's labels into targets (``""``: nothing), refused with
    :class:`~relabel_store.errors.LabelSpaceError` when the labels are not matched with the
    store's classes. ``absent`` is the number of samples without a record (None: not known
    before the samples arrive, as in a stream: then ``missing="original"`` needs labels)."""
    uses = []
    if spec.original_weight > 0:
        uses.append(f"PoolingSpec(original_weight={spec.original_weight})")
    if missing == "original" and absent is None:
        uses.append("missing='original'")
    elif missing == "original" and absent:
        uses.append(
            f"missing='original' ({absent} sample{'s have' if absent > 1 else ' has'} no record)"
        )
    why = " and ".join(uses)
    if why:
        label_map.require(why)
    return why


def check_maps(maps: Any, store: RelabelStore) -> DeviceMaps | None:
    """``maps`` if they are ``store``'s maps in host memory (or None), else an error."""
    if maps is None:
        return None

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


# -- keys and rows --------------------------------------------------------------------------------


def find_rows(
    store: RelabelStore, keys: Sequence[str], paths: Sequence[str | None] | None = None
) -> np.ndarray:
    """Row (position in key order) of every key, vectorised; -1 where absent.

    With ``paths`` (the files the keys came from), a key not in the store is tried again in
    the form stores written before keys dropped the Hub's ImageNet suffix hold.
    """
    rows = store.rows_of(keys)
    if paths is not None:
        retry = {
            i: alt
            for i in np.flatnonzero(rows < 0).tolist()
            if (path := paths[i]) and (alt := legacy_key(keys[i], path)) != keys[i]
        }
        if retry:
            rows[list(retry)] = store.rows_of(list(retry.values()))
    return rows


def resolve_rows(
    store: RelabelStore,
    keys: Sequence[str],
    missing: Missing,
    keys_from: str,
    paths: Sequence[str | None] | None = None,
    *,
    whole: bool = True,
    fallback: str = "the dataset's own one-hot label",
) -> np.ndarray:
    """:func:`find_rows`, refusing what would train on wrong targets: when ``keys`` are the
    ``whole`` dataset, keys none of which is in the store (keys derived another way than the
    store's, or another dataset's store: with ``missing="original"`` every target would be a
    one-hot label), whatever ``missing`` says; with ``missing="error"`` any key without a
    record. ``keys_from`` says how the keys were derived."""
    rows = find_rows(store, keys, paths)
    absent = np.flatnonzero(rows < 0)
    if not len(absent):
        return rows
    if whole and len(absent) == len(keys):  # a wrong store or key derivation, not gaps
        raise no_keys_found(store, keys, keys_from)
    if missing == "error":
        raise store.missing_keys(
            [keys[i] for i in absent[:5].tolist()],
            len(keys),
            f"Check that the store was generated for this dataset and that its keys are "
            f"derived as generate derived them (here: {keys_from}), or pass "
            f"missing='original' to fall back to {fallback}.",
            count=len(absent),
        )
    return rows


def no_keys_found(
    store: RelabelStore, keys: Sequence[str], keys_from: str, count: int | None = None
) -> ConfigurationError:
    """The refusal of keys none of which is in the store, even with ``missing="original"``:
    ``count`` keys (default: all of ``keys``), of which ``keys`` are examples."""
    count = len(keys) if count is None else count
    return ConfigurationError(
        f"none of the {count} keys is in store {store.source.location} (keys derived with "
        f"{keys_from}, e.g. {list(keys[:3])}; the store's are like "
        f"{[k.decode() for k in store.keys[:3].tolist()]}): a store of another dataset, or "
        "keys derived another way (missing='original' would only give one-hot labels). Derive "
        "the keys as the store's were made (key_mode= "
        "as in generate's --key-mode, key_fn=, key_column=), or use the store generated for "
        "this dataset. A dataset that has no records in any store (a validation set) needs no "
        "relabel-store loader: train on its own labels."
    )


class KeyTally:
    """Keys seen and found by a loader that gets its keys a few at a time (a stream, a
    ``datasets`` transform): after :attr:`FIRST_LOOK` keys of which none is in the store, the
    keys are derived another way than the store's, and every target would be a one-hot label.
    Refused then, even with ``missing="original"``."""

    #: Keys looked at before a loader that found none of them in its store refuses to go on.
    FIRST_LOOK = 1000

    def __init__(self) -> None:
        self.seen = 0
        self.found = 0
        self.examples: list[str] = []

    def add(self, store: RelabelStore, rows: np.ndarray, keys: Sequence[str], how: str) -> None:
        """Count a batch's ``rows`` (-1: absent) and their ``keys``; refuse as above."""
        if self.found:
            return
        self.seen += len(rows)
        self.found += int((rows >= 0).sum())
        self.examples = [*self.examples, *keys[: 3 - len(self.examples)]]
        if not self.found and self.seen >= self.FIRST_LOOK:
            raise no_keys_found(store, self.examples, f"{how}; the first samples", self.seen)


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


# -- images ---------------------------------------------------------------------------------------


def check_images(
    store: RelabelStore, rows: np.ndarray, images: Sequence[Any], names: Any = None
) -> None:
    """:func:`check_image_sizes` for decoded images: PIL images and tensors (``(..., H, W)``);
    images of other types (arrays, paths) carry no size this can trust and are not checked.
    Image by image in plain Python (~2 us an image: loaders call it for every sample)."""
    recorded = store.sizes
    sizes: list[tuple[int, int]] = []
    checked: list[int] = []
    misfit = False
    for row, image in zip(np.asarray(rows).tolist(), images, strict=True):
        if isinstance(image, Image.Image):
            h, w = image.height, image.width
        elif isinstance(image, torch.Tensor) and image.dim() >= 2:
            h, w = int(image.shape[-2]), int(image.shape[-1])
        else:
            h, w, row = 0, 0, -1
        sizes.append((h, w))
        checked.append(row)
        if row >= 0 and not misfit:
            big_h, big_w = recorded[row].tolist()
            misfit = bool(_misfits(h, w, big_h, big_w))
    if misfit:
        check_image_sizes(store, np.array(checked), np.array(sizes), names)


def _misfits(h: Any, w: Any, big_h: Any, big_w: Any) -> Any:
    """Whether an image of (h, w) is not a resized copy of one of (big_h, big_w) (ints or
    arrays); images of unknown size ((0, 0): imported maps) fit. Resizing rounds each side to
    whole pixels: h/w may differ from H/W by half a pixel per side, which bounds
    |h*W - w*H| by (H + W) / 2; a pixel per side is allowed."""
    known = (big_h > 0) & (big_w > 0)
    return known & ((h <= 0) | (w <= 0) | (abs(h * big_w - w * big_h) > big_h + big_w))


def check_image_sizes(
    store: RelabelStore, rows: np.ndarray, sizes: np.ndarray, names: Any = None
) -> None:
    """Refuse images whose shape is not their record's image, resized or not.

    ``sizes`` are (B, 2) (height, width) of the images as the pipeline decoded them, before
    any crop. Crop boxes are fractions of the whole image the store annotated, so an image
    resized with its aspect ratio kept (shards of downscaled ImageNet) is fine; one cropped,
    padded, squashed or turned (EXIF orientation applied) on the way is not, and neither is the
    image of another record. Rows of -1 (no record) and records of unknown size ((0, 0):
    imported maps) are skipped. ``names`` (keys, or anything indexable; or a function of the
    position) name the first offender in the error.
    """
    rows = np.asarray(rows)
    present = np.flatnonzero(rows >= 0)
    if not len(present):
        return
    stored = store.sizes[rows[present]].astype(np.int64)
    got = np.asarray(sizes, np.int64).reshape(-1, 2)[present]
    big_h, big_w = stored[:, 0], stored[:, 1]
    h, w = got[:, 0], got[:, 1]
    bad = _misfits(h, w, big_h, big_w)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    j = int(present[i])
    name = "" if names is None else f" {names(j) if callable(names) else names[j]!r}"
    count = f" ({int(bad.sum())} of {len(present)} images in this batch)" if len(got) > 1 else ""
    raise ConfigurationError(
        f"image{name} is {int(h[i])} x {int(w[i])} pixels (height x width), but its record in "
        f"store {store.source.location} was made from a {int(big_h[i])} x {int(big_w[i])} "
        f"image: another shape, not just another size{count}. Crop boxes are fractions of the "
        "image the store annotated, so the images must be those images, whole and as stored "
        "(resized with their aspect ratio kept is fine). Check that the keys match the images, "
        "that the images were not center-cropped or squashed, and that they were not turned "
        "by their EXIF orientation (Hugging Face datasets does that when it decodes: cast the "
        "column to datasets.Image(decode=False)). Only if every image is its record's whole "
        "image resized to another aspect ratio on purpose (a squashed copy, as downsampled "
        "ImageNet 64x64 is), crop fractions still mean the same: then pass check_sizes=False."
    )


# -- targets --------------------------------------------------------------------------------------


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


def pool_rows(
    store: RelabelStore,
    rows: np.ndarray,
    boxes: Sequence[CropBox | Region],
    labels: np.ndarray,
    *,
    spec: PoolingSpec,
    names: Sequence[str] | None = None,
    maps: DeviceMaps | None = None,
) -> torch.Tensor:
    """Targets (B, C) (or (B, oh, ow, C)) for store rows (-1: the one-hot of the label).

    ``labels`` are store class ids (-1: unknown). Reads the records in one call (or copies
    them out of ``maps``, the store's maps in host memory) and pools each with
    :func:`~relabel_store.pooling.pool`, whatever the batch size: a sample's target never
    depends on the batch it came in (a ``*-single`` variant's argmax near a tie included).
    One :class:`~relabel_store.pooling.batched.BatchPooler` call sums in another order and
    differs in the last bits; it is faster on CPU (benchmarks/dataloader.py, batches of 64 of
    RandomResizedCrop boxes: ~22 against ~36 us an image, 0.55% of plain loading), and
    per-sample loaders (streams) would pay its fixed ~0.4 ms a call.
    ``names`` label rows in errors.
    """
    rows = np.asarray(rows, np.int64)
    n, c = len(rows), store.metadata.num_classes
    out = np.empty((n, *(() if spec.output_size == 1 else spec.grid), c), np.float32)
    present = np.flatnonzero(rows >= 0)
    if len(present):
        if maps is not None:
            ids, values = maps.records(rows[present])
        elif len(present) == 1:  # one sample (a stream, __getitem__): the cheaper single read
            record = store.get_row(int(rows[present[0]]))
            ids, values = record.indices[None], record.values[None]
        else:
            batch = store.get_rows(rows[present])
            ids, values = batch.indices, batch.values
        for j, i in enumerate(present.tolist()):
            out[i] = pool(
                ids[j], values[j], boxes[i], num_classes=c, spec=spec, label=int(labels[i])
            )
    for i in np.flatnonzero(rows < 0).tolist():  # missing="original"
        out[i] = one_hot(int(labels[i]), c, spec, names[i] if names is not None else None)
    return torch.from_numpy(out)


def reference(row: int, box: CropBox | Region, label: int) -> dict[str, Any]:
    """What ``pooling="batch"`` returns in place of a target; DataLoader's default collation
    turns a batch of them into the tensors :class:`~relabel_store.loaders.LabelPooler` takes.
    A :class:`~relabel_store.pooling.Region` (a rotating pipeline's) travels under ``"region"``
    as (1 + REGION_CLIPS, 3, 3): its matrix, then its clips padded with identities (which clip
    nothing), the same shape for every sample so that batches collate."""
    if isinstance(box, Region):
        if len(box.clips) > REGION_CLIPS:
            raise ConfigurationError(
                f"the training transform hides parts of the image behind {len(box.clips)} "
                f"intermediate canvases; pooling='batch' carries at most {REGION_CLIPS}. Use "
                "pooling='sample', or fewer rotating steps."
            )
        identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        rows = [box.matrix, *box.clips, *[identity] * (REGION_CLIPS - len(box.clips))]
        return {
            "row": row,
            "region": torch.tensor(rows, dtype=torch.float64).reshape(1 + REGION_CLIPS, 3, 3),
            "label": label,
        }
    return {
        "row": row,
        "box": torch.tensor((box.x0, box.y0, box.x1, box.y1), dtype=torch.float64),
        "flipped": box.flipped,
        "label": label,
    }
