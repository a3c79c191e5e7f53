"""``import``: turn the published ReLabel or TokenLabeling maps into a finalized, verified store.

The source is the release's tar (read as a stream, never extracted) or the folder it was
extracted to (see ``_archive``). A first pass lists the members; rows are members in archive
order, so the store can be created with its final row count before any map is decoded, and the
same source always gives the same rows. The second pass reads the source once, front to back;
worker processes decode the members (``torch.load(weights_only=True)`` and strict checks, see
``_published``) while this process writes shard after shard. A shard is written whole or not at
all, so an interrupted import resumes where it stopped and ends with the same bytes.

Keys are file stems (``n01440764_10026``), labels the ImageNet-1k index of the wnid folder, and
the store says where it came from: the format, the file, its size and sha256, and how much
rounding the logits to float16 changes pooled targets (measured on maps of this import).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store._progress import Progress, resumed
from relabel_store.errors import (
    ConfigurationError,
    InputError,
    InsufficientMemoryError,
    UnsafePathError,
)
from relabel_store.format._shards import cores_per_process
from relabel_store.format.keys import key_from_path
from relabel_store.format.label_space import imagenet_label_space
from relabel_store.format.manifest import Manifest, safe_relpath
from relabel_store.format.metadata import (
    DEFAULT_SHARD_RECORDS,
    MAX_KEY_BYTES,
    VALUES_DTYPES,
    StoreMetadata,
)
from relabel_store.write._run import OnError, RunResult, check_run_options, input_failed
from relabel_store.write.writer import StoreWriter, read_group_attrs, settings_diff

# torch reads the published .pt files.
with requires_extra("generate", "relabel_store.write.importer"):
    from relabel_store.write._archive import MapArchive, Members, Payload, open_archive, read_file
    from relabel_store.write._published import (
        FORMAT_NAMES,
        FORMATS,
        MapRejected,
        MapSpec,
        decode_map,
        detect,
        load_tensor,
    )

__all__ = ["ImportResult", "import_maps"]

FormatChoice = Literal["auto", "relabel", "tokenlabeling"]

LABEL_SPACE = "imagenet-1k"
#: Records per decoding task: small enough to spread a shard over the workers.
CHUNK_RECORDS = 256
#: Members tried when recognising the format.
_DETECT_TRIES = 64
#: Every MEASURE_EVERY-th row is pooled from its float32 and its float16 logits.
MEASURE_EVERY = 64
MEASURE_CROPS = 8


@dataclass(frozen=True, kw_only=True)
class ImportResult(RunResult):
    """What an import did (see :class:`~relabel_store.write._run.RunResult`), with the source
    it read and what storing its logits did to pooled targets."""

    format: str
    source: dict[str, Any]
    rounding: dict[str, Any]
    unlabelled: int = 0  # usable members under no ImageNet-1k wnid folder: label -1

    unit: ClassVar[str] = "maps"

    def lines_before(self) -> list[tuple[str, str]]:
        src = self.source
        where = src.get("file") or src.get("folder")
        digest = f", sha256 {src['sha256']}" if src.get("sha256") else ""
        return [("source", f"{where} ({src['kind']}, {self.format} format{digest})")]

    def lines_after(self) -> list[tuple[str, str]]:
        lines = [("float16", _rounding_line(self.rounding))]
        if self.unlabelled:
            maps = f"{self.unlabelled} map{'s' if self.unlabelled > 1 else ''}"
            lines.append(("labels", f"{maps} under no ImageNet-1k wnid folder: label -1"))
        return lines


def _rounding_line(rounding: dict[str, Any]) -> str:
    if rounding.get("max_pooled_target_difference") is None:
        return f"none: logits stored as {rounding['stored']}, as the source holds them (exact)"
    return (
        f"rounding the {rounding['source']} logits changes pooled targets by at most "
        f"{rounding['max_pooled_target_difference']:.2g} (probability, over "
        f"{rounding['maps']} maps x {rounding['crops_per_map']} random crops); "
        "--values float32 keeps them exact"
    )


def import_maps(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: FormatChoice = "auto",
    values: str = "float16",
    workers: int | None = None,
    shard_records: int = DEFAULT_SHARD_RECORDS,
    on_error: OnError = "skip",
    overwrite: bool = False,
    progress: bool | None = None,
) -> ImportResult:
    """Import published label maps from ``source`` (tar or folder) into a store at ``output``.

    ``format``: ``"auto"`` recognises the release by its files (float32 ``[2, 5, 15, 15]``:
    ReLabel; float16 ``[2, 5, H, W]``: TokenLabeling); naming one refuses members of the other.
    ``values``: ``"float16"`` (the default, half the size) or ``"float32"`` (exact for ReLabel's
    float32 logits). ``workers``: decoding processes (default: the CPU cores this process may
    use; 0 decodes here). ``on_error="skip"`` lists members that are not label maps in ``errors.jsonl`` and goes on;
    ``"fail"`` stops at the first. Rerunning the same import after an interruption resumes it.
    ``progress``: a bar on a terminal, log lines elsewhere (None), always (True), never (False).
    """
    if format != "auto" and format not in FORMATS:
        raise ConfigurationError(f"format must be 'auto' or one of {FORMAT_NAMES}, got {format!r}")
    if values not in VALUES_DTYPES:
        raise ConfigurationError(f"values must be one of {VALUES_DTYPES}, got {values!r}")
    check_run_options(on_error=on_error, workers=workers, shard_records=shard_records)
    workers = cores_per_process() if workers is None else workers
    started = time.perf_counter()
    path = Path(output)
    archive = open_archive(source)
    executor = decoder_pool(workers)
    try:
        return _import(archive, path, executor, workers, format, values, shard_records,
                       on_error, overwrite, progress, started)  # fmt: skip
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _import(
    archive: MapArchive,
    path: Path,
    executor: cf.Executor,
    workers: int,
    format: str,
    values: str,
    shard_records: int,
    on_error: str,
    overwrite: bool,
    progress: bool | None,
    started: float,
) -> ImportResult:
    members = archive.scan(progress)
    space = imagenet_label_space(LABEL_SPACE)
    keys, labels = _place_members(members, space.class_identifiers or ())
    unlabelled = sum(
        1 for row in np.flatnonzero(labels < 0).tolist() if row not in members.problems
    )
    if on_error == "fail" and members.problems:
        row = min(members.problems)
        raise _member_error(members, row, members.problems[row])
    spec = _recognise(archive, members, format, values, len(space.class_identifiers or ()))
    fmt = spec.format
    meta = StoreMetadata(
        grid=spec.grid,
        k=spec.k,
        num_classes=spec.num_classes,
        rows=len(members),
        shard_records=shard_records,
        class_names=space.class_names,
        label_space=space.name,
        class_identifiers=space.class_identifiers,
        values_dtype=values,
        annotator={**fmt.annotator, "grid": list(spec.grid), "k": spec.k},
        dataset={
            "name": LABEL_SPACE,
            "split": "train",
            "class_names": list(space.class_identifiers or ()),  # labels index the wnids
            "source": {
                **archive.describe(),
                "format": fmt.name,
                "origin": fmt.origin,
                "layout": f"{fmt.dtype_name} [2, {spec.k}, {spec.grid[0]}, {spec.grid[1]}]: "
                "[0] top-k logits, [1] class ids as floats",
            },
        },
    )
    meta = _as_resumed(path, meta)
    finished = None if overwrite else StoreWriter.finished(path, meta)
    if finished is not None:  # a requeued job reruns the command: report, do not refuse
        old, manifest = finished
        return _result(path, fmt.name, old, manifest, 0, started, unlabelled, already_complete=True)
    with StoreWriter.open(path, meta, overwrite=overwrite) as writer:
        shards = _ShardAssembler(writer, spec, members, keys, labels, on_error)
        imported_now = _write_shards(shards, archive, executor, workers, progress)
        source_info = dict(meta.dataset["source"])
        if archive.sha256 is not None:
            source_info["sha256"] = archive.sha256
        rounding = _rounding(writer, fmt.dtype_name, values)
        manifest = writer.finalize(dataset={"source": source_info, "values": rounding})
    return _result(path, fmt.name, writer.metadata, manifest, imported_now, started, unlabelled)


def _write_shards(
    shards: _ShardAssembler,
    archive: MapArchive,
    executor: cf.Executor,
    workers: int,
    progress: bool | None,
) -> int:
    """Decode and write every shard not written yet; returns how many maps that was."""
    writer, spec = shards.writer, shards.spec
    done = writer.completed_shards()
    plan = [
        (range(start, min(start + CHUNK_RECORDS, rows.stop)), shard not in done)
        for shard in range(writer.num_shards)
        for rows in [writer.shard_rows(shard)]
        for start in range(rows.start, rows.stop, CHUNK_RECORDS)
    ]
    todo = sum(len(rows) for rows, wanted in plan if wanted)
    measure = _rounds(spec.format.dtype_name, spec.values_dtype)
    desc = resumed("importing", len(done), writer.num_shards)
    with Progress(todo, desc=desc, unit="maps", show=progress) as bar:
        for rows, decoded in decode_chunks(archive, plan, spec, executor, workers, measure=measure):
            shard = rows.start // writer.metadata.shard_records
            if shard in done:
                shards.check(shard, rows, decoded, str(archive.path))
                continue
            written = shards.add(rows, decoded)
            if written:
                bar.update(written)
    return todo


def _result(
    path: Path,
    format: str,
    meta: StoreMetadata,
    manifest: Manifest,
    imported_now: int,
    started: float,
    unlabelled: int,
    *,
    already_complete: bool = False,
) -> ImportResult:
    return ImportResult(
        path=path,
        format=format,
        records=meta.record_count,
        skipped=meta.rows - meta.record_count,
        done_now=imported_now,
        seconds=time.perf_counter() - started,
        store_bytes=manifest.total_bytes,
        digest=manifest.digest,
        source=dict(meta.dataset.get("source") or {}),
        rounding=dict(meta.dataset.get("values") or {}),
        already_complete=already_complete,
        unlabelled=unlabelled,
    )


# --------------------------------------------------------------------------------------------
# Rows: keys, labels, and the members that cannot be maps
# --------------------------------------------------------------------------------------------


def _place_members(members: Members, wnids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Each row's key (file stem) and label (index of its wnid folder, else -1).

    Unsafe names, files that are not ``.pt``, invalid keys and second occurrences of a key
    become problems of their row: reported, never read.
    """
    wnid_index = {w: i for i, w in enumerate(wnids)}
    labels = np.full(len(members), -1, np.int32)
    keys: list[str] = []
    first: dict[str, int] = {}
    for row, name in enumerate(members.names):
        key, label, problem = _place(name, row, wnid_index)
        keys.append(key)
        labels[row] = label
        if problem is not None:
            members.problems.setdefault(row, problem)
        if row in members.problems:
            continue
        if key in first:
            members.problems[row] = (
                f"duplicate key {key!r}: {members.names[first[key]]!r} has the same file stem"
            )
        else:
            first[key] = row
    return keys, labels


def _place(name: str, row: int, wnid_index: dict[str, int]) -> tuple[str, int, str | None]:
    placeholder = f"<member {row}>"
    clean = name
    while clean.startswith("./"):
        clean = clean[2:]
    try:
        clean.encode("utf-8")
        safe_relpath(clean)
    except (UnicodeEncodeError, UnsafePathError):
        return placeholder, -1, "unsafe member name (absolute, '..', backslash or not UTF-8)"
    parts = clean.split("/")
    if not parts[-1].endswith(".pt"):
        return placeholder, -1, "not a .pt file"
    key = key_from_path(clean)
    if not key or key != key.strip() or "\x00" in key:
        return placeholder, -1, f"file stem {key!r} cannot be a key (empty or padded)"
    if len(key.encode()) > MAX_KEY_BYTES:  # keys are stored fixed-width: one would widen all
        return (
            placeholder,
            -1,
            f"file stem {key[:40]!r}... is {len(key.encode())} bytes; keys are at most "
            f"{MAX_KEY_BYTES} UTF-8 bytes",
        )
    label = wnid_index.get(parts[-2], -1) if len(parts) > 1 else -1
    return key, label, None


def _member_error(members: Members, row: int, reason: str) -> InputError:
    return input_failed(f"import {members.names[row]!r}", reason)


def _recognise(
    archive: MapArchive, members: Members, format: str, values: str, num_classes: int
) -> MapSpec:
    """The format, top-k and grid of this import, from the first members that load."""
    candidates = [r for r in range(len(members)) if r not in members.problems][:_DETECT_TRIES]
    seen: list[str] = []
    for row, data in archive.read_rows(candidates):
        try:
            tensor = load_tensor(data)
        except MapRejected as exc:
            seen.append(f"{members.names[row]}: {exc}")
            continue
        name = detect(tensor)
        if name is not None and format in ("auto", name):
            _, k, h, w = tensor.shape
            return MapSpec(FORMATS[name], int(k), (int(h), int(w)), num_classes, values)
        seen.append(
            f"{members.names[row]}: {tensor.dtype} {list(tensor.shape)}"
            + (f" (the {name} format)" if name else "")
        )
    wanted = (
        "a published label map (float32 or float16 [2, K, H, W])"
        if format == "auto"
        else f"in the {format} format ({FORMATS[format].dtype_name} [2, K, H, W])"
    )
    found = "; ".join(seen[:3]) or "no member that could be a .pt label map"
    where = f"the first {len(candidates)} members" if candidates else "the members"
    raise InputError(
        f"none of {where} of {archive.path} is {wanted}. Found: {found}. Check the source, or "
        "choose --format."
    )


def _as_resumed(path: Path, meta: StoreMetadata) -> StoreMetadata:
    """``meta`` as a run killed while finalizing left it (with what finalize adds), if so.

    Finalize records the source's sha256 and the rounding measurement; a store killed between
    that and its manifest must still resume with the same settings.
    """
    existing = read_group_attrs(path)
    if not existing or not existing.get("complete"):
        return meta
    dataset = dict(existing.get("dataset") or {})
    source = dict(dataset.get("source") or {})
    source.pop("sha256", None)
    dataset.pop("values", None)
    before_finalize = replace(
        StoreMetadata.from_json(existing, where=str(path)), dataset={**dataset, "source": source}
    )
    if settings_diff(before_finalize, meta):
        return meta
    return replace(meta, dataset=existing["dataset"])


# --------------------------------------------------------------------------------------------
# Decoding, in worker processes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    first_row: int
    payloads: list[Payload]
    spec: MapSpec
    measure: bool
    decode: bool = True  # False: a shard written before a resume, only fingerprinted


@dataclass
class DecodedChunk:
    """Maps of consecutive rows; ``errors[i]`` says why row i is not a map (None: it is)."""

    indices: np.ndarray
    values: np.ndarray
    errors: list[str | None]
    rounding_max: float
    rounding_maps: int
    fingerprint: str  # sha256 of the members' bytes: what a resume checks the source against


def _decode_chunk(chunk: _Chunk) -> DecodedChunk:
    spec = chunk.spec
    n = len(chunk.payloads) if chunk.decode else 0
    indices = np.zeros((n, *spec.grid, spec.k), np.uint16)
    values = np.zeros((n, *spec.grid, spec.k), spec.values_dtype)
    errors: list[str | None] = [None] * len(chunk.payloads)
    worst, measured = 0.0, 0
    fingerprint = hashlib.sha256()
    for i, payload in enumerate(chunk.payloads):
        if payload is None:
            errors[i] = "not read"  # the caller knows why
            fingerprint.update(b"-")
            continue
        try:
            data = read_file(payload) if isinstance(payload, str) else payload
        except OSError as exc:
            errors[i] = f"cannot read it: {exc.strerror or exc}"
            fingerprint.update(b"!")
            continue
        fingerprint.update(len(data).to_bytes(8, "little") + hashlib.sha256(data).digest())
        if not chunk.decode:
            continue
        try:
            indices[i], values[i], source = decode_map(data, spec)
        except MapRejected as exc:
            errors[i] = str(exc)
            continue
        row = chunk.first_row + i
        if chunk.measure and row % MEASURE_EVERY == 0:
            worst = max(
                worst,
                rounding_difference(indices[i], source, values[i], spec.num_classes, row),
            )
            measured += 1
    return DecodedChunk(indices, values, errors, worst, measured, fingerprint.hexdigest())


def rounding_difference(
    indices: np.ndarray, exact: np.ndarray, rounded: np.ndarray, num_classes: int, seed: int
) -> float:
    """Largest change, over random crops and the whole image, that rounding makes to targets.

    Crops are drawn like ``RandomResizedCrop`` (scale 0.08..1, aspect 3/4..4/3) on a square
    image, seeded by ``seed`` so the measurement is the same on every run.
    """
    from relabel_store.pooling import CropBox, pool

    rng = np.random.default_rng(seed)
    boxes = [CropBox.full()]
    while len(boxes) < MEASURE_CROPS:
        area = rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if w <= 1 and h <= 1:
            x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            boxes.append(CropBox(x0, y0, x0 + w, y0 + h))
    worst = 0.0
    for box in boxes:
        a = pool(indices, exact, box, num_classes=num_classes)
        b = pool(indices, rounded, box, num_classes=num_classes)
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


class _InlineExecutor(cf.Executor):
    """Runs each task at submit time: ``workers=0``."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def decoder_pool(workers: int) -> cf.Executor:
    """The processes that decode members (``workers=0``: this process, task by task).

    On Linux they are forked at once, before the import starts any thread of its own (zarr's,
    tqdm's), and only ever run ``torch.load`` and numpy: so ``import_maps`` works from any
    script, ``if __name__ == "__main__"`` guard or not. Elsewhere, where fork is unsafe, they are
    spawned (and a script calling ``import_maps`` needs that guard).
    """
    if workers == 0:
        return _InlineExecutor()
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = cf.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    for future in [pool.submit(int) for _ in range(workers)]:  # start every worker now
        future.result()
    return pool


def _die_with_parent(parent: int) -> None:
    """Linux: a decoding worker is killed with the importing process (kill -9, the OOM
    killer, a SLURM job cancelled) instead of living on with its memory."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def decode_chunks(
    archive: MapArchive,
    plan: Sequence[tuple[range, bool]],
    spec: MapSpec,
    executor: cf.Executor,
    workers: int,
    *,
    measure: bool = False,
) -> Iterator[tuple[range, DecodedChunk]]:
    """The chunks of ``plan``, in order, ``executor``'s workers decoding ahead: the wanted
    ones decoded; from a tar the others too (shards written before a resume), only
    fingerprinted, so that a resume from another tar is refused.

    The archive is read here, once, in order; at most a few shards' worth of members wait for
    a worker, so memory stays flat whatever the source's size.
    """
    window = 1 if workers == 0 else 8 * workers + 2 * (DEFAULT_SHARD_RECORDS // CHUNK_RECORDS)
    pending: deque[tuple[range, cf.Future]] = deque()
    # A tar is read through whatever is wanted: the members of shards kept from an earlier run
    # cost only their fingerprint, taken here. A folder's are not read again (nor checked).
    check_kept = archive.kind == "tar"
    wanted = {rows.start: want for rows, want in plan}
    try:
        for rows, payloads in archive.stream([(r, w or check_kept) for r, w in plan]):
            chunk = _Chunk(rows.start, payloads, spec, measure, decode=wanted[rows.start])
            if chunk.decode:
                pending.append((rows, executor.submit(_decode_chunk, chunk)))
            else:
                kept: cf.Future = cf.Future()
                kept.set_result(_decode_chunk(chunk))
                pending.append((rows, kept))
            while len(pending) >= window:
                rows_done, future = pending.popleft()
                yield rows_done, future.result()
        while pending:
            rows_done, future = pending.popleft()
            yield rows_done, future.result()
    except BrokenProcessPool:
        raise InsufficientMemoryError(
            "a decoding worker process died, usually because the machine ran out of memory (or "
            f"it was killed). Rerun the same command with fewer --workers (this run had "
            f"{workers}), or --workers 0 to decode in the importing process; it resumes where it "
            "stopped, finished shards are kept."
        ) from None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _ShardAssembler:
    """Collects decoded chunks into whole shards and writes each as soon as it is complete."""

    def __init__(
        self,
        writer: StoreWriter,
        spec: MapSpec,
        members: Members,
        keys: list[str],
        labels: np.ndarray,
        on_error: str,
    ) -> None:
        self.writer = writer
        self.spec = spec
        self.members = members
        self.keys = keys
        self.labels = labels
        self.on_error = on_error
        self.shard = -1
        self.filled = 0
        self.rounding = (0.0, 0)
        self.fingerprints: dict[int, list[str]] = {}

    def _fingerprint(self, shard: int, rows: range, decoded: DecodedChunk) -> str | None:
        """The fingerprint of shard ``shard``'s members once its last chunk has come."""
        parts = self.fingerprints.setdefault(shard, [])
        parts.append(decoded.fingerprint)
        if rows.stop < self.writer.shard_rows(shard).stop:
            return None
        del self.fingerprints[shard]
        return hashlib.sha256("".join(parts).encode()).hexdigest()

    def check(self, shard: int, rows: range, decoded: DecodedChunk, source: str) -> None:
        """Refuse to resume from another source than the one shard ``shard`` was written
        from (a re-downloaded tar of the same size: its bytes differ, its names do not)."""
        fingerprint = self._fingerprint(shard, rows, decoded)
        if fingerprint is None:
            return
        recorded = (self.writer.shard_extra(shard) or {}).get("source")
        if recorded is not None and recorded != fingerprint:
            shard_rows = self.writer.shard_rows(shard)
            raise InputError(
                f"{source} is not the source this store was started from: the members of rows "
                f"{shard_rows.start}-{shard_rows.stop - 1} (shard {shard}, from "
                f"{self.members.names[shard_rows.start]}) differ from the ones written then. "
                "Give the source the store was started from, or start over with --overwrite."
            )

    def _start(self, shard: int) -> None:
        n = len(self.writer.shard_rows(shard))
        self.shard, self.filled = shard, 0
        self.indices = np.zeros((n, *self.spec.grid, self.spec.k), np.uint16)
        self.values = np.zeros((n, *self.spec.grid, self.spec.k), self.spec.values_dtype)
        self.errors: list[dict[str, str] | None] = [None] * n
        self.rounding = (0.0, 0)

    def add(self, rows: range, decoded: DecodedChunk) -> int:
        """Take one chunk; returns the records written (a whole shard) or 0."""
        shard = rows.start // self.writer.metadata.shard_records
        if shard != self.shard:
            self._start(shard)
        base = self.writer.shard_rows(shard).start
        local = slice(rows.start - base, rows.stop - base)
        self.indices[local] = decoded.indices
        self.values[local] = decoded.values
        for row, error in zip(rows, decoded.errors, strict=True):
            if error is None:
                continue
            reason = self.members.problems.get(row, error)
            if self.on_error == "fail":
                raise _member_error(self.members, row, reason)
            self.errors[row - base] = {"path": self.members.names[row], "reason": reason}
        worst, maps = self.rounding
        self.rounding = (max(worst, decoded.rounding_max), maps + decoded.rounding_maps)
        self.filled += len(rows)
        fingerprint = self._fingerprint(shard, rows, decoded)
        n = len(self.errors)
        if self.filled < n:
            return 0
        worst, maps = self.rounding
        shard_rows = self.writer.shard_rows(shard)
        self.writer.write_shard(
            shard,
            keys=self.keys[shard_rows.start : shard_rows.stop],
            labels=self.labels[shard_rows.start : shard_rows.stop],
            sizes=np.zeros((n, 2), np.int32),  # the published maps do not record image sizes
            indices=self.indices,
            values=self.values,
            errors=self.errors,
            extra={"max": worst, "maps": maps, "source": fingerprint},
        )
        return n


def _rounds(source: str, stored: str) -> bool:
    return source == "float32" and stored == "float16"


def _rounding(writer: StoreWriter, source: str, stored: str) -> dict[str, Any]:
    """What storing the logits as ``stored`` did to pooled targets, over every shard."""
    out: dict[str, Any] = {"source": source, "stored": stored}
    if not _rounds(source, stored):
        return {**out, "max_pooled_target_difference": None}
    worst, maps = 0.0, 0
    for shard in range(writer.num_shards):
        entry = writer.shard_extra(shard) or {"max": 0.0, "maps": 0}  # written before 0.2: none
        worst, maps = max(worst, entry["max"]), maps + entry["maps"]
    return {
        **out,
        "max_pooled_target_difference": worst,
        "maps": maps,
        "crops_per_map": MEASURE_CROPS,
        "every_nth_map": MEASURE_EVERY,
    }
