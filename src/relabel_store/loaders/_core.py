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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image

from relabel_store.errors import (
    ArgumentTypeError,
    ConfigurationError,
    ImageMismatchError,
    NoSignaturesWarning,
    RecordNotFoundError,
)
from relabel_store.format.keys import KeyMode, check_key_mode, legacy_key
from relabel_store.images import (
    SIGNATURE_GRID,
    SIGNATURE_THRESHOLD,
    image_signature,
    signature_distance,
)
from relabel_store.loaders.maps import DeviceMaps
from relabel_store.pooling import CropBox, PoolingSpec, Region, pool
from relabel_store.read.api import load_relabel
from relabel_store.read.reader import RelabelStore

if TYPE_CHECKING:
    from relabel_store.format.label_space import LabelMap

__all__ = [
    "REGION_CLIPS",
    "ImageCheck",
    "ImageChecks",
    "KeyTally",
    "Missing",
    "Opened",
    "Pooling",
    "SampleSteps",
    "check_image_sizes",
    "check_maps",
    "check_shapes",
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
#: How loaders compare images with their records' content signatures (:class:`ImageCheck`):
#: ``"sample"`` (default), ``"all"``, ``"off"``, or a steady rate in (0, 1].
ImageChecks = Literal["sample", "all", "off"] | float


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
    images: ImageCheck


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
    check_images: Any = "sample",
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
    images = ImageCheck(opened, check_images, keys_from)
    return Opened(opened, spec or PoolingSpec(), maps, mode, keys_from, check_sizes, images)


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


def image_hw(image: Any) -> tuple[int, int] | None:
    """(height, width) of a decoded image: a PIL image, a numpy array (H, W) or (H, W, C) with
    up to 4 channels (what numpy pipelines such as albumentations hold), or a torch tensor
    (..., H, W) (torchvision's layout); None for anything else (paths, bytes)."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, torch.Tensor) and image.dim() >= 2:
        return int(image.shape[-2]), int(image.shape[-1])
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] <= 4):
            return int(image.shape[0]), int(image.shape[1])
        if image.ndim == 3 and image.shape[0] <= 4:  # (C, H, W) arrays, as from a tensor
            return int(image.shape[1]), int(image.shape[2])
    return None


def check_shapes(
    store: RelabelStore, rows: np.ndarray, images: Sequence[Any], names: Any = None
) -> None:
    """:func:`check_image_sizes` for decoded images: PIL images, numpy arrays and tensors
    (:func:`image_hw`); images of other types (paths, bytes) carry no size and are not checked.
    Image by image in plain Python (~2 us an image: loaders call it for every sample)."""
    recorded = store.sizes
    sizes: list[tuple[int, int]] = []
    checked: list[int] = []
    misfit = False
    for row, image in zip(np.asarray(rows).tolist(), images, strict=True):
        hw = image_hw(image)
        if hw is not None:
            h, w = hw
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


class ImageCheck:
    """Whether each image is its record's image, by content: the image's signature
    (:func:`relabel_store.images.image_signature`, ~0.3 ms) against the one the store holds for
    its record, before the user's transform. A size check cannot see another photo of the same
    size (another copy or version of the dataset), a 180-degree turn (an EXIF orientation
    applied by the loader) or a crop of a square image that stays square; this can.

    ``how``: ``"sample"`` (default) checks the first :attr:`FIRST` samples of every process
    (each DataLoader worker) and then one sample in :attr:`EVERY`; ``"all"`` every sample;
    ``"off"`` none; a number in (0, 1] the steady rate instead of 1/EVERY. Loaders that can
    read their dataset when they are built also check :attr:`AT_START` samples then. Stores
    without signatures (written before format 1.3, imported without ``--images``) turn the
    check off with one :class:`~relabel_store.errors.NoSignaturesWarning`.
    """

    #: Samples every process checks before going over to the steady rate.
    FIRST = 16
    #: The default steady rate: one sample in EVERY.
    EVERY = 1000
    #: Samples a loader that holds its dataset checks when it is built.
    AT_START = 8

    def __init__(self, store: RelabelStore, how: Any, keys_from: str = "") -> None:
        if isinstance(how, bool) or not (
            how in ("sample", "all", "off")
            or (isinstance(how, int | float) and 0 < float(how) <= 1)
        ):
            raise ConfigurationError(
                "check_images must be 'sample' (the default: the first samples of every "
                f"worker, then one in {self.EVERY}), 'all', 'off' or a rate in (0, 1], got "
                f"{how!r}"
            )
        self.store = store
        self.how = how
        self.keys_from = keys_from
        self.signatures: np.ndarray | None = None
        if how != "off":
            if store.has_signatures:
                self.signatures = store.signatures  # read now: forked workers share it
            else:
                warnings.warn(
                    f"store {store.source.location} holds no image signatures (written before "
                    "relabel-store format 1.3, or imported without --images), so images are not "
                    "checked against their records by content (their shapes still are). Add "
                    "them with `relabel-store sign STORE IMAGES`, or pass check_images='off' "
                    "to say you know.",
                    NoSignaturesWarning,
                    stacklevel=4,
                )
        self.every = 1 if how == "all" else self.EVERY if how == "sample" else 0
        if isinstance(how, int | float) and not isinstance(how, bool):
            self.every = max(1, round(1 / float(how)))
        self._pid = -1
        self._seen = 0

    @property
    def active(self) -> bool:
        """Whether any image will be checked (the store has signatures and checks are on)."""
        return self.signatures is not None

    def due(self, n: int = 1) -> bool:
        """Whether the next ``n`` samples include one to check (counted per process)."""
        if self.signatures is None:
            return False
        pid = os.getpid()
        if pid != self._pid:  # a new DataLoader worker: its first samples are checked
            self._pid, self._seen = pid, 0
        start = self._seen
        self._seen += n
        if start < self.FIRST:
            return True
        return -(-start // self.every) * self.every < self._seen  # a multiple of every among them

    def check(
        self, rows: np.ndarray, images: Sequence[Any], names: Any = None, *, force: bool = False
    ) -> None:
        """Check those of ``images`` (before any transform) that are :meth:`due` (all with
        ``force``) against the signatures of store ``rows`` (-1: no record, skipped); an
        :class:`~relabel_store.errors.ImageMismatchError` naming the likely cause on the
        first that is another image."""
        if self.signatures is None:
            return
        for j, (row, image) in enumerate(zip(np.asarray(rows).tolist(), images, strict=True)):
            if not (self.due() or force) or row < 0 or image_hw(image) is None:
                continue
            recorded = self.signatures[row]
            if recorded.min() == recorded.max():  # a uniform image: nothing to compare
                continue
            seen = image_signature(image, record=False)
            distance = float(signature_distance(seen, recorded))
            if distance > SIGNATURE_THRESHOLD:
                name = None if names is None else names(j) if callable(names) else names[j]
                raise self._mismatch(row, seen, distance, name)

    def _mismatch(
        self, row: int, seen: np.ndarray, distance: float, name: Any
    ) -> ImageMismatchError:
        """The error for an image that is not its record's, with the likeliest cause."""
        store = self.store
        key = store.keys[row].decode()
        what = f"image {name!r}" if name is not None and str(name) != key else "the image"
        head = (
            f"{what} (store key {key!r}) is not the image its record in store "
            f"{store.source.location} was made from: their content signatures are "
            f"{distance:.2f} apart (the same photo re-encoded or resized stays under "
            f"{SIGNATURE_THRESHOLD})."
        )
        assert self.signatures is not None
        turned = _turn_of(seen, self.signatures[row])
        if turned is not None:
            cause = (
                f" It is the record's image {turned}. Likely cause: the image was turned by "
                "its EXIF orientation (ImageOps.exif_transpose, or a decoder that applies it: "
                "Hugging Face datasets' decoded Image column, DALI with "
                "adjust_orientation=True), while the annotator read the pixels as stored; or a "
                "flip or turn applied before the library saw the image. Fix: decode without "
                "applying EXIF orientation (drop exif_transpose; cast a datasets column to "
                "datasets.Image(decode=False)), and put every augmentation in the transform "
                "given to the loader."
            )
            return ImageMismatchError(head + cause)
        distances = signature_distance(self.signatures, seen)
        best = int(np.argmin(distances))
        if best != row and float(distances[best]) <= SIGNATURE_THRESHOLD:
            cause = (
                f" It matches the record of key {store.keys[best].decode()!r} instead. Likely "
                f"cause: keys derived wrongly ({self.keys_from or 'the key function'}), or "
                "files renamed or moved after the store was generated. Fix: derive each "
                "sample's key as generate derived it (key_fn=, key_mode=), or regenerate the "
                "store for these files."
            )
        else:
            cause = (
                " Likely causes: another copy or version of the dataset whose files share the "
                "store's names and sizes (other photos), or an image cropped, padded or edited "
                "before the library saw it (a Dataset that crops in __getitem__, with "
                "albumentations or numpy). Fix: use the store generated from these very "
                "images (relabel-store generate), and give every crop to the loader's "
                "transform so its box is tracked. If the images are their records' images "
                "altered on purpose, pass check_images='off'."
            )
        return ImageMismatchError(head + cause)


def _turn_of(seen: np.ndarray, recorded: np.ndarray) -> str | None:
    """How ``seen`` is ``recorded`` turned or flipped (a phrase), or None when it is not."""
    g = SIGNATURE_GRID
    grid = recorded.reshape(g, g)
    turns = {
        "turned 180 degrees": np.rot90(grid, 2),
        "turned 90 degrees counterclockwise": np.rot90(grid, 1),
        "turned 90 degrees clockwise": np.rot90(grid, 3),
        "flipped left to right": grid[:, ::-1],
        "flipped top to bottom": grid[::-1],
        "transposed": grid.T,
        "transversed": np.rot90(grid, 2).T,
    }
    best = min(turns, key=lambda k: float(signature_distance(seen, turns[k].reshape(-1))))
    if float(signature_distance(seen, turns[best].reshape(-1))) <= SIGNATURE_THRESHOLD:
        return best
    return None


def check_sources(
    check: ImageCheck, rows: np.ndarray, load: Callable[[int], Any], names: Any = None
) -> None:
    """The check a loader that holds its dataset makes when it is built: up to
    :attr:`ImageCheck.AT_START` samples with a record, spread over the dataset, loaded with
    ``load(position)`` (the image before the user's transform) and checked."""
    if not check.active:
        return
    present = np.flatnonzero(np.asarray(rows) >= 0)
    if not len(present):
        return
    picks = present[np.unique(np.linspace(0, len(present) - 1, ImageCheck.AT_START).astype(int))]
    for i in picks.tolist():
        check.check(
            np.asarray(rows)[i : i + 1],
            [load(i)],
            None if names is None else [names(i) if callable(names) else names[i]],
            force=True,
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


# -- the per-sample steps ---------------------------------------------------------------------------


class SampleSteps:
    """The steps every loader takes with its samples, and every check on them, in one place:
    each image checked against its record (:meth:`check`: its shape, and its content by
    :class:`ImageCheck`), the user's transform run with its crops tracked (:meth:`transform`),
    then a target pooled for the tracked box or region, or a reference for ``pooling="batch"``
    (:meth:`targets`). A loader only decides how it iterates (a map-style dataset, a stream, a
    ``datasets`` batch transform) and calls these in that order."""

    def __init__(
        self, opened: Opened, pooling: Pooling, track: Callable[[Any], Any] | None = None
    ) -> None:
        self.store, self.spec, self.maps = opened.store, opened.spec, opened.maps
        self.check_sizes = opened.check_sizes
        self.image_check = opened.images
        self.pooling = pooling
        self.track = track

    def check(self, rows: np.ndarray, images: Sequence[Any], names: Any = None) -> None:
        """Refuse an image that is not (a resized copy of) its record's image: its shape (every
        sample, unless ``check_sizes=False``), its content (:class:`ImageCheck`'s samples).
        ``names``: the images' keys, or a function of their position, for messages."""
        if self.check_sizes:
            check_shapes(self.store, rows, images, names)
        self.image_check.check(rows, images, names)

    def transform(self, image: Any) -> tuple[Any, CropBox | Region]:
        """The user's transform of ``image``, with the box (or region) its output shows."""
        if self.track is None:
            raise ConfigurationError("the loader has no transform tracker yet; set its transform")
        image, box = self.track(image)
        return image, box

    def targets(
        self,
        rows: np.ndarray,
        boxes: Sequence[CropBox | Region],
        labels: np.ndarray,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor | list[dict[str, Any]]:
        """Targets (B, C) for store ``rows`` (-1: the one-hot of the label) under ``boxes``, or
        with ``pooling="batch"`` one :func:`reference` each; ``labels`` are store class ids."""
        if self.pooling == "batch":
            return [
                reference(int(row), box, int(label))
                for row, box, label in zip(np.asarray(rows).tolist(), boxes, labels, strict=True)
            ]
        return pool_rows(
            self.store, rows, boxes, np.asarray(labels), spec=self.spec, names=names, maps=self.maps
        )
