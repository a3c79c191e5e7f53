"""Teacher ensembles: one store from several stores of the same images by different annotators.

FKD and Dataset Reinforcement label with teacher ensembles; here the teachers' stores are made
as usual (``generate`` with each annotator) and combined afterwards, so a teacher that is
already annotated costs nothing again. Per cell, the combined logit of class ``c`` is the
weighted mean of the members' logits of ``c``, over the union of their top-k; then the top-k of
that union is kept. A class that a member does not list at a cell counts as:

* ``missing="zero"`` (default): logit 0, which is exactly how LabelPooling reads that member's
  store (its dense map holds 0 there), so the ensemble is the weighted mean of the dense maps the
  members' stores teach;
* ``missing="kth"``: the member's lowest stored logit at that cell (the k-th), an upper bound of
  the logit it did not keep: it favours classes some members rank just below their top-k.

The members must cover the same keys with the same image sizes and labels, the same grid and
the same classes (by identity); the combined store records each member's manifest digest,
location, weight and annotator description (``annotator["members"]``), and its dataset
description is the first member's. It is written shard by shard like any store: an interrupted
run resumes where it stopped (the same command again), and a finished one is reported complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from relabel_store._progress import Progress, resumed
from relabel_store.errors import ConfigurationError, InputError
from relabel_store.format._shards import cores_per_process
from relabel_store.format.metadata import DEFAULT_SHARD_RECORDS, StoreMetadata
from relabel_store.read.api import load_relabel
from relabel_store.read.reader import RelabelStore
from relabel_store.write._run import run_summary
from relabel_store.write.refinery import store_lineage
from relabel_store.write.writer import StoreWriter

__all__ = ["EnsembleResult", "MissingPolicy", "combine_maps", "ensemble_stores"]

MissingPolicy = Literal["zero", "kth"]
_MISSING: tuple[str, ...] = ("zero", "kth")
#: Records combined at once: bounds the memory of a shard's union (a few MB).
_CHUNK = 512


@dataclass(frozen=True)
class EnsembleResult:
    """What an ensemble run did."""

    path: Path
    records: int
    members: int
    combined_now: int
    seconds: float
    store_bytes: int
    digest: str
    already_complete: bool = False

    def summary(self) -> str:
        """What ``relabel-store merge --ensemble`` prints when it is done."""
        return run_summary(
            self.path,
            records=self.records,
            skipped=0,
            done_now=self.combined_now,
            unit="records",
            seconds=self.seconds,
            store_bytes=self.store_bytes,
            digest=self.digest,
            already_complete=self.already_complete,
        )


def combine_maps(
    indices: Sequence[np.ndarray],
    values: Sequence[np.ndarray],
    weights: Sequence[float],
    k: int,
    *,
    missing: MissingPolicy = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """Combine members' top-k maps ``(N, H, W, K_j)`` into ``(indices, values)`` ``(N, H, W, k)``.

    ``weights`` sum to 1. Values come out float32, descending per cell; equal values are
    ordered by class id, so the result never depends on anything but the inputs.
    """
    if missing not in _MISSING:
        raise ConfigurationError(f"missing must be one of {_MISSING}, got {missing!r}")
    shape = indices[0].shape[:-1]
    ids = np.concatenate([np.asarray(i).reshape(-1, i.shape[-1]) for i in indices], axis=1)
    parts, base = [], np.zeros(ids.shape[0], np.float32)
    for v, w in zip(values, weights, strict=True):
        v = np.asarray(v, np.float32).reshape(-1, v.shape[-1])
        if missing == "kth":
            kth = v.min(axis=1, keepdims=True)  # stored logits descend: the k-th is the lowest
            base += w * kth[:, 0]
            v = v - kth
        parts.append(np.float32(w) * v)
    vals = np.concatenate(parts, axis=1)
    if ids.shape[1] < k:
        raise ConfigurationError(f"k={k} exceeds the {ids.shape[1]} classes the members list")
    order = np.argsort(ids, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1)
    keep = np.ones(ids.shape, bool)
    for j in range(1, ids.shape[1]):  # a class listed by several members: sum into its last slot
        same = ids[:, j] == ids[:, j - 1]
        vals[same, j] += vals[same, j - 1]
        keep[same, j - 1] = False
    vals = vals + base[:, None]
    ranked = np.where(keep, -vals, np.inf)  # duplicates sort last, never chosen before a class
    top = np.argsort(ranked, axis=1, kind="stable")[:, :k]
    return (
        np.take_along_axis(ids, top, axis=1).reshape(*shape, k),
        np.take_along_axis(vals, top, axis=1).reshape(*shape, k),
    )


def _normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    given = [float(w) for w in weights]
    if len(given) != n:
        raise ConfigurationError(f"{len(given)} weights for {n} stores; give one per store")
    if not all(np.isfinite(w) and w > 0 for w in given):
        raise ConfigurationError(f"weights must be positive numbers, got {given}")
    total = sum(given)
    return [w / total for w in given]


def _check_members(stores: Sequence[RelabelStore], names: Sequence[str]) -> None:
    """Refuse members that do not label the same images in the same label space."""
    first, m0 = stores[0], stores[0].metadata
    for store, name in zip(stores[1:], names[1:], strict=True):
        m = store.metadata
        for what, a, b in (
            ("grid", tuple(m0.grid), tuple(m.grid)),
            ("num_classes", m0.num_classes, m.num_classes),
            ("class_identifiers", m0.class_identifiers, m.class_identifiers),
            ("value_kind", m0.value_kind, m.value_kind),
        ):
            if a != b:
                shown = "they differ" if what == "class_identifiers" else f"{a} vs {b}"
                raise InputError(
                    f"{name} differs from {names[0]} in {what} ({shown}); an ensemble needs "
                    "stores of the same grid and classes (regenerate one with --grid to match)"
                )
        if m0.class_identifiers is None and m0.class_names != m.class_names:
            raise InputError(
                f"{name} and {names[0]} name their classes differently and have no class "
                "identifiers to match them by"
            )
        if len(store) != len(first) or not np.array_equal(store.keys, first.keys):
            extra = np.setdiff1d(store.keys, first.keys)[:3].tolist()
            lacking = np.setdiff1d(first.keys, store.keys)[:3].tolist()
            raise InputError(
                f"{name} ({len(store)} records) and {names[0]} ({len(first)}) do not hold the "
                f"same keys (only in {name}: {[k.decode() for k in extra]}; missing there: "
                f"{[k.decode() for k in lacking]}); an ensemble combines stores of the same images"
            )
        if not np.array_equal(first.sizes, store.sizes):
            row = int(np.flatnonzero((first.sizes != store.sizes).any(axis=1))[0])
            raise InputError(
                f"{name} and {names[0]} record different image sizes for key "
                f"{first.keys[row].decode()!r}: they were not made from the same images"
            )


def _check_labels(batches: Sequence[Any], names: Sequence[str]) -> None:
    """Members made from the same dataset record the same labels (checked as records stream)."""
    for batch, name in zip(batches[1:], names[1:], strict=True):
        if not np.array_equal(batch.labels, batches[0].labels):
            row = int(np.flatnonzero(batch.labels != batches[0].labels)[0])
            raise InputError(
                f"{name} and {names[0]} record different labels for key "
                f"{batches[0].keys[row]!r} ({batch.labels[row]} vs {batches[0].labels[row]}): "
                "they were not made from the same dataset"
            )


def _ensemble_metadata(
    stores: Sequence[RelabelStore],
    lineages: Sequence[dict[str, Any]],
    weights: Sequence[float],
    given: Sequence[float] | None,
    k: int,
    missing: str,
    shard_records: int,
) -> StoreMetadata:
    m0 = stores[0].metadata
    members = [
        {
            "digest": lin["digest"],
            "location": lin["location"],
            "location_kind": lin["location_kind"],
            "weight": w,
            "weight_given": None if given is None else float(g),
            "annotator": dict(s.metadata.annotator),
        }
        for s, lin, w, g in zip(stores, lineages, weights, given or weights, strict=True)
    ]
    models = [str(s.metadata.annotator.get("model") or "?") for s in stores]
    annotator = {
        "model": "ensemble(" + ", ".join(models) + ")",
        "kind": "ensemble",
        "combine": "weighted mean of logits per cell over the union of the members' top-k, "
        "then top-k",
        "missing": missing,
        "missing_means": "logit 0, as LabelPooling reads the member's store"
        if missing == "zero"
        else "the member's lowest stored (k-th) logit at that cell",
        "grid": list(m0.grid),
        "k": k,
        "value_kind": "logits",
        "members": members,
    }
    dtypes = {s.metadata.values_dtype for s in stores}
    return StoreMetadata(
        grid=m0.grid,
        k=k,
        num_classes=m0.num_classes,
        rows=len(stores[0]),
        shard_records=shard_records,
        class_names=m0.class_names,
        label_space=m0.label_space,
        class_identifiers=m0.class_identifiers,
        values_dtype="float32" if "float32" in dtypes else "float16",
        annotator=annotator,
        dataset=dict(m0.dataset),
        parent=None,
    )


def ensemble_stores(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    weights: Sequence[float] | None = None,
    k: int | None = None,
    missing: MissingPolicy = "zero",
    shard_records: int = DEFAULT_SHARD_RECORDS,
    overwrite: bool = False,
    progress: bool | None = None,
) -> EnsembleResult:
    """Write the ensemble of the stores ``inputs`` (paths, URLs or names) to ``output``.

    ``weights``: one positive number per store (normalised to sum 1; default equal). ``k``:
    classes kept per cell (default: the largest of the members'). ``missing``: what a class a
    member does not list counts as (see the module docstring). Streaming: one shard of records
    at a time; rerunning the same call resumes an interrupted run.
    """
    started = time.perf_counter()
    if len(inputs) < 2:
        raise ConfigurationError(f"an ensemble needs at least two stores, got {len(inputs)}")
    if missing not in _MISSING:
        raise ConfigurationError(f"missing must be one of {_MISSING}, got {missing!r}")
    names = [os.fspath(i) for i in inputs]
    given = None if weights is None else [float(w) for w in weights]
    norm = _normalised_weights(given, len(names))
    stores = [load_relabel(i) for i in inputs]
    try:
        _check_members(stores, names)
        k = max(s.metadata.k for s in stores) if k is None else int(k)
        if not 1 <= k <= max(s.metadata.k for s in stores):
            raise ConfigurationError(
                f"k must be in 1..{max(s.metadata.k for s in stores)} (the most classes a "
                f"member keeps per cell), got {k}"
            )
        lineages = [store_lineage(i) for i in inputs]
        meta = _ensemble_metadata(stores, lineages, norm, given, k, missing, shard_records)
        path = Path(output)
        if not overwrite:
            finished = StoreWriter.finished(path, meta)
            if finished is not None:
                old, manifest = finished
                return EnsembleResult(path, old.record_count, len(stores), 0,
                                      time.perf_counter() - started, manifest.total_bytes,
                                      manifest.digest, already_complete=True)  # fmt: skip
        writer = StoreWriter.open(path, meta, overwrite=overwrite, threads=cores_per_process())
        try:
            done = writer.completed_shards()
            todo = [s for s in range(writer.num_shards) if s not in done]
            combined = sum(len(writer.shard_rows(s)) for s in todo)
            bar = Progress(
                combined,
                desc=resumed("combining", len(done), writer.num_shards),
                unit="records",
                show=False if not todo else progress,
            )
            with writer.background(max_pending=2) as background:
                for shard in todo:
                    rows = writer.shard_rows(shard)
                    out_i = np.empty((len(rows), *meta.grid, k), np.uint16)
                    out_v = np.empty((len(rows), *meta.grid, k), np.float32)
                    keys: list[str] = []
                    labels, sizes = [], []
                    for lo in range(0, len(rows), _CHUNK):
                        chunk = np.arange(rows.start + lo, min(rows.stop, rows.start + lo + _CHUNK))
                        batches = [s.get_rows(chunk) for s in stores]
                        _check_labels(batches, names)
                        keys += batches[0].keys
                        labels.append(batches[0].labels)
                        sizes.append(batches[0].sizes)
                        ids, vals = combine_maps(
                            [b.indices for b in batches], [b.values for b in batches], norm, k,
                            missing=missing,
                        )  # fmt: skip
                        out_i[lo : lo + len(chunk)] = ids
                        out_v[lo : lo + len(chunk)] = vals
                        bar.update(len(chunk))
                    background.submit(
                        shard,
                        keys=keys,
                        labels=np.concatenate(labels),
                        sizes=np.concatenate(sizes),
                        indices=out_i,
                        values=out_v.astype(np.dtype(meta.values_dtype)),
                    )
            bar.close()
            manifest = writer.finalize()
        finally:
            writer.close()
        return EnsembleResult(path, writer.metadata.record_count, len(stores), combined,
                              time.perf_counter() - started, manifest.total_bytes,
                              manifest.digest)  # fmt: skip
    finally:
        for store in stores:
            store.close()
