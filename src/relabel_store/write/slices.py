"""Independent slices of one ``generate`` run, and ``merge``, which makes them one store.

``generate --slice I/N`` annotates only the shards ``s`` with ``s % N == I`` (the assignment
``torchrun`` ranks use) into a *partial store*: the same folder layout as any store being
written (group and array ``zarr.json``, shard files, one ``_progress/shard-NNNNNN.json`` per
finished shard) plus ``_progress/slice.json`` naming the slice. It is never finalized. The
output is a local folder, or any fsspec URL: then the store is written in a local staging folder
and each finished shard is uploaded, its data files first and its progress file last, so that a
shard counts as done at the destination exactly when all of it is there. A rerun resumes from
what the destination holds.

:func:`merge` checks that the partial stores are the slices of one run (same settings and
annotator, one slice each of ``0..N-1``, each finished, no shard twice) and assembles them into
one finalized store: every shard file is copied as it is (never re-encoded) and checked (shard
index checksum, every record decoded with its checksums), then the writer's ``finalize`` builds
the key index, ``errors.jsonl`` and the manifest. The merged store's data files are byte for
byte those of a single-process run; merging resumes shard by shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from relabel_store._progress import Progress
from relabel_store.errors import (
    ConfigurationError,
    CorruptDataError,
    InputError,
    RemoteError,
)
from relabel_store.format._codecs import BatchRefused, decode_plans
from relabel_store.format._io import atomic_write_bytes
from relabel_store.format._layout import ArrayLayout, parse_shard_index
from relabel_store.format._shards import cores_per_process
from relabel_store.format.manifest import Manifest
from relabel_store.format.metadata import (
    INDICES,
    PROGRESS_DIR,
    VALUES,
    StoreMetadata,
    read_group_attribute,
)
from relabel_store.read.cache import default_cache_dir
from relabel_store.write.writer import StoreWriter, settings_diff

__all__ = ["MergeResult", "Slice", "SliceOutput", "is_url", "merge", "merge_plan"]

SLICE_FILE = f"{PROGRESS_DIR}/slice.json"
_RECORD_ARRAYS = (INDICES, VALUES)
_SHARD_FILE = re.compile(r"shard-(\d{6,})\.json")


@dataclass(frozen=True)
class Slice:
    """Slice ``index`` of ``count``: the shards ``s`` with ``s % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ConfigurationError(
                f"slice {self.index}/{self.count}: the slice is I/N with 0 <= I < N (a SLURM "
                "array gives --slice $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with "
                "--array=0-(N-1))"
            )

    @classmethod
    def parse(cls, text: str) -> Slice:
        """``"I/N"`` as given on the command line."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ConfigurationError(f"--slice {text!r}: expected I/N, e.g. 0/8")
        return cls(int(match[1]), int(match[2]))

    def shards(self, num_shards: int) -> list[int]:
        return list(range(self.index, num_shards, self.count))

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Slice:
        try:
            data = json.loads(raw)
            return cls(int(data["index"]), int(data["count"]))
        except (ValueError, TypeError, KeyError, ConfigurationError):
            raise CorruptDataError(
                f"{where}: not a slice description; the file is damaged"
            ) from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an fsspec URL (``s3://bucket/x``) rather than a local path."""
    return "://" in str(location)


class _Files:
    """The files of a store at a local path or an fsspec URL, by store-relative path."""

    def __init__(self, location: str | os.PathLike[str], storage_options: dict[str, Any] | None):
        import fsspec

        self.location = str(location).rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.location, **(storage_options or {}))
        self.root = root.rstrip("/")

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _error(self, rel: str, exc: Exception) -> RemoteError:
        return RemoteError(
            f"{self.location}/{rel}: {exc}. Check the URL and its credentials; rerunning the "
            "command resumes where it stopped."
        )

    def read(self, rel: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._full(rel)))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error(rel, exc) from None

    def write(self, rel: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._full(rel), data)
        except OSError as exc:
            raise self._error(rel, exc) from None

    def upload(self, local: Path, rel: str) -> None:
        try:
            self.fs.put_file(str(local), self._full(rel))
        except OSError as exc:
            raise self._error(rel, exc) from None

    def download(self, rel: str, dest: Path) -> bool:
        """``rel`` into ``dest`` (replaced atomically); False when there is no such file."""
        data = self.read(rel)
        if data is None:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, data)
        return True

    def finished_shards(self) -> set[int]:
        """The shards whose progress file exists."""
        try:
            names = [
                p.rsplit("/", 1)[-1] for p in self.fs.ls(self._full(PROGRESS_DIR), detail=False)
            ]
        except (FileNotFoundError, NotADirectoryError):
            return set()
        except OSError as exc:
            raise self._error(PROGRESS_DIR, exc) from None
        return {int(m[1]) for name in names if (m := _SHARD_FILE.fullmatch(name))}


# -- writing a slice ------------------------------------------------------------------------------


class SliceOutput:
    """Where ``generate --slice`` writes: ``local`` is the folder the writer fills; for a URL,
    a staging folder whose finished shards :meth:`after_shard` uploads to ``location``."""

    def __init__(
        self,
        location: str | os.PathLike[str],
        part: Slice,
        *,
        staging: str | os.PathLike[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.location = str(location).rstrip("/")
        self.slice = part
        self.remote = _Files(self.location, storage_options) if is_url(location) else None
        if self.remote is None:
            self.local = Path(location)
        else:
            digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            self.local = Path(staging) if staging else default_cache_dir() / "staging" / digest

    def prepare(self, metadata: StoreMetadata) -> None:
        """Before the writer opens the store: the slice is this one, and for a URL the staging
        folder holds what the destination holds (its metadata and progress files), so that the
        writer resumes what is already uploaded; a destination started with other settings is
        refused."""
        if self.remote is not None:
            raw = self.remote.read("zarr.json")
            if raw is not None:
                old = StoreMetadata.from_json(
                    read_group_attribute(raw, self.location), where=self.location
                )
                diff = settings_diff(old, metadata)
                if diff:
                    raise InputError(
                        f"{self.location} holds a slice started with different settings ({diff}). "
                        "Re-run with the original settings, or write to another URL."
                    )
                self._check_slice(self.remote.read(SLICE_FILE), self.location)
                self.local.mkdir(parents=True, exist_ok=True)
                for rel in ("zarr.json", f"{INDICES}/zarr.json", f"{VALUES}/zarr.json", SLICE_FILE):
                    self.remote.download(rel, self.local / rel)
                for shard in sorted(self.remote.finished_shards()):
                    rel = _progress_name(shard)
                    self.remote.download(rel, self.local / rel)
        path = self.local / SLICE_FILE
        self._check_slice(path.read_bytes() if path.is_file() else None, str(self.local))

    def _check_slice(self, raw: bytes | None, where: str) -> None:
        if raw is None:
            return
        old = Slice.from_bytes(raw, f"{where}/{SLICE_FILE}")
        if old != self.slice:
            raise InputError(
                f"{where} holds slice {old}, not {self.slice}. Give each slice its own output."
            )

    def started(self, writer: StoreWriter) -> None:
        """Once the writer holds the store: record the slice, and upload the metadata."""
        atomic_write_bytes(self.local / SLICE_FILE, json.dumps(self.slice.to_json()).encode())
        if self.remote is not None:
            for rel in ("zarr.json", f"{INDICES}/zarr.json", f"{VALUES}/zarr.json", SLICE_FILE):
                self.remote.upload(self.local / rel, rel)
            writer.after_shard = self.after_shard

    def after_shard(self, shard: int) -> None:
        """Upload a finished shard: its data files, then its progress file (the mark of done).
        The staging copies of the data files are removed once uploaded."""
        assert self.remote is not None
        name = _chunk_name(shard)
        for array in _RECORD_ARRAYS:
            local = self.local / array / name
            if local.is_file():  # absent when every record of the shard failed
                self.remote.upload(local, f"{array}/{name}")
                local.unlink()
        self.remote.upload(self.local / _progress_name(shard), _progress_name(shard))


def _progress_name(shard: int) -> str:
    return f"{PROGRESS_DIR}/shard-{shard:06d}.json"


def _chunk_name(shard: int) -> str:
    return f"c.{shard}.0.0.0"


# -- merging --------------------------------------------------------------------------------------


@dataclass
class _Part:
    files: _Files
    metadata: StoreMetadata
    slice: Slice
    done: set[int]
    arrays: dict[str, bytes]  # the record arrays' zarr.json


@dataclass(frozen=True)
class MergeResult:
    """What a merge did."""

    path: Path
    records: int
    skipped: int
    shards_copied: int
    seconds: float
    store_bytes: int
    digest: str
    already_complete: bool = False


def _open_part(location: str, storage_options: dict[str, Any] | None) -> _Part:
    files = _Files(location, storage_options)
    raw = files.read("zarr.json")
    if raw is None:
        raise InputError(
            f"{location} is not a partial store: it has no zarr.json. Give the outputs of "
            "`relabel-store generate --slice I/N`."
        )
    attrs = read_group_attribute(raw, files.location)
    if attrs is None:
        raise InputError(f"{location} is a Zarr group but not a relabel-store store")
    metadata = StoreMetadata.from_json(attrs, where=files.location)
    slice_raw = files.read(SLICE_FILE)
    if slice_raw is None:
        what = "a finalized store" if metadata.complete else "an unfinished store of no slice"
        raise InputError(
            f"{location} is {what}, not a slice: merge takes the outputs of "
            "`relabel-store generate --slice I/N`"
            + (
                "; to combine finished stores of the same images by several annotators, "
                "add --ensemble (ensemble_stores in Python)."
                if metadata.complete
                else "."
            )
        )
    arrays = {}
    for name in _RECORD_ARRAYS:
        array = files.read(f"{name}/zarr.json")
        if array is None:
            raise CorruptDataError(f"{location}/{name}/zarr.json is missing; the slice is damaged")
        arrays[name] = array
    return _Part(
        files, metadata, Slice.from_bytes(slice_raw, f"{location}/{SLICE_FILE}"),
        files.finished_shards(), arrays,
    )  # fmt: skip


def merge_plan(parts: Sequence[_Part]) -> dict[int, _Part]:
    """Which part holds each shard; :class:`InputError` listing every disagreement (other
    settings, another slice count, a slice given twice or missing, an unfinished slice, a
    shard outside a slice's share)."""
    first = parts[0]
    problems: list[str] = []
    for part in parts[1:]:
        diff = settings_diff(first.metadata, part.metadata, limit=8)
        if diff:
            problems.append(
                f"{part.files.location} has other settings than {first.files.location}: {diff}"
            )
        for name in _RECORD_ARRAYS:
            if part.arrays[name] != first.arrays[name]:
                problems.append(f"{part.files.location}: its {name} array is laid out differently")
        if part.slice.count != first.slice.count:
            problems.append(
                f"{part.files.location} is slice {part.slice}, {first.files.location} is slice "
                f"{first.slice}: the slices of one run share N"
            )
    count = first.slice.count
    by_index: dict[int, list[_Part]] = {}
    for part in parts:
        by_index.setdefault(part.slice.index, []).append(part)
    for index, same in sorted(by_index.items()):
        if len(same) > 1:
            where = ", ".join(p.files.location for p in same)
            problems.append(f"slice {index}/{count} is given {len(same)} times ({where})")
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        problems.append(
            f"{len(missing)} of {count} slices are missing: {', '.join(f'{i}/{count}' for i in missing[:10])}"
        )
    owner: dict[int, _Part] = {}
    num_shards = first.metadata.num_shards
    for part in parts:
        share = set(part.slice.shards(num_shards))
        outside = sorted(part.done - share)
        if outside:
            problems.append(
                f"{part.files.location} (slice {part.slice}) holds shards outside its share "
                f"(first: {outside[:5]}): slices overlap"
            )
        left = sorted(share - part.done)
        if left:
            problems.append(
                f"{part.files.location} (slice {part.slice}) is not finished: {len(left)} of "
                f"{len(share)} shards missing (first: {left[:5]}); rerun its generate command"
            )
        for shard in share & part.done:
            owner[shard] = part
    if problems:
        raise InputError(
            "the partial stores are not the slices of one run:\n  - " + "\n  - ".join(problems)
        )
    return owner


def merge(
    parts: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> MergeResult:
    """Assemble the slices ``parts`` (local folders or fsspec URLs) into one finalized store at
    ``output`` (a local folder). Refuses slices that are not one run's (see
    :func:`merge_plan`); rerunning after an interruption resumes; a store already merged from
    these slices is reported complete."""
    started = time.perf_counter()
    if not parts:
        raise ConfigurationError("merge needs the partial stores to merge")
    if is_url(output):
        raise ConfigurationError(
            f"merge writes a local folder, not {output}; publish it afterwards with "
            "`relabel-store push`"
        )
    opened = [_open_part(str(p), storage_options) for p in parts]
    owner = merge_plan(opened)
    metadata = replace(opened[0].metadata, complete=False, record_count=0)
    path = Path(output)
    finished = None if overwrite else StoreWriter.finished(path, metadata)
    if finished is not None:
        old, manifest = finished
        return _result(path, old, manifest, 0, started, already_complete=True)
    writer = StoreWriter.open(path, metadata, overwrite=overwrite)
    try:
        layouts = {
            name: ArrayLayout.parse(name, (path / name / "zarr.json").read_bytes(), str(path))
            for name in _RECORD_ARRAYS
        }
        todo = sorted(set(owner) - writer.completed_shards())
        bar = Progress(
            len(todo), desc="merging shards", unit="shards", show=False if not todo else progress
        )
        for shard in todo:
            _copy_shard(owner[shard], shard, writer, layouts)
            bar.update(1)
        bar.close()
        manifest = writer.finalize()
    finally:
        writer.close()
    return _result(path, writer.metadata, manifest, len(todo), started)


def _result(
    path: Path, m: StoreMetadata, manifest: Manifest, copied: int, started: float,
    *, already_complete: bool = False,
) -> MergeResult:  # fmt: skip
    return MergeResult(
        path=path,
        records=m.record_count,
        skipped=m.rows - m.record_count,
        shards_copied=copied,
        seconds=time.perf_counter() - started,
        store_bytes=manifest.total_bytes,
        digest=manifest.digest,
        already_complete=already_complete,
    )


def _copy_shard(
    part: _Part, shard: int, writer: StoreWriter, layouts: dict[str, ArrayLayout]
) -> None:
    """Copy one shard of ``part`` into the writer's store, checked: its progress file describes
    the shard's rows, its data files decode record by record (every checksum), and a missing
    data file means every record of the shard failed. The progress file is written last."""
    where = part.files.location
    rows = writer.shard_rows(shard)
    raw = part.files.read(_progress_name(shard))
    if raw is None:
        raise CorruptDataError(f"{where}/{_progress_name(shard)} disappeared during the merge")
    progress = _check_progress(raw, len(rows), shard, f"{where}/{_progress_name(shard)}")
    failed = [e is not None for e in progress["errors"]]
    for name in _RECORD_ARRAYS:
        rel = f"{name}/{_chunk_name(shard)}"
        data = part.files.read(rel)
        if data is None:
            if not all(failed):
                raise CorruptDataError(
                    f"{where}/{rel} is missing, but its progress file lists annotated records; "
                    "the slice is damaged: rerun its generate command with --overwrite"
                )
            (writer.root / rel).unlink(missing_ok=True)
            continue
        _check_shard(data, layouts[name], len(rows), f"{where}/{rel}")
        atomic_write_bytes(writer.root / rel, data)
    atomic_write_bytes(writer.root / _progress_name(shard), raw)


def _check_progress(raw: bytes, n: int, shard: int, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
        ok = (
            data["shard"] == shard
            and all(
                isinstance(data[f], list) and len(data[f]) == n
                for f in ("keys", "labels", "sizes", "errors")
            )
            and all(isinstance(k, str) and k for k in data["keys"])
        )
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise CorruptDataError(
            f"{where}: not the progress record of shard {shard} ({n} rows); the slice is "
            "damaged: rerun its generate command with --overwrite"
        )
    return data


def _check_shard(data: bytes, layout: ArrayLayout, rows: int, where: str) -> None:
    """Every chunk of a shard file decodes to a whole record (the index's crc32c, each chunk's
    own checksums and size), as a reader will later find them."""
    per = layout.chunk_shape[0]
    tail = 16 * per + 4
    if len(data) < tail:
        raise CorruptDataError(f"{where}: too short to hold its shard index; the file is damaged")
    index = parse_shard_index(memoryview(data)[len(data) - tail :], per, where)
    present = np.flatnonzero(index[:, 0] != 2**64 - 1)
    if len(present) and int(present[-1]) >= rows:
        raise CorruptDataError(f"{where}: holds chunks past the shard's {rows} rows; damaged")
    spans = index[present].tolist()
    if any(off + size > len(data) - tail for off, size in spans):
        raise CorruptDataError(f"{where}: a chunk lies outside the file; the file is damaged")
    frames = [data[off : off + size] for off, size in spans]
    nbytes = int(np.prod(layout.inner_shape or layout.chunk_shape)) * layout.dtype.itemsize
    try:
        if frames:
            decoded = np.empty((len(frames), nbytes), np.uint8)
            decode_plans([layout.codecs.plan_batch(frames)], cores_per_process(), [decoded])
    except BatchRefused:
        for frame in frames:  # one by one: raises CorruptDataError naming the file
            if len(layout.codecs.decode(frame, where)) != nbytes:
                raise CorruptDataError(
                    f"{where}: a chunk decodes to the wrong size; damaged"
                ) from None
