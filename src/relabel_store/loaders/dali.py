"""NVIDIA DALI: ReLabel targets for the crops DALI draws itself.

DALI decodes and augments on the GPU (or on the CPU), inside its own graph, where no Python
transform runs and no crop box can be tracked from outside. So the crop is drawn in a way whose
window is a pipeline output: :func:`random_resized_crop` takes the window from DALI's own
``fn.random_crop_generator`` (the RandomResizedCrop distribution), decodes only that region with
``fn.decoders.image_slice``, resizes it, flips it on ``fn.random.coin_flip``, and returns the
images together with each sample's crop window (:func:`crop_window`). In the training loop
:meth:`DaliFiles.references` turns the windows and the reader's sample indices into the
references :class:`~relabel_store.loaders.LabelPooler` pools, batched, on the training device.

:class:`DaliFiles` is the file list for DALI's file reader, every key resolved and every class
matched when it is built, as :class:`~relabel_store.loaders.RelabelDataset` does: the reader's
labels are sample indices, which the references map to store rows and dataset labels.

``nvidia.dali`` is imported only by the graph functions (``pip install
"relabel-store[dali]"``); DALI's CPU backend runs without a GPU (``device_id=None``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.format.keys import KeyMode, key_from_path
from relabel_store.format.label_space import ClassMap, match_labels
from relabel_store.images import decode_image
from relabel_store.loaders import _bases
from relabel_store.loaders._core import (
    ImageChecks,
    Missing,
    check_image_sizes,
    check_sources,
    check_unique_keys,
    open_loader,
    require_labels,
    resolve_rows,
)
from relabel_store.pooling import PoolingSpec
from relabel_store.read.reader import RelabelStore

__all__ = ["WINDOW_FIELDS", "DaliFiles", "crop_window", "random_resized_crop"]

#: What each sample's crop window holds, in order (whole pixels of the decoded image).
WINDOW_FIELDS = ("height", "width", "top", "left", "crop_height", "crop_width", "flipped")


def _dali() -> tuple[Any, Any]:
    with requires_extra("dali", "relabel_store.loaders.dali (for CUDA 13: nvidia-dali-cuda130)"):
        from nvidia.dali import fn, types
    return fn, types


def crop_window(shape: Any, anchor: Any, crop_shape: Any, flip: Any) -> Any:
    """Pack one crop's window into a DALI output: int64 ``(7,)`` per sample, see
    :data:`WINDOW_FIELDS`.

    For graphs built by hand, inside a pipeline definition: ``shape`` is
    ``fn.peek_image_shape(encoded, adjust_orientation=False)`` (HWC), ``anchor``/``crop_shape``
    the ``(y, x)``/``(height, width)`` window that was decoded or sliced (what
    ``fn.random_crop_generator`` returns for an HWC shape; slice with ``axis_names="HW"``),
    and ``flip`` the coin (0/1) that mirrored the crop horizontally.
    """
    fn, types = _dali()
    parts = [shape[0:2], anchor, crop_shape, fn.reshape(flip, shape=[1])]
    return fn.cat(*(fn.cast(p, dtype=types.INT64) for p in parts))


def random_resized_crop(
    encoded: Any,
    size: int | Sequence[int],
    *,
    random_area: Sequence[float] = (0.08, 1.0),
    random_aspect_ratio: Sequence[float] = (3 / 4, 4 / 3),
    flip_probability: float = 0.5,
    device: str = "cpu",
    num_attempts: int = 10,
) -> tuple[Any, Any]:
    """Inside a DALI pipeline definition: a random resized crop of each encoded image, flipped
    at random, and its crop window.

    The window comes from ``fn.random_crop_generator(random_area, random_aspect_ratio)`` (the
    distribution of torchvision's ``RandomResizedCrop``); only that region is decoded
    (``fn.decoders.image_slice``), resized to ``size`` (``n`` or ``(height, width)``) and
    mirrored when ``fn.random.coin_flip(probability=flip_probability)`` says so. ``device``
    is ``"cpu"`` or ``"mixed"`` (decode on the GPU). Images are decoded without applying
    EXIF orientation, as ``relabel-store generate`` and PIL decode them, so the window and the
    record describe the same pixels.

    Returns ``(images, window)``: HWC uint8 images, and the window to return from the pipeline
    for :meth:`DaliFiles.references`.
    """
    fn, _ = _dali()
    if device not in ("cpu", "mixed"):
        raise ConfigurationError(f"device must be 'cpu' or 'mixed' (GPU decoding), got {device!r}")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    shape = fn.peek_image_shape(encoded, adjust_orientation=False)
    anchor, crop_shape = fn.random_crop_generator(
        shape,
        random_area=list(random_area),
        random_aspect_ratio=list(random_aspect_ratio),
        num_attempts=num_attempts,
    )
    images = fn.decoders.image_slice(
        encoded,
        anchor,
        crop_shape,
        axis_names="HW",  # the generator's window is (y, x) for an HWC shape
        normalized_anchor=False,
        normalized_shape=False,
        adjust_orientation=False,
        device=device,
    )
    images = fn.resize(images, resize_x=width, resize_y=height)
    flip = fn.random.coin_flip(probability=flip_probability)
    images = fn.flip(images, horizontal=flip)
    return images, crop_window(shape, anchor, crop_shape, flip)


class DaliFiles:
    """Image files for DALI's file reader, each resolved to its record when this is built.

    - ``store``: a :class:`RelabelStore` or anything :func:`relabel_store.load_relabel` takes.
    - ``files``: the image paths; keys are derived from them as ``relabel-store generate``
      derived them (``key_mode``, default the store's; ``"relpath"`` needs ``root``), or by
      ``key_fn(path) -> key``.
    - ``labels``: each file's dataset label (optional), with ``class_names`` (the name of each
      label: ImageNet wnids, folder names) or ``class_map`` to match them with the store's
      classes; needed only when labels are mixed in (``missing="original"``,
      ``spec.original_weight``).
    - ``spec``, ``missing``: as for :class:`~relabel_store.loaders.RelabelDataset`; a file
      without a record fails here with ``missing="error"``.
    - ``check_sizes``: as for ``RelabelDataset`` (True: refuse an image whose shape is not
      its record's).
    - ``check_images``: ``"sample"`` (default) or ``"all"`` decode 8 of the files here, spread
      over the list, and compare them with their records by content (another copy of the
      photos, wrong keys); ``"off"`` does not. DALI decodes the training images on its own,
      so they are not checked while training (their shapes are, in :meth:`references`).

    Give the reader ``files=dali_files.files, labels=dali_files.indices`` (each sample's
    position in this list) and return the indices and :func:`random_resized_crop`'s windows
    from the pipeline; ``references(indices, windows)`` then gives what
    :class:`~relabel_store.loaders.LabelPooler` takes. :meth:`from_dataset` reads the files,
    labels and classes of a torchvision ``ImageFolder`` or a timm ``ImageDataset``.
    """

    def __init__(
        self,
        store: RelabelStore | str | os.PathLike[str],
        files: Sequence[str | os.PathLike[str]],
        labels: Sequence[int] | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        key_mode: KeyMode | None = None,
        key_fn: Callable[[str], str] | None = None,
        spec: PoolingSpec | None = None,
        missing: Missing = "error",
        class_names: Sequence[str] | None = None,
        class_map: ClassMap | None = None,
        check_sizes: bool = True,
        check_images: ImageChecks = "sample",
    ) -> None:
        if isinstance(files, str | bytes | os.PathLike):
            raise ArgumentTypeError(
                "files must be a list of image paths, got one path; for a folder of class "
                "folders use DaliFiles.from_dataset(store, ImageFolder(root))"
            )
        opened = open_loader(
            store,
            spec=spec,
            missing=missing,
            key_fn=key_fn,
            key_fn_is="path -> key",
            key_mode=key_mode,
            other_keys="key_fn=path -> key",
            check_sizes=check_sizes,
            check_images=check_images,
        )
        self.check_sizes = opened.check_sizes
        self.store, self.spec = opened.store, opened.spec
        self.files = [os.fspath(f) for f in files]
        if labels is not None and len(labels) != len(self.files):
            raise ConfigurationError(
                f"{len(labels)} labels for {len(self.files)} files: give one label per file"
            )
        mode = opened.key_mode
        if key_fn is not None:
            keys = [key_fn(f) for f in self.files]
            paths = None
        else:
            keys = [key_from_path(f, mode, root=root) for f in self.files]
            paths = self.files
        check_unique_keys(keys, paths, mode)
        self.keys = keys
        self.rows = resolve_rows(self.store, keys, missing, opened.keys_from, paths)
        # The pixels as DALI decodes them here (adjust_orientation=False): as stored.
        check_sources(
            opened.images, self.rows, lambda i: decode_image(self.files[i])[0], self.files
        )
        self.indices = list(range(len(self.files)))
        self.label_map = match_labels(
            self.store.metadata, class_names, class_map, dataset="the files' labels"
        )
        absent = int((self.rows < 0).sum())
        if labels is None and (self.spec.original_weight > 0 or absent):
            why = " and ".join(
                (
                    [
                        f"missing='original' ({absent} file{'s have' if absent > 1 else ' has'} no record)"
                    ]
                    if absent
                    else []
                )
                + (["PoolingSpec(original_weight=...)"] if self.spec.original_weight > 0 else [])
            )
            raise ConfigurationError(
                f"{why} mixes in the files' labels: it needs labels=, one per file"
            )
        require_labels(self.label_map, self.spec, missing, absent)
        given = np.full(len(self.files), -1) if labels is None else np.asarray(labels, np.int64)
        self.store_labels = self.label_map.to_store(given)

    @classmethod
    def from_dataset(cls, store: Any, dataset: Any, **kwargs: Any) -> DaliFiles:
        """The files, labels and classes of a torchvision ``ImageFolder`` / ``DatasetFolder``
        or a timm ``ImageDataset`` (or a ``Subset``/``ConcatDataset`` of them)."""
        found = _bases.sample_paths(dataset)
        if found is None:
            raise ArgumentTypeError(
                f"cannot find the file paths of {type(dataset).__name__}; pass the files to "
                "DaliFiles(store, files, labels) instead"
            )
        paths, root = found
        targets = getattr(dataset, "targets", None)
        if targets is None and isinstance(getattr(dataset, "samples", None), list):
            targets = [label for _, label in dataset.samples]
        kwargs.setdefault("root", root)
        kwargs.setdefault("class_names", _bases.class_names(dataset))
        return cls(store, paths, targets, **kwargs)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"DaliFiles({self.store!r}, files={len(self)}, spec={self.spec})"

    def references(self, indices: Any, windows: Any) -> dict[str, torch.Tensor]:
        """References for :class:`~relabel_store.loaders.LabelPooler` from a DALI batch.

        ``indices``: the reader's labels (the samples' positions in :attr:`files`), ``(B,)`` or
        ``(B, 1)``; ``windows``: :func:`crop_window` outputs, ``(B, 7)``. Both as torch
        tensors (``DALIGenericIterator``), numpy arrays or DALI ``TensorList``s on the CPU.
        Images whose decoded shape is not their record's are refused.
        """
        index = _as_numpy(indices, "indices").reshape(-1).astype(np.int64)
        window = _as_numpy(windows, "windows").astype(np.int64)
        if window.ndim != 2 or window.shape != (len(index), len(WINDOW_FIELDS)):
            raise ConfigurationError(
                f"windows must be ({len(index)}, {len(WINDOW_FIELDS)}) ({', '.join(WINDOW_FIELDS)}"
                f"), one per index; got {window.shape}. Return crop_window(...) or "
                "random_resized_crop's window from the pipeline."
            )
        if len(index) and (index.min() < 0 or index.max() >= len(self.files)):
            raise ConfigurationError(
                f"a sample index is outside 0..{len(self.files) - 1}: give the reader "
                "labels=dali_files.indices, with files=dali_files.files"
            )
        rows = self.rows[index]
        names = [self.files[i] for i in index.tolist()]
        if self.check_sizes:
            check_image_sizes(self.store, rows, window[:, 0:2], names)
        height, width, top, left, crop_h, crop_w = (
            window[:, i].astype(np.float64) for i in range(6)
        )
        boxes = np.stack(
            [left / width, top / height, (left + crop_w) / width, (top + crop_h) / height], axis=1
        )
        return {
            "row": torch.from_numpy(rows),
            "box": torch.from_numpy(boxes),
            "flipped": torch.from_numpy(window[:, 6] != 0),
            "label": torch.from_numpy(self.store_labels[index]),
        }


def _as_numpy(value: Any, what: str) -> np.ndarray:
    """A CPU batch as numpy: torch tensors, arrays, DALI TensorLists (as_array/as_tensor)."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            value = value.cpu()
        return value.numpy()
    if hasattr(value, "as_array"):  # DALI TensorListCPU of uniform shape
        return np.asarray(value.as_array())
    if hasattr(value, "as_cpu"):  # DALI TensorListGPU
        return np.asarray(value.as_cpu().as_array())
    try:
        return np.asarray(value)
    except Exception:
        raise ArgumentTypeError(
            f"{what} must be a torch tensor, a numpy array or a DALI TensorList, got "
            f"{type(value).__name__}"
        ) from None
