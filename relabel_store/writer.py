"""Write a store shard by shard, resumably, with zarr-python; ``finalize()`` seals it.

Rows are fixed when the store is created (``rows`` records, ``shard_records`` per shard).
zarr-python creates the group and the arrays. Each ``write_shard`` call encodes one whole shard of
every record array on all cores (:mod:`relabel_store._shards`, the same bytes zarr-python would
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

from relabel_store._io import atomic_write_bytes, remove_abandoned_temps
from relabel_store._shards import ShardEncoder, cores_per_process
from relabel_store.errors import IncompleteStoreError, InputError
from relabel_store.format import (
    ATTRS_KEY,
    DEFAULT_ZSTD_LEVEL,
    ERRORS_NAME,
    INDICES,
    INDICES_ZSTD_LEVEL,
    KEY_CHUNK_ROWS,
    KEYS,
    LABELS,
    MANIFEST_NAME,
    PROGRESS_DIR,
    ROWS,
    SIZES,
    VALUES,
    VALUES_BLOSC_LEVEL,
    StoreMetadata,
    read_group_attribute,
)
from relabel_store.manifest import Manifest, build_manifest, write_manifest

# Fields that may differ between the run that created a store and the run that resumes it.
_VOLATILE = {"created_at", "software_version", "complete", "record_count"}
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
        raw = (root / "zarr.json").read_bytes()
    except FileNotFoundError:
        return None
    return read_group_attribute(raw, str(root))


class StoreWriter:
    """Writes one store. Create or resume with :meth:`open`; seal with :meth:`finalize`.

    ``threads`` compress shards in parallel (default: the cores this process may use).
    """

    def __init__(self, root: Path, metadata: StoreMetadata, *, threads: int | None = None) -> None:
        self.root = root
        self.metadata = metadata
        self.threads = max(1, threads or cores_per_process())
        self._zstore = LocalStore(root)
        self._encoders = {name: ShardEncoder.read(root, name) for name in (INDICES, VALUES)}
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        metadata: StoreMetadata,
        *,
        overwrite: bool = False,
        threads: int | None = None,
    ) -> StoreWriter:
        """Create a store at ``path``, or resume the unfinished one already there.

        Resuming requires the same settings (rows, grid, k, classes, annotator, ...): a store
        started differently is refused rather than mixed. ``overwrite`` deletes an existing
        relabel-store store first (never a folder that is not one). ``threads``: compression
        threads (default: the cores this process may use).
        """
        root = Path(path)
        existing = read_group_attrs(root)
        if existing is None and root.exists() and any(root.iterdir()):
            raise InputError(
                f"{root} exists and is not a relabel-store store; refusing to write into it. "
                "Choose a new output path."
            )
        if existing is not None and overwrite:
            shutil.rmtree(root)
            existing = None
        if existing is None:
            cls._create(root, metadata)
            return cls(root, metadata, threads=threads)
        old = StoreMetadata.from_json(existing, where=str(root))
        if old.complete and (root / MANIFEST_NAME).exists():
            raise InputError(
                f"{root} already holds a finalized store (digest in manifest.json). Use a new "
                "output path, or overwrite it explicitly (--overwrite / overwrite=True)."
            )
        diff = _settings_diff(old, metadata)
        if diff:
            raise InputError(
                f"{root} holds an unfinished store started with different settings ({diff}). "
                "Re-run with the original settings to resume it, or pass --overwrite to start over."
            )
        return cls(root, replace(old, complete=False), threads=threads)

    @staticmethod
    def _create(root: Path, m: StoreMetadata) -> None:
        root.mkdir(parents=True, exist_ok=True)
        zstore = LocalStore(root)
        group = zarr.create_group(zstore, zarr_format=3, attributes={ATTRS_KEY: m.to_json()})
        h, w = m.grid
        rec = (h, w, m.k)
        dims = ("record", "y", "x", "k")
        s = m.shard_records
        for name, dtype in ((INDICES, "uint16"), (VALUES, "float16")):
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
        (root / PROGRESS_DIR).mkdir(exist_ok=True)

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
    ) -> None:
        """Write every record of one shard, then mark it done.

        ``errors[i]`` (a dict with at least ``reason``) marks row i as failed: its data is
        written as zeros and its key is left out of the finished store and listed in
        ``errors.jsonl``.
        """
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        rows = self.shard_rows(shard)
        n = len(rows)
        m = self.metadata
        rec = (n, *m.grid, m.k)
        errors = list(errors) if errors is not None else [None] * n
        keys = list(keys)
        _check_keys(keys, n)
        if len(errors) != n:
            raise ValueError(f"shard {shard} needs {n} error entries, got {len(errors)}")
        indices = np.asarray(indices)
        values = np.asarray(values)
        if indices.shape != rec or values.shape != rec:
            raise ValueError(
                f"shard {shard} needs indices and values of shape {rec}, got "
                f"{indices.shape} and {values.shape}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= m.num_classes):
            raise ValueError(f"class ids must be in 0..{m.num_classes - 1}")
        values16 = values.astype(np.float16)
        if not np.isfinite(values16).all():
            raise ValueError("values must be finite and within float16 range (|logit| < 65504)")
        labels_list = np.asarray(labels, dtype=np.int32).reshape(n).tolist()
        sizes_list = np.asarray(sizes, dtype=np.int32).reshape(n, 2).tolist()
        failed = np.array([e is not None for e in errors], dtype=bool)
        if failed.any():
            indices = indices.copy()
            indices[failed] = 0
            values16[failed] = 0
        pool = self._executor()
        pending = [
            (name, self._encoders[name].start(data, pool))
            for name, data in ((INDICES, indices.astype(np.uint16, copy=False)), (VALUES, values16))
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
        }
        atomic_write_bytes(self._progress_path(shard), json.dumps(progress).encode())

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="relabel-compress")
        return self._pool

    def background(self, max_pending: int = 2) -> BackgroundWriter:
        """A :class:`BackgroundWriter` for this store: ``submit`` shards and go on working."""
        return BackgroundWriter(self, max_pending)

    def close(self) -> None:
        """Stop the compression threads (:meth:`finalize` does it too; writing restarts them)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- sealing --------------------------------------------------------------------------------

    def finalize(self) -> Manifest:
        """Index the keys, write errors.jsonl, mark the store complete, write the manifest."""
        self.close()
        missing = sorted(set(range(self.num_shards)) - self.completed_shards())
        if missing:
            raise IncompleteStoreError(
                f"cannot finalize {self.root}: {len(missing)} of {self.num_shards} shards are not "
                f"written yet (first: {missing[:5]}). Resume generation to write them."
            )
        keys: list[bytes] = []
        rows: list[int] = []
        labels: list[int] = []
        sizes: list[list[int]] = []
        failures: list[dict[str, Any]] = []
        for shard in range(self.num_shards):
            p = json.loads(self._progress_path(shard).read_bytes())
            entries = zip(p["keys"], p["labels"], p["sizes"], p["errors"], strict=True)
            for row, (key, label, size, err) in zip(self.shard_rows(shard), entries, strict=True):
                if err is None:
                    keys.append(key.encode())
                    rows.append(row)
                    labels.append(label)
                    sizes.append(size)
                else:
                    failures.append({"key": key, **err})
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
        shutil.rmtree(self.root / PROGRESS_DIR, ignore_errors=True)
        return manifest


def _write_group_attrs(root: Path, metadata: StoreMetadata) -> None:
    path = root / "zarr.json"
    group = json.loads(path.read_bytes())
    group.setdefault("attributes", {})[ATTRS_KEY] = metadata.to_json()
    atomic_write_bytes(path, json.dumps(group, indent=2).encode())


def _check_keys(keys: list[str], n: int) -> None:
    if len(keys) != n:
        raise ValueError(f"expected {n} keys, got {len(keys)}")
    for k in keys:
        if not isinstance(k, str) or not k or "\x00" in k or k != k.strip():
            raise InputError(
                f"invalid key {k!r}: keys must be non-empty strings without NUL or surrounding "
                "whitespace"
            )


def _settings_diff(old: StoreMetadata, new: StoreMetadata) -> str:
    a, b = old.to_json(), new.to_json()
    changed = sorted(k for k in a.keys() | b.keys() if k not in _VOLATILE and a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed)[:500]


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
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
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
            raise RuntimeError("this BackgroundWriter is closed")
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
