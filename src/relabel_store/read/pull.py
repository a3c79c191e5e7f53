"""``pull``: download a whole remote store and verify it, into the cache or into a folder.

Every file is checked against the manifest's size and sha256 before it is kept; a download never
reads past the manifest's size; nothing is written or read through a symlink in the destination.
Re-running resumes: files already there (in the cache, or verified in the folder) are not
downloaded again. Into a folder, ``manifest.json`` is written last: its presence marks a
complete copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from relabel_store._parallel import run_all
from relabel_store._progress import Progress
from relabel_store.errors import ConfigurationError, CorruptDataError
from relabel_store.format._io import (
    atomic_write_bytes,
    open_regular,
    regular_file_stat,
    sha256_file,
)
from relabel_store.format.manifest import ManifestEntry, VerifyReport, store_files, verify_dir
from relabel_store.format.metadata import MANIFEST_NAME
from relabel_store.read.remote import open_remote
from relabel_store.read.resolve import LocalTarget, resolve
from relabel_store.read.sources.cached import ShardCacheSource, write_verified

__all__ = ["PullResult", "pull"]


@dataclass
class PullResult:
    """Where the pulled store is, its manifest digest, and what was downloaded."""

    path: Path
    digest: str
    files: int
    downloaded: int
    report: VerifyReport


def pull(
    name_or_url: str,
    to: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int = 8,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> PullResult:
    """Download a whole remote store and verify it: into the cache (``to=None``; the store is
    then read locally by every later ``load_relabel`` of the same revision) or into folder
    ``to``, which becomes a plain local store. ``progress``: bytes in place, as a bar on a
    terminal and as a line every ``$RELABEL_STORE_PROGRESS_INTERVAL`` seconds elsewhere
    (None), always (True) or never (False)."""
    resolved = resolve(name_or_url, revision)
    if isinstance(resolved.target, LocalTarget):
        raise ConfigurationError(
            f"{name_or_url} is a local store already; there is nothing to pull"
        )
    source = open_remote(
        resolved, mode="cache", cache_dir=cache_dir, token=token, storage_options=storage_options
    )
    manifest = source.manifest
    if log is not None:
        log(f"{source.location}: {len(manifest.entries) + 1} files, {manifest.total_bytes} bytes")
    fetching = Progress(
        manifest.total_bytes, desc=f"pulling {source.location}", unit="B", show=progress
    )

    def done(entry: ManifestEntry) -> None:
        fetching.update(entry.size)

    with fetching:
        if to is None:
            before = source.downloads
            source.fetch(None, threads=threads, done=done)
            dest = source.root
            downloaded = source.downloads - before
        else:
            dest = Path(to)
            downloaded = _pull_into(source, dest, threads, done)
    report = verify_dir(dest, manifest)
    if not report.ok:
        raise CorruptDataError(
            f"{dest}: the pulled store does not match the manifest of {source.location}:\n  "
            + "\n  ".join(report.lines())
        )
    return PullResult(dest, manifest.digest, len(manifest.entries) + 1, downloaded, report)


def _pull_into(
    source: ShardCacheSource, dest: Path, threads: int, done: Callable[[ManifestEntry], None]
) -> int:
    """Fill folder ``dest`` with the store's verified files, calling ``done`` with each one's
    entry; return how many were downloaded."""
    manifest = source.manifest
    raw = source.read(MANIFEST_NAME)
    assert raw is not None
    if regular_file_stat(dest, MANIFEST_NAME) is not None:
        if (dest / MANIFEST_NAME).read_bytes() == raw:
            for e in manifest.entries:  # a finished pull of the same store: verify_dir checks it
                done(e)
            return 0
        raise ConfigurationError(
            f"{dest} already holds a different store (its manifest differs); choose another --to"
        )
    if dest.exists():
        if not dest.is_dir():
            raise ConfigurationError(f"{dest} exists and is not a directory")
        foreign = sorted(set(store_files(dest)) - set(manifest.by_path()))
        if foreign:
            raise ConfigurationError(
                f"{dest} is not empty and is not an interrupted pull of this store (it has "
                f"{foreign[0]!r}); choose another --to"
            )

    def place(e: ManifestEntry) -> int:
        st = regular_file_stat(dest, e.path)  # UnsafePathError for a link on the way
        if st is not None and st.st_size == e.size and sha256_file(dest / e.path) == e.sha256:
            return 0  # from an interrupted pull
        if source.is_cached(e.path):

            def copy(out: BinaryIO) -> None:
                with open_regular(source.root, e.path) as src:  # never through a link
                    shutil.copyfileobj(src, out, 1 << 20)

            write_verified(dest, e, source.location, copy)
            return 0

        def download(out: BinaryIO) -> None:
            source.remote.download(e.path, out, e.size + 1)

        write_verified(dest, e, source.location, download)
        return 1

    def one(e: ManifestEntry) -> int:
        fetched = place(e)
        done(e)
        return fetched

    dest.mkdir(parents=True, exist_ok=True)
    downloaded = sum(run_all(one, manifest.entries, threads))
    atomic_write_bytes(dest / MANIFEST_NAME, raw)  # last: its presence marks a complete copy
    return downloaded
