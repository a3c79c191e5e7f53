"""``load_relabel``: the one entry point training code needs.

A name becomes bytes in three steps, each in its own module: :func:`~relabel_store.read.resolve.resolve`
says what the name means (no request), :func:`~relabel_store.read.remote.open_remote` opens a remote
store through the verified cache (a local folder is read in place), and
:class:`~relabel_store.read.reader.RelabelStore` reads records from that source.
"""

from __future__ import annotations

import os
from typing import Any

from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.read.reader import RelabelStore
from relabel_store.read.remote import Mode, open_remote
from relabel_store.read.resolve import LocalTarget, resolve

__all__ = ["load_relabel"]


def load_relabel(
    name_or_path: str | os.PathLike[str] | RelabelStore,
    revision: str | None = None,
    *,
    mode: Mode = "cache",
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RelabelStore:
    """Open a store: a local path, a Hub dataset repo, an fsspec URL, or a registered name.

    - ``"path/to/train.relabel.zarr"``: a local store, read in place;
    - ``"hf://datasets/org/name@REV"`` (optionally ``/subfolder``), or ``"org/name"`` with
      ``revision=``: a store on the Hugging Face Hub; a branch or tag is pinned to its commit at
      open;
    - ``"s3://bucket/store.relabel.zarr"``, ``"file:///..."``, any fsspec URL
      (``storage_options`` are passed to fsspec);
    - ``"imagenet-relabel"``: a name from :mod:`relabel_store.read.registry`;
    - an open :class:`RelabelStore`, returned as it is (so every API that takes a store location
      takes an open store too).

    Remote stores are read through a verified local cache (``mode="cache"``: each shard is
    downloaded whole on first touch and checked against the manifest) or with ranged requests
    (``mode="range"``, for sparse access). ``cache_dir`` defaults to ``$RELABEL_STORE_CACHE`` or
    ``$HF_HOME/relabel-store``; ``token`` to huggingface_hub's usual sources. With
    ``HF_HUB_OFFLINE=1`` stores open from the cache without any request.
    """
    if isinstance(name_or_path, RelabelStore):
        if revision is not None:
            raise ConfigurationError(
                f"revision={revision!r} applies to a store location, not to an open store"
            )
        return name_or_path
    if not isinstance(name_or_path, str | os.PathLike):
        raise ArgumentTypeError(
            "a store is a RelabelStore or its location as str or os.PathLike (a local path, "
            "a Hub repo 'org/name' or 'hf://datasets/org/name@rev', an fsspec URL or a "
            f"registered name); got {type(name_or_path).__name__}"
        )
    resolved = resolve(name_or_path, revision)
    if isinstance(resolved.target, LocalTarget):
        return RelabelStore.open(resolved.target.path)
    source = open_remote(
        resolved, mode=mode, cache_dir=cache_dir, token=token, storage_options=storage_options
    )
    try:
        return RelabelStore(source)
    except BaseException:
        source.close()
        raise
