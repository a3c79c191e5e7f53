"""``push``: publish a finalized store to the Hub or any fsspec URL, by one plan.

1. Refuse anything but a finalized store that matches its manifest, with every file a regular
   file inside it (no symlinks): nothing outside the store is ever read or sent.
2. List what the destination already holds. Push deletes only files an earlier push wrote: those
   its manifest lists (or, after an interrupted replacement, the record ``.relabel-push.json``
   that push left). Any other file in the store's folders is refused, with the list, before
   anything is sent; what will be deleted is logged before anything is deleted. Upload only the
   files that differ, in batches (``zarr.json`` first, so a partial upload is recognisable as an
   unfinished store). An old manifest that would describe a store being replaced is removed in
   the first batch, and the record of what the earlier push owned written in its place.
3. Last: delete the files of the earlier store that this one does not have (and the record),
   and write ``manifest.json`` (its presence marks the store complete; on the Hub, with the
   dataset card).
4. List the destination again and compare every file with the manifest; any difference raises.

Re-running after an interruption uploads only what is missing. The destinations themselves live
in :mod:`relabel_store.publish.destinations`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
    safe_relpath,
    verify_store,
)
from relabel_store.format.metadata import MANIFEST_NAME, StoreMetadata, read_group_attribute
from relabel_store.publish.card import dataset_card
from relabel_store.publish.destinations import Destination, RemoteFile, Upload
from relabel_store.read.resolve import UrlTarget, resolve_destination

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_FILES",
    "PushResult",
    "check_publishable",
    "publish",
    "push",
]

#: What an interrupted replacement leaves at the destination: the files the earlier push wrote
#: (its manifest's), which the push that replaces it may delete. Removed when the push finishes.
OWNED_NAME = ".relabel-push.json"
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
    #: A plan only (``dry_run``): nothing was sent or deleted.
    dry_run: bool = False

    def summary(self) -> str:
        if self.dry_run:
            return "\n".join(
                [
                    f"plan for {self.destination} (dry run: nothing sent, nothing deleted):",
                    f"upload: {len(self.uploaded)} file(s), {len(self.skipped)} already there",
                    f"delete: {len(self.deleted)} file(s) an earlier push wrote"
                    + (": " + ", ".join(self.deleted) if self.deleted else ""),
                ]
            )
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
    dry_run: bool = False,
) -> PushResult:
    """Publish a finalized, verified store to a Hub dataset repo or an fsspec URL.

    ``destination``: ``org/name`` or ``hf://datasets/org/name[@branch][/subdir]`` (``revision``
    names the branch, created if needed) or any fsspec URL. Re-running after an interruption
    uploads only what the remote does not have yet. The remote is checked against the manifest
    at the end; any difference raises :class:`CorruptDataError`. ``progress``: bytes uploaded,
    as a bar on a terminal and as a line every ``$RELABEL_STORE_PROGRESS_INTERVAL`` seconds
    elsewhere (None), always (True) or never (False). ``dry_run``: only plan (list what would
    be uploaded and deleted, see :attr:`PushResult.dry_run`); nothing is created or sent.
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
        dry_run=dry_run,
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
    dry_run: bool = False,
) -> PushResult:
    """Carry out the plan (module docstring) for the checked store at ``root``."""
    manifest_raw = (root / MANIFEST_NAME).read_bytes()
    manifest_entry = _entry_of(MANIFEST_NAME, manifest_raw)
    found = _listing(dest) if dry_run else dest.open()
    owned = _owned(dest, found)
    stale = _deletable(dest.location, manifest, found, owned)
    todo = _upload_order(
        [e for e in manifest.entries if not dest.holds(found.get(e.path), e, root / e.path)]
    )
    skipped = [e.path for e in manifest.entries if e not in todo]
    old_manifest = found.get(MANIFEST_NAME)
    manifest_same = dest.holds(old_manifest, manifest_entry, manifest_raw)
    log(
        f"{dest.location}: {len(todo)} of {len(manifest.entries)} files to upload "
        f"({sum(e.size for e in todo)} bytes), {len(skipped)} already there"
    )
    if stale:  # said before anything is deleted
        shown = ", ".join(stale[:10]) + (
            f", ... ({len(stale) - 10} more)" if len(stale) > 10 else ""
        )
        log(
            f"{dest.location}: will delete {len(stale)} file(s) an earlier push wrote that this "
            f"store does not have, when the upload is complete: {shown}"
        )
    if dry_run:
        return PushResult(
            destination=dest.location,
            url=dest.location,
            commit=None,
            digest=manifest.digest,
            files=len(manifest.entries) + 1,
            uploaded=[e.path for e in todo] + ([] if manifest_same else [MANIFEST_NAME]),
            skipped=skipped + ([MANIFEST_NAME] if manifest_same else []),
            deleted=stale,
            dry_run=True,
        )
    # Until the new manifest is written, a record of what pushes wrote here (the earlier
    # store's files and this one's) stays at the destination: a push re-run after an
    # interruption, of this store or another, may delete those files, and nothing else.
    record: list[Upload] = []
    if todo:
        mine = owned | {e.path for e in manifest.entries}
        body = json.dumps({"version": 1, "files": sorted(mine)}, indent=0).encode()
        record = [(_entry_of(OWNED_NAME, body), body)]

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
                    (record if i == 0 else []) + [(e, root / e.path) for e in batch],
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

    leftover = [OWNED_NAME] if OWNED_NAME in found or record else []
    with _resumable(f"push to {dest.location} interrupted while writing the manifest"):
        made = dest.change(
            [] if manifest_same else [(manifest_entry, manifest_raw)],
            [p for p in stale if p != MANIFEST_NAME] + leftover,
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


def _listing(dest: Destination) -> dict[str, RemoteFile]:
    """What the destination holds, without creating anything (a dry run): nothing when it does
    not exist yet."""
    try:
        return dest.list_files()
    except StoreNotFoundError:
        return {}


def _owned(dest: Destination, found: dict[str, RemoteFile]) -> set[str]:
    """The files an earlier push wrote here: those its manifest lists, and those the record of
    an interrupted replacement names. Only these may be deleted."""
    owned: set[str] = set()
    if MANIFEST_NAME in found:
        raw = dest.read(MANIFEST_NAME)
        if raw is not None:
            where = f"{dest.location}/{MANIFEST_NAME}"
            owned |= {e.path for e in Manifest.from_bytes(raw, where=where).entries}
    if OWNED_NAME in found:
        raw = dest.read(OWNED_NAME)
        try:
            record = json.loads(raw or b"")
            owned |= {safe_relpath(p) for p in record["files"]}
        except (ValueError, KeyError, TypeError):
            raise CorruptDataError(
                f"{dest.location}/{OWNED_NAME} (what an interrupted push may delete) is "
                "damaged; delete it, and the files of the earlier store, by hand."
            ) from None
    return owned


def _deletable(
    location: str, manifest: Manifest, found: dict[str, RemoteFile], owned: set[str]
) -> list[str]:
    """The files this push deletes: those an earlier push wrote (``owned``) that this store
    does not have. Raise, listing them, if the store's folders hold any file no push wrote:
    a user's own file there (``labels/my_labels.csv``) is never deleted."""
    listed = manifest.by_path()
    foreign = [p for p in _stale(manifest, found) if p not in owned]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigurationError(
            f"{location} holds {len(foreign)} file(s) in the folders a store's files go to that "
            f"no earlier push wrote ({shown}). push deletes only files an earlier push wrote and "
            "never yours: move them elsewhere, or push to an empty folder or repository, or to "
            "a new subfolder of this one (…/name.relabel.zarr). Nothing was sent."
        )
    return sorted(p for p in owned if p in found and p not in listed)


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
