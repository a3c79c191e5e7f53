"""Opening a remote store: pin its version, fetch and check its manifest, pick its cache entry.

:func:`open_remote` takes a resolved Hub repo or fsspec URL (see :mod:`relabel_store.read.resolve`)
and returns the :class:`~relabel_store.read.sources.cached.ShardCacheSource` (``mode="cache"``) or
:class:`~relabel_store.read.sources.ranged.RangeSource` (``mode="range"``) that reads it:

- a Hub branch or tag is resolved to its 40-hex commit once, here; every later read addresses
  that commit, so the store cannot change under a running job and cached files need no request;
- an fsspec URL is pinned by the digest of the manifest it serves;
- the manifest is always fetched first (or taken from the cache entry) and parsed, every path
  checked, before anything is written to the cache; a registry entry's pinned digest is compared
  with it.

With ``HF_HUB_OFFLINE=1`` nothing is requested: branches resolve through the cache's ``refs/``,
URLs through the digest they served last, and only files already in the cache can be read.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Literal

from relabel_store.errors import (
    ConfigurationError,
    CorruptDataError,
    IncompleteStoreError,
    RemoteError,
    StoreNotFoundError,
)
from relabel_store.format._io import open_regular
from relabel_store.format.manifest import Manifest
from relabel_store.format.metadata import MANIFEST_NAME
from relabel_store.read.cache import FILES_DIR, CacheDir, CacheEntry
from relabel_store.read.hub_names import HubTarget, is_commit_sha
from relabel_store.read.resolve import Resolved, UrlTarget
from relabel_store.read.sources import Remote, is_offline, offline_error
from relabel_store.read.sources.cached import ShardCacheSource
from relabel_store.read.sources.fsspec import FsspecRemote
from relabel_store.read.sources.hub import HubRemote, endpoint_url, resolve_hub_revision
from relabel_store.read.sources.ranged import RangeSource

__all__ = ["MODES", "open_remote"]

Mode = Literal["cache", "range"]
MODES = ("cache", "range")


def open_remote(
    resolved: Resolved,
    *,
    mode: Mode = "cache",
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    storage_options: dict[str, Any] | None = None,
    endpoint: str | None = None,
) -> ShardCacheSource:
    """The source reading a remote store (a Hub repo or fsspec URL) through the cache."""
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
    target = resolved.target
    cache = CacheDir(cache_dir)
    cls = RangeSource if mode == "range" else ShardCacheSource
    try:
        if isinstance(target, HubTarget):
            return _open_hub(target, resolved.digest, cache, cls, token, endpoint)
        if isinstance(target, UrlTarget):
            return _open_url(target, resolved.digest, cache, cls, storage_options)
    except (RemoteError, StoreNotFoundError) as exc:
        if not resolved.hint:  # a registered name says how to make the store yourself
            raise
        raise type(exc)(f"{exc}\n{resolved.hint}") from None
    raise ConfigurationError(f"{target} is a local store; open it with RelabelStore.open")


def _open_hub(
    target: HubTarget,
    digest: str | None,
    cache: CacheDir,
    cls: type[ShardCacheSource],
    token: str | None,
    endpoint: str | None,
) -> ShardCacheSource:
    endpoint = endpoint_url(endpoint)
    rev = target.revision or "main"
    ref_file = cache.hub_ref(endpoint, target.repo_id, rev)
    if is_commit_sha(rev):
        commit = rev
    elif is_offline():
        found = cache.read_ref(ref_file)
        if found is None or not is_commit_sha(found):
            raise offline_error(f"{target.url} (revision {rev!r})")
        commit = found
    else:
        commit = resolve_hub_revision(target.repo_id, rev, endpoint=endpoint, token=token)
    remote = HubRemote(target.repo_id, commit, target.subdir, endpoint=endpoint, token=token)
    entry = cache.hub_entry(endpoint, target.repo_id, commit, target.subdir)
    source = _source(cls, remote, entry, _cached_or_fetched_manifest(remote, entry), digest)
    if commit != rev:
        cache.write_ref(ref_file, commit)
    return source


def _open_url(
    target: UrlTarget,
    digest: str | None,
    cache: CacheDir,
    cls: type[ShardCacheSource],
    storage_options: dict[str, Any] | None,
) -> ShardCacheSource:
    remote = FsspecRemote(target.url, storage_options)
    if is_offline():
        current = cache.read_ref(cache.url_ref(remote.location))
        if current is None:
            raise offline_error(remote.location)
        entry = cache.url_entry(remote.location, current)
        raw = _cached_or_fetched_manifest(remote, entry)
    else:
        raw = _fetch_manifest(remote)
        current = Manifest.from_bytes(raw, where=f"{remote.location}/{MANIFEST_NAME}").digest
        entry = cache.url_entry(remote.location, current)
    source = _source(cls, remote, entry, raw, digest)
    cache.record_url(remote.location, current)
    return source


def _cached_or_fetched_manifest(remote: Remote, entry: CacheEntry) -> bytes:
    """The manifest from the cache entry if there (no request), else from the remote."""
    files = entry.folder(FILES_DIR, create=False)  # a link on the way raises
    with contextlib.suppress(FileNotFoundError), open_regular(files, MANIFEST_NAME) as f:
        return f.read()
    if is_offline():
        raise offline_error(remote.location)
    return _fetch_manifest(remote)


def _fetch_manifest(remote: Remote) -> bytes:
    raw = remote.fetch(MANIFEST_NAME)
    if raw is not None:
        return raw
    if remote.fetch("zarr.json") is not None:
        raise IncompleteStoreError(
            f"{remote.location} has a store without {MANIFEST_NAME}: its upload did not finish "
            "(`relabel-store push` uploads the manifest last) or it was never finalized. Re-run "
            "the push from the finalized local store."
        )
    raise StoreNotFoundError(
        f"no relabel-store store at {remote.location}: it has neither {MANIFEST_NAME} nor "
        "zarr.json. Check the location (a store in a subfolder of a repo is "
        "hf://datasets/<org>/<name>@<revision>/<subfolder>)."
    )


def _source(
    cls: type[ShardCacheSource], remote: Remote, entry: CacheEntry, raw: bytes, digest: str | None
) -> ShardCacheSource:
    if digest is not None:
        # Parse (paths checked) before comparing, and before anything is written.
        found = Manifest.from_bytes(raw, where=f"{remote.location}/{MANIFEST_NAME}").digest
        if found != digest:
            raise CorruptDataError(
                f"{remote.location}: manifest digest {found} is not the pinned digest {digest}; "
                "the registry entry and the published store disagree."
            )
    return cls(remote, entry, raw)
