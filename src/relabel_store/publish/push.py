"""``push``: publish a finalized store to the Hub or any fsspec URL, by one plan.

1. Refuse anything but a finalized store that matches its manifest, with every file a regular
   file inside it (no symlinks): nothing outside the store is ever read or sent.
2. List what the destination already holds: refuse one with files of its own in the store's
   folders and no store (they would be taken for an earlier store's and deleted); upload only
   the files that differ, in batches
   (``zarr.json`` first, so a partial upload is recognisable as an unfinished store). An old
   manifest that would describe a store being replaced is removed in the first batch.
3. Last: delete the files of an earlier store that this one does not have, and write
   ``manifest.json`` (its presence marks the store complete; on the Hub, with the dataset card).
4. List the destination again and compare every file with the manifest; any difference raises.

Re-running after an interruption uploads only what is missing. The destinations themselves live
in :mod:`relabel_store.publish.destinations`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relabel_store._progress import Progress
from relabel_store.errors import (
    ConfigurationError,
    CorruptDataError,
    IncompleteStoreError,
    RemoteError,
    StoreNotFoundError,
)
from relabel_store.format._io import regular_file_stat
from relabel_store.format.manifest import (
    Manifest,
    ManifestEntry,
    VerifyReport,
    compare_files,
    verify_store,
)
from relabel_store.format.metadata import MANIFEST_NAME, StoreMetadata, read_group_attribute
from relabel_store.publish.card import dataset_card
from relabel_store.publish.destinations import Destination, RemoteFile
from relabel_store.read.resolve import UrlTarget, resolve_destination

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_FILES",
    "PushResult",
    "check_publishable",
    "publish",
    "push",
]

DEFAULT_BATCH_FILES = 256
DEFAULT_BATCH_BYTES = 1 << 30

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


@dataclass
class PushResult:
    """What ``push`` did. ``commit`` is the Hub commit holding the store (None for URLs)."""

    destination: str  # hf://datasets/org/name@<commit>[/subdir], or the URL
    url: str  # a browsable URL (the Hub tree at that commit), or the URL itself
    commit: str | None
    digest: str
    files: int
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: int = 0
    load_hint: str = ""

    def summary(self) -> str:
        lines = [
            f"pushed store {self.digest} ({self.files} files: {len(self.uploaded)} uploaded, "
            f"{len(self.skipped)} already there"
            + (f", {len(self.deleted)} stale deleted" if self.deleted else "")
            + ")",
        ]
        if self.commit:
            lines.append(f"commit: {self.commit}")
        lines += [f"url:    {self.url}", "verified: every remote file matches the manifest"]
        if self.load_hint:
            lines.append(f"load:   {self.load_hint}")
        return "\n".join(lines)


def check_publishable(store: str | os.PathLike[str]) -> tuple[Path, StoreMetadata, Manifest]:
    """The store's root, metadata and manifest, if it is finalized, every file it lists is a
    regular file inside it (no symlinks), and it matches its manifest; otherwise raise
    (StoreNotFoundError / IncompleteStoreError / UnsafePathError / CorruptDataError)."""
    root = Path(store)
    if regular_file_stat(root, "zarr.json") is None:
        raise StoreNotFoundError(f"no relabel-store store at {root} (no zarr.json); check the path")
    raw = (root / "zarr.json").read_bytes()
    meta = StoreMetadata.from_json(read_group_attribute(raw, str(root)), where=str(root))
    if not meta.complete or regular_file_stat(root, MANIFEST_NAME) is None:
        raise IncompleteStoreError(
            f"refusing to publish {root}: the store is not finalized (generation still running or "
            "interrupted). Re-run the `relabel-store generate` command that created it to finish "
            "it, then push again."
        )
    manifest = Manifest.from_bytes((root / MANIFEST_NAME).read_bytes(), where=str(root))
    for e in manifest.entries:  # before anything is hashed: never read through a link
        regular_file_stat(root, e.path)
    report = verify_store(root)
    if not report.ok:
        problems = "\n  ".join(report.lines()[:20])
        more = len(report.lines()) - 20
        raise CorruptDataError(
            f"refusing to publish {root}: it does not match its manifest "
            f"({len(report.lines())} problem(s)):\n  {problems}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nRun `relabel-store verify` for the full report; regenerate the store to repair it."
        )
    return root, meta, manifest


def push(
    store: str | os.PathLike[str],
    destination: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    license: str = "other",
    pretty_name: str | None = None,
    card: bool = True,
    commit_message: str | None = None,
    batch_files: int = DEFAULT_BATCH_FILES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    endpoint: str | None = None,
    storage_options: dict[str, Any] | None = None,
    log: Log = _silent,
    progress: bool | None = None,
) -> PushResult:
    """Publish a finalized, verified store to a Hub dataset repo or an fsspec URL.

    ``destination``: ``org/name`` or ``hf://datasets/org/name[@branch][/subdir]`` (``revision``
    names the branch, created if needed) or any fsspec URL. Re-running after an interruption
    uploads only what the remote does not have yet. The remote is checked against the manifest
    at the end; any difference raises :class:`CorruptDataError`. ``progress``: bytes uploaded,
    as a bar on a terminal and as a line every ``$RELABEL_STORE_PROGRESS_INTERVAL`` seconds
    elsewhere (None), always (True) or never (False).
    """
    root, meta, manifest = check_publishable(store)
    target = resolve_destination(destination, revision)
    dest: Destination
    if isinstance(target, UrlTarget):
        from relabel_store.publish.destinations.fsspec import FsspecDestination

        dest = FsspecDestination(target.url, storage_options)
    else:
        from relabel_store.publish.destinations.hub import HubDestination

        card_text = (
            dataset_card(
                meta,
                manifest,
                repo_id=target.repo_id,
                subdir=target.subdir,
                license=license,
                pretty_name=pretty_name,
            )
            if card
            else None
        )
        dest = HubDestination(
            target, token=token, endpoint=endpoint, private=private, card=card_text
        )
    title = commit_message or f"relabel-store: store {manifest.digest[:12]}"
    return publish(
        root,
        manifest,
        dest,
        title=title,
        batch_files=batch_files,
        batch_bytes=batch_bytes,
        log=log,
        progress=progress,
    )


def publish(
    root: Path,
    manifest: Manifest,
    dest: Destination,
    *,
    title: str,
    batch_files: int = DEFAULT_BATCH_FILES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    log: Log = _silent,
    progress: bool | None = None,
) -> PushResult:
    """Carry out the plan (module docstring) for the checked store at ``root``."""
    manifest_raw = (root / MANIFEST_NAME).read_bytes()
    manifest_entry = _entry_of(MANIFEST_NAME, manifest_raw)
    found = dest.open()
    _refuse_foreign(dest.location, manifest, found)
    todo = _upload_order(
        [e for e in manifest.entries if not dest.holds(found.get(e.path), e, root / e.path)]
    )
    skipped = [e.path for e in manifest.entries if e not in todo]
    old_manifest = found.get(MANIFEST_NAME)
    manifest_same = dest.holds(old_manifest, manifest_entry, manifest_raw)
    stale = _stale(manifest, found)
    log(
        f"{dest.location}: {len(todo)} of {len(manifest.entries)} files to upload "
        f"({sum(e.size for e in todo)} bytes), {len(skipped)} already there"
    )

    batches = _batches(todo, batch_files, batch_bytes)
    commits = 0
    uploading = Progress(
        sum(e.size for e in todo),
        desc=f"pushing to {dest.location}",
        unit="B",
        show=progress if todo else False,
    )
    with uploading:
        for i, batch in enumerate(batches):
            # An old manifest would describe a store that is being replaced: it goes first, so
            # that nobody opens a half-replaced store as complete.
            delete = (
                [MANIFEST_NAME] if i == 0 and old_manifest is not None and not manifest_same else []
            )
            for e in batch:
                regular_file_stat(root, e.path)  # still a regular file, not a link planted since
            with _resumable(f"push to {dest.location} interrupted in batch {i + 1} of {len(batches)} ({i} batch(es) done)"):  # fmt: skip
                made = dest.change(
                    [(e, root / e.path) for e in batch],
                    delete,
                    f"{title} (data {i + 1}/{len(batches)})",
                )
            commits += made is not None
            uploading.update(sum(e.size for e in batch))
            with uploading.paused():
                log(
                    f"batch {i + 1}/{len(batches)} ({len(batch)} files) done"
                    + (f": {made}" if made else "")
                )

    with _resumable(f"push to {dest.location} interrupted while writing the manifest"):
        made = dest.change(
            [] if manifest_same else [(manifest_entry, manifest_raw)],
            stale,
            f"{title} (manifest)",
            last=True,
        )
    commits += made is not None

    report = _verify(dest, manifest, manifest_entry, manifest_raw, root)
    location, url, commit = dest.published()
    if not report.ok:
        raise CorruptDataError(
            f"{location}: after the push the remote files do not match the manifest:\n  "
            + "\n  ".join(report.lines())
            + "\nSomething else wrote there during the push, or the upload was damaged. Re-run "
            "the push; if it keeps failing, push to a fresh location (or branch: --revision)."
        )
    return PushResult(
        destination=location,
        url=url,
        commit=commit,
        digest=manifest.digest,
        files=len(manifest.entries) + 1,
        uploaded=[e.path for e in todo] + ([] if manifest_same else [MANIFEST_NAME]),
        skipped=skipped + ([MANIFEST_NAME] if manifest_same else []),
        deleted=stale,
        commits=commits,
        load_hint=f'load_relabel("{location}")',
    )


def _verify(
    dest: Destination,
    manifest: Manifest,
    manifest_entry: ManifestEntry,
    manifest_raw: bytes,
    root: Path,
) -> VerifyReport:
    found = dest.list_files()
    report = compare_files(
        manifest,
        {p: f.size for p, f in found.items()},
        lambda e: dest.holds(found[e.path], e, root / e.path),
        extra=_stale(manifest, found),
    )
    if MANIFEST_NAME not in found:
        report.missing.append(MANIFEST_NAME)
    elif not dest.holds(found[MANIFEST_NAME], manifest_entry, manifest_raw):
        report.altered.append(MANIFEST_NAME)
    return report


@contextlib.contextmanager
def _resumable(what: str) -> Iterator[None]:
    """Re-raise a remote failure saying where the push stopped and that a re-run resumes."""
    try:
        yield
    except RemoteError as exc:
        raise RemoteError(
            f"{what}: {exc}\nRe-run the same command to resume; files already there are not "
            "sent again."
        ) from exc


def _entry_of(path: str, data: bytes) -> ManifestEntry:
    return ManifestEntry(path, len(data), hashlib.sha256(data).hexdigest())


def _refuse_foreign(location: str, manifest: Manifest, found: dict[str, RemoteFile]) -> None:
    """Refuse a destination with files of its own in the store's folders (``indices/``,
    ``values/``, ...) and no store (no ``zarr.json``, which a push writes first): the push
    would take them for an earlier store's and delete them. Files elsewhere (a dataset's own,
    another store in a subfolder) are left alone and do not stop it."""
    if "zarr.json" in found:  # a store, or an interrupted push of one: replaced by this one
        return
    foreign = _stale(manifest, found)
    if foreign:
        raise ConfigurationError(
            f"{location} holds {len(foreign)} file(s) in the folders a store's files go to, and "
            f"no store ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): the "
            "push would delete them. Push to an empty folder or repository, or to a new "
            "subfolder of this one (…/name.relabel.zarr)."
        )


def _stale(manifest: Manifest, found: dict[str, RemoteFile]) -> list[str]:
    """Files inside the store's folders that the manifest does not list (left over from an
    earlier store published to the same place)."""
    listed = manifest.by_path()
    dirs = {e.path.split("/", 1)[0] for e in manifest.entries if "/" in e.path}
    return sorted(p for p in found if p not in listed and "/" in p and p.split("/", 1)[0] in dirs)


def _upload_order(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """The group's zarr.json first (so a partial upload is recognisable as an unfinished store),
    then the rest by path; the manifest is not among them (it goes last, separately)."""
    return sorted(entries, key=lambda e: (e.path != "zarr.json", e.path))


def _batches(
    entries: list[ManifestEntry], max_files: int, max_bytes: int
) -> list[list[ManifestEntry]]:
    out: list[list[ManifestEntry]] = []
    cur: list[ManifestEntry] = []
    size = 0
    for e in entries:
        if cur and (len(cur) >= max_files or size + e.size > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += e.size
    if cur:
        out.append(cur)
    return out
