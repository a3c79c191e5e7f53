"""Write a store shard by shard, resumably, with zarr-python; ``finalize()`` seals it.

Rows are fixed when the store is created (``rows`` records, ``shard_records`` per shard).
zarr-python creates the group and the arrays. Each ``write_shard`` call encodes one whole shard of
every record array on all cores (:mod:`relabel_store.format._shards`, the same bytes zarr-python would
write), replaces each shard file atomically, then records the shard's keys in
``_progress/shard-NNNNNN.json``, also atomically. A shard is done exactly when its progress file
exists, so after a crash the same shard is simply written again, byte for byte the same.
:meth:`StoreWriter.background` moves that work off the caller's thread (``generate`` keeps
annotating while finished shards are written). ``finalize`` sorts the keys, writes the
``keys``/``rows`` index and ``errors.jsonl``, marks the metadata complete and writes
``manifest.json`` last. Rows whose image failed are written as zeros and left out of the index.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

from relabel_store.errors import (
    ConfigurationError,
    IncompleteStoreError,
    InputError,
    StoreLockedError,
)
from relabel_store.format._io import (
    atomic_write_bytes,
    file_kind,
    open_regular,
    remove_abandoned_temps,
)
from relabel_store.format._lock import LOCK_NAME, WriteLock
from relabel_store.format._shards import ShardEncoder, cores_per_process
from relabel_store.format.manifest import (
    Manifest,
    build_manifest,
    read_manifest,
    store_files,
    write_manifest,
)
from relabel_store.format.metadata import (
    ATTRS_KEY,
    DEFAULT_ZSTD_LEVEL,
    ERRORS_NAME,
    FORMAT_VERSION,
    INDICES,
    INDICES_ZSTD_LEVEL,
    KEY_CHUNK_ROWS,
    KEYS,
    LABELS,
    MANIFEST_NAME,
    MAX_KEY_BYTES,
    PROGRESS_DIR,
    ROWS,
    SIGNATURE_ATTR,
    SIGNATURE_BYTES,
    SIGNATURE_KIND,
    SIGNATURES,
    SIZES,
    VALUES,
    VALUES_BLOSC_LEVEL,
    StoreMetadata,
    read_group_attribute,
)

__all__ = ["BackgroundWriter", "StoreWriter", "read_group_attrs", "settings_diff"]

# Fields that may differ between the run that created a store and the run that resumes it.
# A store begun by an older version resumes (it keeps its format version).
_VOLATILE = {"created_at", "software_version", "complete", "record_count", "format_version"}
#: Descriptive dataset fields that later versions record: a store begun before a field was
#: recorded (it has none) still resumes, and a requeued run of a finished one still ends at once.
_RECORDED_LATER = {"dataset.class_names", "dataset.key_column"}
_SEP: dict[str, Any] = {"name": "default", "configuration": {"separator": "."}}


def _compressors() -> list[ZstdCodec]:
    # zstd's frame checksum makes every damaged chunk fail loudly instead of decoding to junk.
    return [ZstdCodec(level=DEFAULT_ZSTD_LEVEL, checksum=True)]


# Per-record chunks, chosen by benchmarks/size.py on real maps (see docs/format.md): zstd for the
# class ids; float16 logits need their byte planes apart (Blosc's byte shuffle) because the low
# byte of each logit is incompressible. Both at zstd level 13: 0.8% larger than levels 19/22 and
# half the time. crc32c guards the Blosc frames, which carry no checksum of their own.
_RECORD_CODECS: dict[str, dict[str, Any]] = {
    INDICES: {"compressors": [ZstdCodec(level=INDICES_ZSTD_LEVEL, checksum=True)]},
    VALUES: {
        "compressors": [
            BloscCodec(cname="zstd", clevel=VALUES_BLOSC_LEVEL, shuffle="shuffle"),
            Crc32cCodec(),
        ]
    },
}


def read_group_attrs(root: Path) -> dict[str, Any] | None:
    """The ``relabel`` attribute of the group at ``root``; None when there is no group."""
    try:
        with open_regular(root, "zarr.json") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return read_group_attribute(raw, str(root))


class StoreWriter:
    """Writes one store. Create or resume with :meth:`open`; seal with :meth:`finalize`.

    The writer holds the store's write lock (see :class:`WriteLock`) until :meth:`finalize`
    or :meth:`close`; a second writer is refused while it lives. ``threads`` compress shards in
    parallel (default: the cores this process may use).
    """

    def __init__(
        self,
        root: Path,
        metadata: StoreMetadata,
        lock: WriteLock | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        self.root = root
        self.metadata = metadata
        self.threads = max(1, threads or cores_per_process())
        self._lock = lock
        self._zstore = LocalStore(root)
        self._encoders = {name: ShardEncoder.read(root, name) for name in (INDICES, VALUES)}
        self._pool: ThreadPoolExecutor | None = None
        #: Called with each shard once it is safely written (``generate --slice`` uploads it).
        self.after_shard: Callable[[int], None] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        metadata: StoreMetadata,
        *,
        overwrite: bool = False,
        lock: bool = True,
        threads: int | None = None,
    ) -> StoreWriter:
        """Create a store at ``path``, or resume the unfinished one already there.

        Resuming requires the same settings (rows, grid, k, classes, annotator, ...): a store
        started differently is refused rather than mixed. ``overwrite`` deletes an existing
        relabel-store store first (never a folder that is not one). The store's write lock is
        taken before anything is written (:class:`~relabel_store.errors.StoreLockedError` when
        another process holds it); ``lock=False`` is for the other ranks of a ``torchrun`` job,
        whose rank 0 holds the lock for all of them. ``threads``: compression threads (default:
        the cores this process may use).
        """
        root = Path(path)
        # A creation cut short (a full disk, a kill) leaves its marker: that store holds no
        # shard yet (creation precedes them), and is made again from scratch.
        interrupted = _creation_interrupted(root)
        existing = None if interrupted else read_group_attrs(root)
        if existing is None and not interrupted and not _empty_or_ours(root):
            raise InputError(
                f"{root} exists and is not a relabel-store store; refusing to write into it. "
                "Choose a new output path."
            )
        if existing is not None and not overwrite:
            _refuse_finalized(root, StoreMetadata.from_json(existing, where=str(root)))
        (root / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
        held = WriteLock.acquire(root) if lock else None
        try:
            interrupted = _creation_interrupted(root)  # again, under the lock
            existing = None if interrupted else read_group_attrs(root)
            store_files(root, include_scratch=True)  # zarr would write through a symlink
            if (existing is not None and overwrite) or interrupted:
                _clear_store(root)
                existing = None
            if existing is None:
                cls._create(root, metadata)
                return cls(root, metadata, held, threads=threads)
            old = StoreMetadata.from_json(existing, where=str(root))
            _refuse_finalized(root, old)
            diff = settings_diff(old, metadata)
            if diff:
                raise InputError(
                    f"{root} holds an unfinished store started with different settings "
                    f"({diff}). Re-run with the original settings to resume it, or pass "
                    "--overwrite to start over."
                )
            return cls(root, replace(old, complete=False), held, threads=threads)
        except BaseException:
            if held is not None:
                held.release()
            raise

    @staticmethod
    def finished(
        path: str | os.PathLike[str], metadata: StoreMetadata
    ) -> tuple[StoreMetadata, Manifest] | None:
        """The metadata and manifest of the finalized store at ``path`` when it was made with
        the settings of ``metadata``; None when ``path`` holds no finalized store.

        A finalized store made with other settings is refused (:class:`InputError`, naming the
        fields that differ). A ``_progress/`` folder left by a run killed between writing the
        manifest and removing it is removed, unless a live process holds the lock.
        """
        root = Path(path)
        existing = read_group_attrs(root)
        if existing is None:
            return None
        old = StoreMetadata.from_json(existing, where=str(root))
        if not old.complete:
            return None
        try:
            manifest = read_manifest(root)
        except IncompleteStoreError:
            return None
        diff = settings_diff(old, metadata)
        if diff:
            raise InputError(
                f"{root} already holds a finalized store made with different settings ({diff}). "
                "Re-run with the settings it was made with to check it, use a new output path, "
                "or pass --overwrite to replace it."
            )
        if (root / PROGRESS_DIR).is_dir():
            with contextlib.suppress(StoreLockedError):  # its writer is still cleaning up
                WriteLock.acquire(root).release_and_remove_progress()
        return old, manifest

    @staticmethod
    def _create(root: Path, m: StoreMetadata) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / PROGRESS_DIR).mkdir(exist_ok=True)
        marker = root / PROGRESS_DIR / _CREATING
        atomic_write_bytes(marker, b"")  # removed once every file of the layout is written
        zstore = LocalStore(root)
        group = zarr.create_group(zstore, zarr_format=3, attributes={ATTRS_KEY: m.to_json()})
        h, w = m.grid
        rec = (h, w, m.k)
        dims = ("record", "y", "x", "k")
        s = m.shard_records
        for name, dtype in ((INDICES, "uint16"), (VALUES, m.values_dtype)):
            group.create_array(
                name,
                shape=(m.rows, *rec),
                dtype=dtype,
                chunks=(1, *rec),
                shards=(s, *rec),
                **_RECORD_CODECS[name],
                fill_value=0,
                chunk_key_encoding=_SEP,
                dimension_names=dims,
            )
        marker.unlink()

    # -- progress -------------------------------------------------------------------------------

    @property
    def num_shards(self) -> int:
        return self.metadata.num_shards

    def shard_rows(self, shard: int) -> range:
        s = self.metadata.shard_records
        return range(shard * s, min((shard + 1) * s, self.metadata.rows))

    def _progress_path(self, shard: int) -> Path:
        return self.root / PROGRESS_DIR / f"shard-{shard:06d}.json"

    def completed_shards(self) -> set[int]:
        """Shards whose data and keys are safely on disk."""
        done = set()
        for p in (self.root / PROGRESS_DIR).glob("shard-*.json"):
            done.add(int(p.stem.split("-")[1]))
        return done

    # -- writing --------------------------------------------------------------------------------

    def write_shard(
        self,
        shard: int,
        *,
        keys: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        sizes: Sequence[tuple[int, int]] | np.ndarray,
        indices: np.ndarray,
        values: np.ndarray,
        errors: Sequence[dict[str, str] | None] | None = None,
        extra: Mapping[str, Any] | None = None,
        signatures: np.ndarray | None = None,
    ) -> None:
        """Write every record of one shard, then mark it done.

        ``errors[i]`` (a dict with at least ``reason``) marks row i as failed: its data is
        written as zeros and its key is left out of the finished store and listed in
        ``errors.jsonl``. ``extra``: the caller's own JSON record of the shard (what it was made
        from, a measurement), kept with the shard's progress until the store is finalized and
        read back with :meth:`shard_extra`: it exists exactly when the shard does.
        ``signatures`` (n, SIGNATURE_BYTES) uint8: each image's content
        signature (:func:`relabel_store.images.image_signature`); a store gets the
        ``signatures`` array when every shard gave them.
        """
        if not 0 <= shard < self.num_shards:
            raise ConfigurationError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        rows = self.shard_rows(shard)
        n = len(rows)
        m = self.metadata
        rec = (n, *m.grid, m.k)
        errors = list(errors) if errors is not None else [None] * n
        keys = list(keys)
        _check_keys(keys, n)
        if len(errors) != n:
            raise ConfigurationError(f"shard {shard} needs {n} error entries, got {len(errors)}")
        indices = np.asarray(indices)
        values = np.asarray(values)
        if indices.shape != rec or values.shape != rec:
            raise ConfigurationError(
                f"shard {shard} needs indices and values of shape {rec}, got "
                f"{indices.shape} and {values.shape}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= m.num_classes):
            raise ConfigurationError(f"class ids must be in 0..{m.num_classes - 1}")
        stored = values.astype(m.values_dtype)
        if not np.isfinite(stored).all():
            raise ConfigurationError(
                f"values must be finite and within {m.values_dtype} range"
                + (" (|logit| < 65504)" if m.values_dtype == "float16" else "")
            )
        signature_list = None
        if signatures is not None:
            signatures = np.asarray(signatures)
            if signatures.shape != (n, SIGNATURE_BYTES) or signatures.dtype != np.uint8:
                raise ConfigurationError(
                    f"shard {shard} needs signatures of shape {(n, SIGNATURE_BYTES)} and dtype "
                    f"uint8, got {signatures.shape} {signatures.dtype}"
                )
            signature_list = [bytes(row).hex() for row in signatures]
        labels_list = np.asarray(labels, dtype=np.int32).reshape(n).tolist()
        sizes_list = np.asarray(sizes, dtype=np.int32).reshape(n, 2).tolist()
        failed = np.array([e is not None for e in errors], dtype=bool)
        if failed.any():
            indices = indices.copy()
            indices[failed] = 0
            stored[failed] = 0
        pool = self._executor()
        pending = [
            (name, self._encoders[name].start(data, pool))
            for name, data in ((INDICES, indices.astype(np.uint16, copy=False)), (VALUES, stored))
        ]
        for name, encoded in pending:
            path = self.root / name / self._encoders[name].chunk_key(shard)
            blob = encoded()
            if blob is None:  # every row failed: zarr-python keeps no file for such a shard
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, blob)
        progress = {
            "shard": shard,
            "keys": keys,
            "labels": labels_list,
            "sizes": sizes_list,
            "errors": errors,
            "signatures": signature_list,
        }
        if extra is not None:
            progress["extra"] = dict(extra)
        atomic_write_bytes(self._progress_path(shard), json.dumps(progress).encode())
        if self.after_shard is not None:
            self.after_shard(shard)

    def shard_extra(self, shard: int) -> dict[str, Any] | None:
        """The ``extra`` record :meth:`write_shard` kept for a written shard (None: none given,
        or the shard is not written)."""
        try:
            progress = json.loads(self._progress_path(shard).read_bytes())
        except FileNotFoundError:
            return None
        extra = progress.get("extra")
        return dict(extra) if isinstance(extra, dict) else None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="relabel-compress")
        return self._pool

    def background(self, max_pending: int = 2) -> BackgroundWriter:
        """A :class:`BackgroundWriter` for this store: ``submit`` shards and go on working."""
        return BackgroundWriter(self, max_pending)

    def _stop_threads(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- sealing --------------------------------------------------------------------------------

    def finalize(self, dataset: Mapping[str, Any] | None = None) -> Manifest:
        """Index the keys, write errors.jsonl, mark the store complete, write the manifest.

        ``dataset``: fields of the metadata's ``dataset`` known only once every shard is written
        (a source's digest, a measurement over all shards), recorded with the rest.
        """
        self._stop_threads()
        missing = sorted(set(range(self.num_shards)) - self.completed_shards())
        if missing:
            raise IncompleteStoreError(
                f"cannot finalize {self.root}: {len(missing)} of {self.num_shards} shards are not "
                f"written yet (first: {missing[:5]}). Resume generation to write them."
            )
        if dataset:
            self.metadata = replace(self.metadata, dataset={**self.metadata.dataset, **dataset})
        keys: list[bytes] = []
        rows: list[int] = []
        labels: list[int] = []
        sizes: list[list[int]] = []
        signatures: list[str] | None = []
        failures: list[dict[str, Any]] = []
        for shard in range(self.num_shards):
            p = json.loads(self._progress_path(shard).read_bytes())
            entries = zip(p["keys"], p["labels"], p["sizes"], p["errors"], strict=True)
            signed = p.get("signatures")  # absent: written before signatures, or without them
            if signed is None:
                signatures = None
            for row, (key, label, size, err) in zip(self.shard_rows(shard), entries, strict=True):
                if err is None:
                    keys.append(key.encode())
                    rows.append(row)
                    labels.append(label)
                    sizes.append(size)
                    if signatures is not None:
                        signatures.append(signed[row - self.shard_rows(shard).start])
                else:
                    failures.append({"key": key, **err})
        if not keys and self.metadata.rows:
            reasons = "; ".join(f"{f['key']}: {f.get('reason', '?')}" for f in failures[:3])
            raise InputError(
                f"none of the {self.metadata.rows} images could be annotated (first: {reasons}), "
                f"so {self.root} was not finalized: an empty store would only hide the problem. "
                f"Fix the inputs, then rerun with --overwrite."
            )
        order = sorted(range(len(keys)), key=keys.__getitem__)
        sorted_keys = [keys[i] for i in order]
        dupes = [k.decode() for a, k in itertools.pairwise(sorted_keys) if a == k]
        if dupes:
            raise InputError(f"duplicate keys in {self.root}: {dupes[:5]}; keys must be unique")
        width = max((len(k) for k in sorted_keys), default=1)
        key_bytes = np.zeros((len(sorted_keys), width), dtype=np.uint8)
        if sorted_keys:
            key_bytes.view(f"S{width}")[:, 0] = sorted_keys
        n = len(sorted_keys)
        index: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {
            KEYS: (key_bytes, ("key", "byte")),
            ROWS: (np.asarray([rows[i] for i in order], np.int64).reshape(n), ("key",)),
            LABELS: (np.asarray([labels[i] for i in order], np.int32).reshape(n), ("key",)),
            SIZES: (np.asarray([sizes[i] for i in order], np.int32).reshape(n, 2), ("key", "hw")),
        }
        group = zarr.open_group(self._zstore, mode="r+")
        chunk = max(1, min(n, KEY_CHUNK_ROWS))
        for name, (data, dims) in index.items():
            arr = group.create_array(
                name,
                shape=data.shape,
                dtype=data.dtype,
                chunks=(chunk, *data.shape[1:]),
                compressors=_compressors(),
                fill_value=0,
                chunk_key_encoding=_SEP,
                dimension_names=dims,
                overwrite=True,
            )
            if n:
                arr[...] = data
        if signatures is not None:  # every record has one (else the store gets none)
            data = np.frombuffer(bytes.fromhex("".join(signatures[i] for i in order)), np.uint8)
            write_signatures(group, data.reshape(n, SIGNATURE_BYTES))
            self.metadata = replace(self.metadata, format_version=FORMAT_VERSION)
        failures.sort(key=lambda f: f["key"])
        lines = "".join(json.dumps(f, sort_keys=True) + "\n" for f in failures)
        atomic_write_bytes(self.root / ERRORS_NAME, lines.encode())
        self.metadata = replace(self.metadata, complete=True, record_count=n)
        _write_group_attrs(self.root, self.metadata)
        for leftover in self.root.rglob("*.partial"):  # zarr temp files from a killed write
            leftover.unlink()
        remove_abandoned_temps(self.root)  # ours, from a killed write_shard
        manifest = build_manifest(self.root)
        write_manifest(self.root, manifest)
        if self._lock is not None:
            self._lock.release_and_remove_progress()
            self._lock = None
        else:
            shutil.rmtree(self.root / PROGRESS_DIR, ignore_errors=True)
        return manifest

    def close(self) -> None:
        """Stop the compression threads and release the write lock (a finalized writer has
        already released it)."""
        self._stop_threads()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_signatures(group: zarr.Group, signatures: np.ndarray) -> None:
    """Write the ``signatures`` array (N, SIGNATURE_BYTES) uint8, in key order, into ``group``
    (replacing one already there), with the attribute naming its recipe."""
    n = len(signatures)
    arr = group.create_array(
        SIGNATURES,
        shape=signatures.shape,
        dtype=np.uint8,
        chunks=(max(1, min(n, KEY_CHUNK_ROWS)), SIGNATURE_BYTES),
        compressors=_compressors(),
        fill_value=0,
        chunk_key_encoding=_SEP,
        dimension_names=("key", "cell"),
        attributes={SIGNATURE_ATTR: {"kind": SIGNATURE_KIND}},
        overwrite=True,
    )
    if n:
        arr[...] = signatures


def _write_group_attrs(root: Path, metadata: StoreMetadata) -> None:
    path = root / "zarr.json"
    group = json.loads(path.read_bytes())
    group.setdefault("attributes", {})[ATTRS_KEY] = metadata.to_json()
    atomic_write_bytes(path, json.dumps(group, indent=2).encode())


def _check_keys(keys: list[str], n: int) -> None:
    if len(keys) != n:
        raise ConfigurationError(f"expected {n} keys, got {len(keys)}")
    for k in keys:
        if not isinstance(k, str) or not k or "\x00" in k or k != k.strip():
            raise InputError(
                f"invalid key {k!r}: keys must be non-empty strings without NUL or surrounding "
                "whitespace"
            )
        if len(k.encode()) > MAX_KEY_BYTES:
            raise InputError(
                f"key {k[:40]!r}... is {len(k.encode())} bytes long; keys are at most "
                f"{MAX_KEY_BYTES} UTF-8 bytes (they are stored fixed-width). Use shorter keys "
                "(--key-column)."
            )


def settings_diff(old: StoreMetadata, new: StoreMetadata, *, limit: int = 4) -> str:
    """The settings that differ between two stores' metadata, one ``field: old -> new`` each
    (nested fields dotted, long lists summarised), so the actual difference is always shown."""
    lines: list[str] = []
    _diff(old.to_json(), new.to_json(), "", lines)
    more = f"; and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if a == b or (a is None and path in _RECORDED_LATER):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if not path and key in _VOLATILE:
                continue
            _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key, out)
    elif (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b)
        and len(repr(a)) + len(repr(b)) > 2 * _SHORT
    ):
        changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        i = changed[0]
        out.append(
            f"{path}: {len(changed)} of {len(a)} entries differ, first [{i}]: "
            f"{_short(a[i])} -> {_short(b[i])}"
        )
    else:
        out.append(f"{path}: {_short(a)} -> {_short(b)}")


_SHORT = 60


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


def _refuse_finalized(root: Path, old: StoreMetadata) -> None:
    if old.complete and (root / MANIFEST_NAME).exists():
        raise InputError(
            f"{root} already holds a finalized store (digest in manifest.json). Use a new "
            "output path, or overwrite it explicitly (--overwrite / overwrite=True)."
        )


_CREATING = "creating"


def _creation_interrupted(root: Path) -> bool:
    """Whether the creation of the store at ``root`` was cut short: its marker is still there."""
    return file_kind(root / PROGRESS_DIR / _CREATING) == "file"


def _empty_or_ours(root: Path) -> bool:
    """True when ``root`` is absent, empty, or holds only the ``_progress/`` folder of a
    writer that is creating a store there."""
    try:
        return {p.name for p in root.iterdir()} <= {PROGRESS_DIR}
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False


def _clear_store(root: Path) -> None:
    """Delete everything in the store at ``root`` but the write lock the caller holds."""
    for entry in root.iterdir():
        if entry.name == PROGRESS_DIR and entry.is_dir() and not entry.is_symlink():
            for inner in entry.iterdir():
                if inner.name != LOCK_NAME:
                    _remove(inner)
        else:
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


_STOP = object()


class BackgroundWriter:
    """Writes shards on a thread of its own while the caller goes on (``generate`` annotates).

    ``submit`` queues a shard (the same arguments as :meth:`StoreWriter.write_shard`) and returns
    at once unless ``max_pending`` shards already wait, which bounds the memory held. A failed
    write is raised in the caller's thread by the next ``submit`` or by ``close``; shards queued
    after it are not written. Crash safety is the writer's: a shard counts as done only once its
    progress file exists, so a killed process leaves at most the queued shards to redo.

    Use as a context manager: leaving the block writes what was queued and raises any error
    (an exception inside the block still lets the queued shards finish, then propagates).
    """

    def __init__(self, writer: StoreWriter, max_pending: int = 2) -> None:
        if max_pending < 1:
            raise ConfigurationError(f"max_pending must be >= 1, got {max_pending}")
        self.writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="relabel-writer", daemon=True)
        self._thread.start()

    def submit(self, shard: int, **shard_data: Any) -> None:
        """Queue ``writer.write_shard(shard, **shard_data)``."""
        self.submit_call(shard, lambda: shard_data)

    def submit_call(self, shard: int, prepare: Callable[[], Mapping[str, Any]]) -> None:
        """Queue a shard whose data ``prepare()`` returns on the writer thread (e.g. after
        waiting for a device-to-host copy to land), then write it."""
        self._raise_error()
        if not self._thread.is_alive():
            raise ConfigurationError("this BackgroundWriter is closed")
        self._queue.put((shard, prepare))

    def close(self) -> None:
        """Write everything queued, stop the thread, raise the first error if there was one."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        failed = False
        while (item := self._queue.get()) is not _STOP:
            if failed:  # keep draining so that a caller blocked in submit() never hangs
                continue
            shard, prepare = item
            try:
                self.writer.write_shard(shard, **prepare())
            except BaseException as exc:  # handed to the caller's thread, not lost
                self._error = exc
                failed = True

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the caller's own exception is the one to report
            self.close()
