"""Add content signatures to a finalized store: ``relabel-store sign STORE IMAGES``.

Stores written before format 1.3, and stores imported from published maps (which come without
their images), hold no ``signatures`` array, so loaders cannot check images against their
records by content. Given the images the maps were made from, :func:`sign_store` computes each
record's signature (:func:`relabel_store.images.image_signature`, the whole image decoded as
``generate`` decodes it) and adds the array: its files first, then the manifest, replaced
atomically. Until the new manifest is in place readers ignore the new files; a run killed
before that is simply run again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from torch.utils.data import DataLoader
from zarr.storage import LocalStore

from relabel_store._progress import Progress
from relabel_store.errors import InputError
from relabel_store.format._lock import WriteLock
from relabel_store.format.keys import check_key_mode
from relabel_store.format.manifest import build_manifest, write_manifest
from relabel_store.format.metadata import PROGRESS_DIR, SIGNATURE_BYTES
from relabel_store.read.reader import RelabelStore
from relabel_store.write.inputs import InputDataset, InputItem, open_inputs
from relabel_store.write.writer import write_signatures

__all__ = ["SignResult", "sign_store", "signatures_of"]


@dataclass(frozen=True)
class SignResult:
    """What :func:`sign_store` did."""

    path: Path
    records: int
    unused_images: int
    seconds: float
    digest: str

    def summary(self) -> str:
        extra = (
            f"; {self.unused_images} images without a record ignored" if self.unused_images else ""
        )
        return (
            f"signed {self.records} records of {self.path} in {self.seconds:.1f} s{extra}\n"
            f"digest:   {self.digest}"
        )


def _no_pixels(image: Any) -> None:
    """InputDataset's transform here: the signature is all that is kept of an image."""
    return None


def _items(batch: list[InputItem]) -> list[InputItem]:
    return batch


def signatures_of(
    store: RelabelStore,
    images: str | os.PathLike[str],
    *,
    workers: int = 0,
    progress: bool | None = None,
) -> tuple[np.ndarray, int]:
    """The signature of every record of ``store`` (key order) from the image folder ``images``
    (ImageNet layout or plain, keyed as the store was: its ``key_mode``, default ``stem``),
    and the number of images without a record (ignored). A record without an image, or an
    image that cannot be decoded, is an :class:`InputError`."""
    key_mode = check_key_mode(store.metadata.dataset.get("key_mode") or "stem")
    inputs = open_inputs(images, key_mode=key_mode)
    keys = inputs.keys
    rows = store.rows_of(keys)
    present = np.flatnonzero(rows >= 0)
    if len(present) < len(store):
        have = np.zeros(len(store), bool)
        have[rows[present]] = True
        lacking = [store.keys[i].decode() for i in np.flatnonzero(~have)[:5].tolist()]
        raise InputError(
            f"{len(store) - int(have.sum())} of the {len(store)} records of "
            f"{store.source.location} have no image in {images} (keys like {lacking}, derived "
            f"with key_mode={key_mode!r}): give the folder of the images the maps were made "
            "from, every one of them."
        )
    out = np.zeros((len(store), SIGNATURE_BYTES), np.uint8)
    loader = DataLoader(
        InputDataset(inputs, _no_pixels, present.tolist(), signatures=True),
        batch_size=64,
        num_workers=workers,
        collate_fn=_items,
    )
    bar = Progress(len(present), desc="signing", unit="images", show=progress)
    for batch in loader:
        for item in batch:
            if item.error is not None or item.signature is None:
                raise InputError(
                    f"cannot sign {item.location} (key {item.key!r}): {item.error}. Every "
                    "record needs its image."
                )
            out[rows[item.row]] = item.signature
        bar.update(len(batch))
    bar.close()
    return out, len(keys) - len(present)


def sign_store(
    path: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    workers: int = 0,
    progress: bool | None = None,
) -> SignResult:
    """Add (or replace) the ``signatures`` array of the finalized local store at ``path`` from
    the image folder ``images``; the manifest is rewritten last, atomically, so ``verify``
    passes after. Holds the store's write lock meanwhile."""
    started = time.perf_counter()
    root = Path(path)
    store = RelabelStore.open(root)
    signatures, unused = signatures_of(store, images, workers=workers, progress=progress)
    (root / PROGRESS_DIR).mkdir(exist_ok=True)
    lock = WriteLock.acquire(root)
    try:
        if RelabelStore.open(root).manifest != store.manifest:
            raise InputError(f"{root} changed while it was being signed; run sign again")
        group = zarr.open_group(LocalStore(root), mode="r+")
        write_signatures(group, signatures)
        manifest = build_manifest(root)
        write_manifest(root, manifest)
    finally:
        lock.release_and_remove_progress()
    return SignResult(
        path=root,
        records=len(store),
        unused_images=unused,
        seconds=time.perf_counter() - started,
        digest=manifest.digest,
    )
