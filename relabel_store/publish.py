"""Publishing and fetching whole stores: ``push`` to the Hub or any fsspec URL, ``pull`` back.

``push`` refuses anything but a finalized store that matches its manifest. To the Hub it goes
through huggingface_hub (``create_repo``, then ``create_commit`` in batches): it first lists what
the target branch already holds and uploads only files that differ, so re-running an interrupted
push sends only what is missing; the manifest goes last (its presence marks a complete store), with
the dataset card; then the remote file list is checked against the manifest. To an fsspec URL it
copies files the same way (manifest last) and checks them by hashing what was written.

``pull`` downloads every file of a remote store through the verified cache (or into a folder of
your choice) and checks the result against the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relabel_store._io import atomic_write_bytes, sha256_file, sha256_stream
from relabel_store.errors import (
    CorruptDataError,
    FormatError,
    IncompleteStoreError,
    RemoteError,
    StoreNotFoundError,
)
from relabel_store.format import ATTRS_KEY, MANIFEST_NAME, StoreMetadata
from relabel_store.manifest import (
    Manifest,
    ManifestEntry,
    VerifyReport,
    safe_relpath,
    store_files,
    verify_dir,
    verify_store,
)
from relabel_store.remote import (
    HF_PREFIX,
    HubTarget,
    UrlTarget,
    _endpoint,
    hub_errors,
    looks_like_repo_id,
    parse_hf_url,
)
from relabel_store.sources.cached import ShardCacheSource, write_verified

DEFAULT_BATCH_FILES = 256
DEFAULT_BATCH_BYTES = 1 << 30
CARD_NAME = "README.md"
PAPER = "https://arxiv.org/abs/2101.05022"
# huggingface_hub 2.4's non-Xet LFS upload passes a file object as `data=` to httpx2, which
# deprecates that; the warning is the client library's business, not our users'.
_HTTPX2_DATA_WARNING = r"Use 'content=<\.\.\.>' to upload raw bytes/text content\."

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


# -- what may be published ----------------------------------------------------------------------


def check_publishable(store: str | os.PathLike[str]) -> tuple[Path, StoreMetadata, Manifest]:
    """The store's root, metadata and manifest, if it is finalized and matches its manifest;
    otherwise raise (IncompleteStoreError / CorruptDataError / StoreNotFoundError)."""
    root = Path(store)
    if not (root / "zarr.json").is_file():
        raise StoreNotFoundError(f"no relabel-store store at {root} (no zarr.json); check the path")
    try:
        attrs = json.loads((root / "zarr.json").read_bytes()).get("attributes", {})
    except ValueError:
        raise FormatError(f"{root}/zarr.json is not valid JSON; the store is damaged") from None
    meta = StoreMetadata.from_json(attrs.get(ATTRS_KEY), where=str(root))
    if not meta.complete or not (root / MANIFEST_NAME).is_file():
        raise IncompleteStoreError(
            f"refusing to publish {root}: the store is not finalized (generation still running or "
            "interrupted). Re-run the `relabel-store generate` command that created it to finish "
            "it, then push again."
        )
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
    manifest = Manifest.from_bytes((root / MANIFEST_NAME).read_bytes(), where=str(root))
    return root, meta, manifest


# -- destinations ---------------------------------------------------------------------------------


def parse_destination(destination: str, revision: str | None = None) -> HubTarget | UrlTarget:
    """``org/name``, ``hf://datasets/org/name[@branch][/subdir]`` or any fsspec URL."""
    if destination.startswith(HF_PREFIX):
        target = parse_hf_url(destination, revision)
    elif "://" in destination:
        if revision is not None:
            raise ValueError("--revision/--branch applies to Hub destinations only")
        return UrlTarget(destination.rstrip("/"))
    elif looks_like_repo_id(destination):
        target = parse_hf_url(f"{HF_PREFIX}datasets/{destination}", revision)
    else:
        raise ValueError(
            f"{destination!r} is not a destination: give a Hub dataset repo id (org/name), an "
            "hf://datasets/org/name URL, or an fsspec URL such as s3://bucket/store.relabel.zarr"
        )
    if target.revision and re.fullmatch(r"[0-9a-f]{40}", target.revision):
        raise ValueError(
            f"cannot push to commit {target.revision}: give a branch name (it is created if needed)"
        )
    return target


@contextlib.contextmanager
def _quiet_client_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_HTTPX2_DATA_WARNING, category=DeprecationWarning)
        yield


def git_blob_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports for a regular, non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git_blob_oid_file(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- push -----------------------------------------------------------------------------------------


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
) -> PushResult:
    """Publish a finalized, verified store to a Hub dataset repo or an fsspec URL.

    ``destination``: ``org/name`` or ``hf://datasets/org/name[@branch][/subdir]`` (``revision``
    names the branch, created if needed) or any fsspec URL. Re-running after an interruption
    uploads only what the remote does not have yet. The remote is checked against the manifest
    at the end; any difference raises :class:`CorruptDataError`.
    """
    root, meta, manifest = check_publishable(store)
    target = parse_destination(destination, revision)
    if isinstance(target, UrlTarget):
        return _push_url(root, manifest, target.url, storage_options or {}, log)
    return _push_hub(
        root,
        meta,
        manifest,
        target,
        private=private,
        token=token,
        license=license,
        pretty_name=pretty_name,
        card=card,
        commit_message=commit_message,
        batch_files=batch_files,
        batch_bytes=batch_bytes,
        endpoint=_endpoint(endpoint),
        log=log,
    )


def _hub_listing(api: Any, repo_id: str, revision: str, subdir: str | None) -> dict[str, Any]:
    """Store-relative path -> RepoFile for every file under ``subdir`` (or the repo root)."""
    from huggingface_hub.errors import EntryNotFoundError

    prefix = f"{subdir}/" if subdir else ""
    out = {}
    try:
        for item in api.list_repo_tree(
            repo_id, path_in_repo=subdir, recursive=True, revision=revision, repo_type="dataset"
        ):
            if hasattr(item, "blob_id") and item.path.startswith(prefix):
                out[item.path[len(prefix) :]] = item
    except EntryNotFoundError:  # the subfolder does not exist yet
        return {}
    return out


def _matches(entry: ManifestEntry, remote: Any, local: Path) -> bool:
    """Whether a remote file (RepoFile) holds exactly the bytes the manifest describes: LFS/Xet
    files by their sha256, regular files by their git blob id (computed from the verified local
    file)."""
    if remote is None or remote.size != entry.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == entry.sha256
    return remote.blob_id == _git_blob_oid_file(local)


def _store_dirs(manifest: Manifest) -> set[str]:
    return {e.path.split("/", 1)[0] for e in manifest.entries if "/" in e.path}


def _stale(manifest: Manifest, remote_paths: set[str] | list[str]) -> list[str]:
    """Remote files inside the store's folders that the manifest does not list (left over from
    an earlier store pushed to the same place)."""
    listed = manifest.by_path()
    dirs = _store_dirs(manifest)
    return sorted(
        p for p in remote_paths if p not in listed and "/" in p and p.split("/", 1)[0] in dirs
    )


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


def _push_hub(
    root: Path,
    meta: StoreMetadata,
    manifest: Manifest,
    target: HubTarget,
    *,
    private: bool,
    token: str | None,
    license: str,
    pretty_name: str | None,
    card: bool,
    commit_message: str | None,
    batch_files: int,
    batch_bytes: int,
    endpoint: str,
    log: Log,
) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    repo_id, subdir = target.repo_id, target.subdir
    branch = target.revision or "main"
    prefix = f"{subdir}/" if subdir else ""
    where = f"{HF_PREFIX}datasets/{repo_id}@{branch}" + (f"/{subdir}" if subdir else "")
    api = HfApi(endpoint=endpoint, token=token)
    digest = manifest.digest
    title = commit_message or f"relabel-store: store {digest[:12]}"

    with hub_errors(where):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        remote = _hub_listing(api, repo_id, branch, subdir)
    todo = _upload_order(
        [e for e in manifest.entries if not _matches(e, remote.get(e.path), root / e.path)]
    )
    skipped = [e.path for e in manifest.entries if e not in todo]
    manifest_raw = (root / MANIFEST_NAME).read_bytes()
    remote_manifest = remote.get(MANIFEST_NAME)
    manifest_same = (
        remote_manifest is not None
        and remote_manifest.lfs is None
        and remote_manifest.blob_id == git_blob_oid(manifest_raw)
    )
    stale = _stale(manifest, list(remote))
    log(
        f"{where}: {len(todo)} of {len(manifest.entries)} files to upload "
        f"({sum(e.size for e in todo)} bytes), {len(skipped)} already there"
    )

    batches = _batches(todo, batch_files, batch_bytes)
    commit: str | None = None
    commits = 0
    for i, batch in enumerate(batches):
        ops: list[Any] = []
        if i == 0 and remote_manifest is not None and not manifest_same:
            # The old manifest would describe a store that is being replaced: remove it first,
            # so that nobody opens a half-replaced store as complete.
            ops.append(CommitOperationDelete(prefix + MANIFEST_NAME))
        ops += [CommitOperationAdd(prefix + e.path, str(root / e.path)) for e in batch]
        try:
            with hub_errors(where), _quiet_client_warnings():
                info = api.create_commit(
                    repo_id,
                    ops,
                    commit_message=f"{title} (data {i + 1}/{len(batches)})",
                    revision=branch,
                    repo_type="dataset",
                )
        except Exception as exc:
            raise RemoteError(
                f"push to {where} interrupted in batch {i + 1} of {len(batches)} "
                f"({i} batch(es) committed): {exc}\nRe-run the same command to resume; files "
                "already on the Hub are not sent again."
            ) from exc
        commit, commits = info.oid, commits + 1
        log(f"committed batch {i + 1}/{len(batches)} ({len(batch)} files): {commit}")

    final: list[Any] = []
    card_text = None
    if card:
        card_text = dataset_card(
            meta, manifest, repo_id=repo_id, subdir=subdir, license=license, pretty_name=pretty_name
        )
        with hub_errors(where):
            current = api.get_paths_info(repo_id, [CARD_NAME], revision=branch, repo_type="dataset")
        if not current or getattr(current[0], "blob_id", None) != git_blob_oid(card_text.encode()):
            final.append(CommitOperationAdd(CARD_NAME, card_text.encode()))
    final += [CommitOperationDelete(prefix + p) for p in stale]
    if not manifest_same:
        final.append(CommitOperationAdd(prefix + MANIFEST_NAME, manifest_raw))
    if final:
        try:
            with hub_errors(where), _quiet_client_warnings():
                info = api.create_commit(
                    repo_id,
                    final,
                    commit_message=f"{title} (manifest{' and dataset card' if card_text else ''})",
                    commit_description=f"relabel-store manifest digest: {digest}",
                    revision=branch,
                    repo_type="dataset",
                )
        except Exception as exc:
            raise RemoteError(
                f"push to {where} interrupted while committing the manifest: {exc}\n"
                "Re-run the same command to resume; the data files are already on the Hub."
            ) from exc
        commit, commits = info.oid, commits + 1
    if commit is None:
        with hub_errors(where):
            commit = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
    assert commit is not None

    report = verify_hub(repo_id, commit, manifest, root, subdir=subdir, api=api)
    if not report.ok:
        raise CorruptDataError(
            f"{HF_PREFIX}datasets/{repo_id}@{commit}: after the push the remote files do not match "
            "the manifest:\n  " + "\n  ".join(report.lines()) + "\nSomething else wrote to the "
            "branch during the push, or the upload was damaged. Re-run the push; if it keeps "
            "failing, push to a fresh branch (--revision)."
        )
    location = f"{HF_PREFIX}datasets/{repo_id}@{commit}" + (f"/{subdir}" if subdir else "")
    url = f"{endpoint}/datasets/{repo_id}/tree/{commit}" + (f"/{subdir}" if subdir else "")
    hint = f'load_relabel("{location}")'
    return PushResult(
        destination=location,
        url=url,
        commit=commit,
        digest=digest,
        files=len(manifest.entries) + 1,
        uploaded=[e.path for e in todo] + ([] if manifest_same else [MANIFEST_NAME]),
        skipped=skipped + ([MANIFEST_NAME] if manifest_same else []),
        deleted=stale,
        commits=commits,
        load_hint=hint,
    )


def verify_hub(
    repo_id: str,
    commit: str,
    manifest: Manifest,
    root: Path,
    *,
    subdir: str | None = None,
    api: Any = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> VerifyReport:
    """Compare the files of a Hub repo at ``commit`` with ``manifest`` (and the local store at
    ``root`` it was checked against): sizes, LFS sha256 / git blob ids, the manifest itself,
    and stale files in the store's folders."""
    from huggingface_hub import HfApi

    api = api or HfApi(endpoint=_endpoint(endpoint), token=token)
    where = f"{HF_PREFIX}datasets/{repo_id}@{commit}"
    with hub_errors(where):
        remote = _hub_listing(api, repo_id, commit, subdir)
    report = VerifyReport(digest=manifest.digest)
    for e in manifest.entries:
        rf = remote.get(e.path)
        if rf is None:
            report.missing.append(e.path)
            continue
        report.checked += 1
        if rf.size != e.size:
            report.resized.append((e.path, e.size, rf.size))
        elif not _matches(e, rf, root / e.path):
            report.altered.append(e.path)
    rm = remote.get(MANIFEST_NAME)
    if rm is None:
        report.missing.append(MANIFEST_NAME)
    elif rm.lfs is not None or rm.blob_id != git_blob_oid((root / MANIFEST_NAME).read_bytes()):
        report.altered.append(MANIFEST_NAME)
    report.extra = _stale(manifest, list(remote))
    return report


# -- fsspec destinations --------------------------------------------------------------------------


def _remote_sha256(fs: Any, path: str) -> str:
    with fs.open(path, "rb", block_size=1 << 20) as f:
        return sha256_stream(f)[1]


def _remote_files(fs: Any, base: str) -> dict[str, int]:
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for full, info in found.items():
        rel = full[len(base) :].lstrip("/") if full.startswith(base) else None
        if rel and info.get("type", "file") == "file":
            out[rel] = int(info.get("size") or 0)
    return out


def _push_url(
    root: Path, manifest: Manifest, url: str, storage_options: dict[str, Any], log: Log
) -> PushResult:
    import fsspec

    fs, base = fsspec.core.url_to_fs(url, **storage_options)
    base = base.rstrip("/")
    manifest_raw = (root / MANIFEST_NAME).read_bytes()
    try:
        existing = _remote_files(fs, base)
        old_manifest = fs.cat_file(f"{base}/{MANIFEST_NAME}") if MANIFEST_NAME in existing else None
        if old_manifest is not None and old_manifest != manifest_raw:
            fs.rm_file(f"{base}/{MANIFEST_NAME}")  # the old store is being replaced
        uploaded, skipped, verified = [], [], set()
        for e in _upload_order(list(manifest.entries)):
            dest = f"{base}/{e.path}"
            if existing.get(e.path) == e.size and _remote_sha256(fs, dest) == e.sha256:
                skipped.append(e.path)
                verified.add(e.path)
                continue
            fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(root / e.path), dest)
            uploaded.append(e.path)
        log(f"{url}: uploaded {len(uploaded)} files, {len(skipped)} already there")
        stale = _stale(manifest, list(existing))
        for p in stale:
            fs.rm_file(f"{base}/{p}")
        manifest_same = old_manifest == manifest_raw
        if not manifest_same:
            fs.pipe_file(f"{base}/{MANIFEST_NAME}", manifest_raw)
        report = VerifyReport(digest=manifest.digest)
        sizes = _remote_files(fs, base)
        for e in manifest.entries:
            if e.path not in sizes:
                report.missing.append(e.path)
                continue
            report.checked += 1
            if sizes[e.path] != e.size:
                report.resized.append((e.path, e.size, sizes[e.path]))
            elif e.path not in verified and _remote_sha256(fs, f"{base}/{e.path}") != e.sha256:
                report.altered.append(e.path)
        if fs.cat_file(f"{base}/{MANIFEST_NAME}") != manifest_raw:
            report.altered.append(MANIFEST_NAME)
        report.extra = _stale(manifest, list(sizes))
    except (CorruptDataError, RemoteError):
        raise
    except OSError as exc:
        raise RemoteError(
            f"push to {url} failed: {exc}\nRe-run the same command to resume; files already "
            "there are not sent again."
        ) from exc
    if not report.ok:
        raise CorruptDataError(
            f"{url}: after the push the remote files do not match the manifest:\n  "
            + "\n  ".join(report.lines())
        )
    return PushResult(
        destination=url,
        url=url,
        commit=None,
        digest=manifest.digest,
        files=len(manifest.entries) + 1,
        uploaded=uploaded + ([] if manifest_same else [MANIFEST_NAME]),
        skipped=skipped + ([MANIFEST_NAME] if manifest_same else []),
        deleted=stale,
        load_hint=f'load_relabel("{url}")',
    )


# -- dataset card ---------------------------------------------------------------------------------


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` records."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "1B<n<10B"


def dataset_card(
    meta: StoreMetadata,
    manifest: Manifest,
    *,
    repo_id: str,
    subdir: str | None = None,
    license: str = "other",
    pretty_name: str | None = None,
) -> str:
    """README.md for the store's Hub repo: YAML front matter plus a description generated from
    the store's metadata."""
    from huggingface_hub import DatasetCardData

    dataset = dict(meta.dataset)
    ann = dict(meta.annotator)
    ds_name = str(dataset.get("name") or "").strip()
    split = dataset.get("split")
    h, w = meta.grid
    tags = ["relabel", "label-maps", "soft-labels", "zarr"]
    if "imagenet" in ds_name.lower():
        tags.append("imagenet")
    name = pretty_name or (
        f"ReLabel maps for {ds_name}" + (f" ({split})" if split else "") if ds_name else repo_id
    )
    data = DatasetCardData(
        license=license,
        pretty_name=name,
        task_categories=["image-classification"],
        size_categories=[size_category(meta.record_count)],
        source_datasets=[f"extended|{ds_name}"] if ds_name else ["original"],
        annotations_creators=["machine-generated"],
        tags=tags,
        viewer=False,
    )
    location = f"{HF_PREFIX}datasets/{repo_id}" + (f"/{subdir}" if subdir else "")
    load_call = (
        f'load_relabel("{location}")  # pin: "{HF_PREFIX}datasets/{repo_id}@<commit sha>/{subdir}"'
        if subdir
        else f'load_relabel("{repo_id}")  # pin: revision="<commit sha>"'
    )
    weights = ann.get("weights_sha256")
    rows = [
        ("records", f"{meta.record_count:,}" + (f" ({meta.rows - meta.record_count} images failed, see `errors.jsonl`)" if meta.rows > meta.record_count else "")),
        ("grid", f"{h} x {w} cells, top-{meta.k} of {meta.num_classes} classes per cell"),
        ("values", f"{meta.value_kind} ({meta.values_dtype}), class ids uint16"),
        ("annotator", f"`{ann.get('model', 'unknown')}`"),
        ("annotator weights", f"{ann.get('weights_source') or ann.get('checkpoint') or 'unknown'}" + (f", sha256 `{weights}`" if weights else "")),
        ("annotator input", f"{ann.get('input_size', '?')} px, {ann.get('resize_mode', 'whole image resized, no crop')}"),
        ("source dataset", (ds_name or "unknown") + (f" / {split}" if split else "")),
        ("manifest digest", f"`{manifest.digest}`"),
        ("size", f"{manifest.total_bytes / 1e6:.1f} MB in {len(manifest.entries) + 1} files"),
        ("format", f"relabel-store {meta.format_version} (Zarr v3), written by relabel-store {meta.software_version} on {meta.created_at}"),
    ]  # fmt: skip
    if meta.parent:
        rows.append(("parent store", f"`{meta.parent.get('digest', '?')}` ({meta.parent.get('location', '?')})"))  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = f"""
# {name}

Dense **ReLabel** label maps ([Yun et al., CVPR 2021]({PAPER})): for every training image, an
annotator classifier applied at every spatial position gives the top-{meta.k} classes and their
logits in each cell of a {h} x {w} grid over the whole image. **LabelPooling** turns a map into a
soft multi-label target for whatever random crop your training pipeline took.

This repository is a [relabel-store](https://pypi.org/project/relabel-store/) store: a plain
Zarr v3 group plus `manifest.json` (size and sha256 of every file). Generated metadata:

| | |
|---|---|
{table}

## Load it

```python
from relabel_store import load_relabel

store = {load_call}
rec = store["<image key>"]  # key = file stem, e.g. "n01440764_10026"
rec.indices, rec.values  # ({h}, {w}, {meta.k}) class ids and logits
```

Shards are downloaded on first use into a verified local cache (each checked against the
manifest's sha256); `mode="range"` reads single records with HTTP range requests instead.
`relabel-store pull {repo_id} --to DIR` downloads and verifies the whole store.

Without relabel-store, with any Zarr v3 reader:

```python
import zarr

g = zarr.open_group("{location}", mode="r")
g.attrs["relabel"]  # metadata: grid, k, classes, annotator, ...
g["indices"][0], g["values"][0]  # top-k ids and logits of physical row 0
```

## Citation

```bibtex
@inproceedings{{yun2021relabel,
  title     = {{Re-labeling ImageNet: from Single to Multi-Labels, from Global to Localized Labels}},
  author    = {{Yun, Sangdoo and Oh, Seong Joon and Heo, Byeongho and Han, Dongyoon and Choe, Junsuk and Chun, Sanghyuk}},
  booktitle = {{IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)}},
  year      = {{2021}},
  note      = {{arXiv:2101.05022}}
}}
```
"""
    if license == "other":
        body += (
            "\n## License\n\nThe maps are derived from the source dataset's images; use them "
            "under the source dataset's terms.\n"
        )
    return f"---\n{data.to_yaml()}\n---\n{body}"


# -- pull -----------------------------------------------------------------------------------------


@dataclass
class PullResult:
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
    log: Log = _silent,
) -> PullResult:
    """Download a whole remote store and verify it: into the cache (``to=None``; the store is
    then read locally by every later ``load_relabel`` of the same revision) or into folder
    ``to``, which becomes a plain local store."""
    from relabel_store.remote import open_source

    source = open_source(
        name_or_url,
        revision,
        mode="cache",
        cache_dir=cache_dir,
        token=token,
        storage_options=storage_options,
    )
    if not isinstance(source, ShardCacheSource):
        raise ValueError(f"{name_or_url} is a local store already; there is nothing to pull")
    manifest = source.manifest
    log(f"{source.location}: {len(manifest.entries) + 1} files, {manifest.total_bytes} bytes")
    if to is None:
        before = source.downloads
        source.fetch(None, threads=threads)
        dest = source.root
        downloaded = source.downloads - before
    else:
        dest = Path(to)
        downloaded = _pull_into(source, dest, threads)
    report = verify_dir(dest, manifest)
    if not report.ok:
        raise CorruptDataError(
            f"{dest}: the pulled store does not match the manifest of {source.location}:\n  "
            + "\n  ".join(report.lines())
        )
    return PullResult(dest, manifest.digest, len(manifest.entries) + 1, downloaded, report)


def _pull_into(source: ShardCacheSource, dest: Path, threads: int) -> int:
    manifest = source.manifest
    raw = source.read(MANIFEST_NAME)
    assert raw is not None
    existing = dest / MANIFEST_NAME
    if existing.is_file():
        if existing.read_bytes() == raw:
            return 0  # a finished pull of the same store: verify_dir checks it
        raise FileExistsError(
            f"{dest} already holds a different store (its manifest differs); choose another --to"
        )
    if dest.exists():
        if not dest.is_dir():
            raise FileExistsError(f"{dest} exists and is not a directory")
        foreign = sorted(set(store_files(dest)) - set(manifest.by_path()))
        if foreign:
            raise FileExistsError(
                f"{dest} is not empty and is not an interrupted pull of this store (it has "
                f"{foreign[0]!r}); choose another --to"
            )

    def one(e: ManifestEntry) -> int:
        final = dest / safe_relpath(e.path)
        with contextlib.suppress(FileNotFoundError):
            if final.stat().st_size == e.size and sha256_file(final) == e.sha256:
                return 0  # from an interrupted pull
        if source.is_cached(e.path):
            cached = source.root / e.path

            def fill(f: Any) -> None:
                with open(cached, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)

            write_verified(final, e, source.location, fill)
            return 0
        write_verified(final, e, source.location, lambda f: source.remote.download(e.path, f))
        return 1

    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        futures = [pool.submit(one, e) for e in manifest.entries]
        errors = [f.exception() for f in futures]
    for exc in errors:
        if exc is not None:
            raise exc
    atomic_write_bytes(existing, raw)  # last: its presence marks a complete copy
    return sum(f.result() for f in futures)
