"""Write a store shard by shard, resumably, with zarr-python; ``finalize()`` seals it.

Rows are fixed when the store is created (``rows`` records, ``shard_records`` per shard). Each
``write_shard`` call writes one whole shard of every record array through zarr-python (which
replaces files atomically), then records the shard's keys in ``_progress/shard-NNNNNN.json``,
also atomically. A shard is done exactly when its progress file exists, so after a crash the
same shard is simply written again, byte for byte the same. ``finalize`` sorts the keys, writes
the ``keys``/``rows`` index and ``errors.jsonl``, marks the metadata complete and writes
``manifest.json`` last. Rows whose image failed are written as zeros and left out of the index.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

from relabel_store._io import atomic_write_bytes
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


# Per-record chunks, chosen by benchmarks/size.py on real maps (see docs/format.md): class ids
# compress best with zstd at a high level; float16 logits need their byte planes apart (Blosc's
# byte shuffle) because the low byte of each logit is incompressible. crc32c guards the Blosc
# frames, which carry no checksum of their own.
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
    """Writes one store. Create or resume with :meth:`open`; seal with :meth:`finalize`."""

    def __init__(self, root: Path, metadata: StoreMetadata) -> None:
        self.root = root
        self.metadata = metadata
        self._zstore = LocalStore(root)
        self._arrays = {
            name: zarr.open_array(self._zstore, path=name, mode="r+") for name in (INDICES, VALUES)
        }

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], metadata: StoreMetadata, *, overwrite: bool = False
    ) -> StoreWriter:
        """Create a store at ``path``, or resume the unfinished one already there.

        Resuming requires the same settings (rows, grid, k, classes, annotator, ...): a store
        started differently is refused rather than mixed. ``overwrite`` deletes an existing
        relabel-store store first (never a folder that is not one).
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
            return cls(root, metadata)
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
        return cls(root, replace(old, complete=False))

    @staticmethod
    def _create(root: Path, m: StoreMetadata) -> None:
        root.mkdir(parents=True, exist_ok=True)
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
        stored = values.astype(m.values_dtype)
        if not np.isfinite(stored).all():
            raise ValueError(
                f"values must be finite and within {m.values_dtype} range"
                + (" (|logit| < 65504)" if m.values_dtype == "float16" else "")
            )
        labels_list = np.asarray(labels, dtype=np.int32).reshape(n).tolist()
        sizes_list = np.asarray(sizes, dtype=np.int32).reshape(n, 2).tolist()
        failed = np.array([e is not None for e in errors], dtype=bool)
        if failed.any():
            indices = indices.copy()
            indices[failed] = 0
            stored[failed] = 0
        sl = slice(rows.start, rows.stop)
        self._arrays[INDICES][sl] = indices.astype(np.uint16)
        self._arrays[VALUES][sl] = stored
        progress = {
            "shard": shard,
            "keys": keys,
            "labels": labels_list,
            "sizes": sizes_list,
            "errors": errors,
        }
        atomic_write_bytes(self._progress_path(shard), json.dumps(progress).encode())

    # -- sealing --------------------------------------------------------------------------------

    def finalize(self) -> Manifest:
        """Index the keys, write errors.jsonl, mark the store complete, write the manifest."""
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
