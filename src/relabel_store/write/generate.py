"""``generate``: annotate an image dataset with a dense annotator and write a store.

Rows are the input's keys in sorted order; the store is written shard by shard. Batches never
straddle shards and always split a shard the same way, so a resumed run computes every shard
exactly as an uninterrupted one would (same bytes). Under ``torchrun`` each rank annotates the
shards ``s`` with ``s % world_size == rank``; rank 0 holds the store's write lock for all ranks
and finalizes after a barrier. A second run on the same store is refused while one writes it,
and a rerun on a store finished with the same settings reports it complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store._progress import Progress, resumed
from relabel_store.errors import ConfigurationError
from relabel_store.format._shards import cores_per_process
from relabel_store.format.metadata import DEFAULT_SHARD_RECORDS, SIGNATURE_BYTES, StoreMetadata
from relabel_store.write._run import OnError, RunResult, check_run_options, input_failed
from relabel_store.write.slices import Slice, SliceOutput, is_url
from relabel_store.write.writer import StoreWriter

with requires_extra("generate", "relabel_store.write.generate"):
    import torch
    from torch.utils.data import DataLoader, Sampler

    from relabel_store.write.annotator import DenseAnnotator, label_space_of
    from relabel_store.write.inputs import (
        InputBatch,
        InputDataset,
        InputFailure,
        InputSource,
        collate_inputs,
    )

__all__ = ["GenerateResult", "generate", "writer_threads"]


@dataclass(frozen=True, kw_only=True)
class GenerateResult(RunResult):
    """What a ``generate`` run did (see :class:`~relabel_store.write._run.RunResult`)."""

    slice: Slice | None = None  # the slice written (``generate --slice``), not a whole store
    location: str | None = None  # where the slice is (its URL, or the folder)

    unit: ClassVar[str] = "images"

    def summary(self) -> str:
        """What ``relabel-store generate`` prints when it is done."""
        if self.slice is None:
            return super().summary()
        done = "already complete: nothing to do" if self.already_complete else "complete"
        return (
            f"slice:     {self.slice} at {self.location} ({done})\n"
            f"time:      {self.seconds:.1f} s for {self.done_now:,} images\n"
            f"next:      when every slice is complete, run `relabel-store merge "
            f"<the {self.slice.count} slices> -o STORE`"
        )


class _ShardMaps:
    """One shard's annotations on their way from the device to the writer.

    Each batch's top-k maps are narrowed on the device to what the store holds (uint16 ids,
    float16 logits: a quarter of the int64/float32 bytes) and copied without waiting into host
    buffers, pinned on CUDA. Nothing syncs per batch: the writer's thread waits once per shard,
    in :meth:`ready`, for the last copy to land.
    """

    def __init__(self, rows: range, grid: tuple[int, int], k: int, device: torch.device) -> None:
        n = len(rows)
        shape = (n, *grid, k)
        self.start = rows.start
        self.device = device
        pin = device.type == "cuda"
        self.indices = torch.empty(shape, dtype=torch.uint16, pin_memory=pin)
        self.values = torch.empty(shape, dtype=torch.float16, pin_memory=pin)
        self.local = np.empty(n, np.int64)  # shard-local row of each filled slot, in order
        self.filled = 0
        self.labels = np.full(n, -1, np.int32)
        self.sizes = np.zeros((n, 2), np.int32)
        self.signatures = np.zeros((n, SIGNATURE_BYTES), np.uint8)
        self.keys = [""] * n  # every slot is filled (the writer rejects an empty key)
        self.errors: list[dict[str, str] | None] = [None] * n
        self._copied: torch.cuda.Event | None = None

    def fail(self, failure: InputFailure, label: int) -> None:
        i = failure.row - self.start
        self.keys[i] = failure.key
        self.labels[i] = label
        self.errors[i] = {"path": failure.location, "reason": failure.reason}

    def add(self, batch: InputBatch, values: torch.Tensor, indices: torch.Tensor) -> None:
        local = batch.rows.numpy() - self.start
        slots = slice(self.filled, self.filled + len(local))
        self.indices[slots].copy_(indices.to(torch.uint16), non_blocking=True)
        self.values[slots].copy_(values.to(torch.float16), non_blocking=True)
        if self.device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(self.device))
        self.local[slots] = local
        self.filled += len(local)
        self.labels[local] = batch.labels.numpy()
        self.sizes[local] = batch.sizes.numpy()
        if batch.signatures is not None:
            self.signatures[local] = batch.signatures.numpy()
        for i, key in zip(local.tolist(), batch.keys, strict=True):
            self.keys[i] = key

    def ready(self) -> dict[str, Any]:
        """The shard's data for :meth:`StoreWriter.write_shard`, once the copies have landed."""
        if self._copied is not None:
            self._copied.synchronize()
        indices, values = self.indices.numpy(), self.values.numpy()
        if self.filled < len(self.keys):  # failed rows: zeros in their place
            filled = self.local[: self.filled]
            indices, values = np.zeros_like(indices), np.zeros_like(values)
            indices[filled] = self.indices[: self.filled].numpy()
            values[filled] = self.values[: self.filled].numpy()
        return {
            "keys": self.keys,
            "labels": self.labels,
            "sizes": self.sizes,
            "indices": indices,
            "values": values,
            "errors": self.errors,
            "signatures": self.signatures,
        }


class _ShardBatches(Sampler[list[int]]):
    """Batches of dataset positions that never straddle shards, split the same way every run."""

    def __init__(self, shard_sizes: list[int], batch_size: int) -> None:
        self.batches: list[list[int]] = []
        start = 0
        for n in shard_sizes:
            for b in range(0, n, batch_size):
                self.batches.append(list(range(start + b, start + min(b + batch_size, n))))
            start += n

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def writer_threads(workers: int, cores: int | None = None) -> int:
    """Compression threads of ``generate``'s background writer: the cores of the process
    (:func:`~relabel_store.format._shards.cores_per_process`) that its ``workers`` decoding processes
    leave free, at least one. Decoding and compression then never compete for a core, which
    cost a tenth of the throughput when both took every core (``benchmarks/generate.py``)."""
    cores = cores_per_process() if cores is None else cores
    return max(1, cores - workers)


def generate(
    inputs: InputSource,
    output: str | os.PathLike[str],
    annotator: DenseAnnotator,
    *,
    batch_size: int = 32,
    num_workers: int | None = None,
    shard_records: int = DEFAULT_SHARD_RECORDS,
    dataset: dict[str, Any] | None = None,
    parent: dict[str, Any] | None = None,
    on_error: OnError = "skip",
    overwrite: bool = False,
    progress: bool | None = None,
    slice: Slice | None = None,
    staging: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> GenerateResult:
    """Annotate every image of ``inputs`` and write (or resume) the store at ``output``.

    ``on_error="skip"`` records unreadable images in ``errors.jsonl`` and goes on;
    ``"fail"`` stops at the first one (finished shards stay on disk; rerun to resume).
    ``num_workers``: DataLoader processes decoding images (default: the cores this process
    may use). Finished shards are written by a background thread while annotation goes on,
    compressed on the cores the workers leave free (:func:`writer_threads`); a failed write
    stops the run with its error. ``progress``: None draws a bar on a terminal and writes a
    line every ``$RELABEL_STORE_PROGRESS_INTERVAL`` seconds (30) elsewhere (a SLURM log); True
    always reports, False never.

    ``slice``: annotate only this slice's shards into a partial store at ``output``, a folder or
    an fsspec URL (written in ``staging``, by default a folder of the cache, and uploaded shard
    by shard; ``storage_options`` go to fsspec); :func:`relabel_store.write.slices.merge`
    assembles the slices. See :mod:`relabel_store.write.slices`.
    """
    check_run_options(on_error=on_error, workers=num_workers, shard_records=shard_records)
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    if annotator.device.type == "cuda":
        # This process only feeds the GPU; torch's intra-op threads would spin on the cores
        # the decoding workers use (a stand-in annotator ran 8x slower with them, measured).
        torch.set_num_threads(1)
    rank, world = _distributed()
    described = annotator.describe()
    space = label_space_of(annotator)
    meta = StoreMetadata(
        grid=annotator.grid,
        k=annotator.k,
        num_classes=annotator.num_classes,
        rows=len(inputs),
        shard_records=shard_records,
        class_names=space.class_names,
        label_space=space.name,
        class_identifiers=space.class_identifiers,
        annotator=described,
        dataset={**inputs.describe(), "class_names": inputs.class_names, **(dataset or {})},
        parent=parent,
    )
    workers = cores_per_process() if num_workers is None else num_workers
    threads = writer_threads(workers)
    if slice is not None:
        return _generate_slice(inputs, output, annotator, meta, slice, started, world,
                               staging=staging, storage_options=storage_options,
                               overwrite=overwrite, threads=threads, batch_size=batch_size,
                               workers=workers, on_error=on_error, progress=progress)  # fmt: skip
    if is_url(output):
        raise ConfigurationError(
            f"generate writes a whole store to a local folder, not {output}: write it locally "
            "and publish it with `relabel-store push`, or write slices to URLs (--slice I/N) and "
            "merge them"
        )
    path = Path(output)
    # Rank 0 creates the store and holds its write lock for every rank; a store that is already
    # finished with these settings is reported, not refused (requeued jobs rerun the command).
    finished = writer = None
    if rank == 0:
        finished = None if overwrite else StoreWriter.finished(path, meta)
        if finished is None:
            writer = StoreWriter.open(path, meta, overwrite=overwrite, threads=threads)
    _barrier(world)
    if rank != 0:
        finished = None if overwrite else StoreWriter.finished(path, meta)
        if finished is None:
            writer = StoreWriter.open(path, meta, lock=False, threads=threads)
    if finished is not None:
        old, manifest = finished
        return GenerateResult(
            path=path,
            records=old.record_count,
            skipped=old.rows - old.record_count,
            done_now=0,
            seconds=time.perf_counter() - started,
            store_bytes=manifest.total_bytes,
            digest=manifest.digest if rank == 0 else None,
            already_complete=True,
        )
    assert writer is not None
    try:
        return _annotate(writer, inputs, annotator, meta, rank, world, started,
                         batch_size=batch_size, workers=workers, on_error=on_error,
                         progress=progress)  # fmt: skip
    finally:
        writer.close()


def _generate_slice(
    inputs: InputSource,
    output: str | os.PathLike[str],
    annotator: DenseAnnotator,
    meta: StoreMetadata,
    part: Slice,
    started: float,
    world: int,
    *,
    staging: str | os.PathLike[str] | None,
    storage_options: dict[str, Any] | None,
    overwrite: bool,
    threads: int,
    **options: Any,
) -> GenerateResult:
    """Annotate one slice's shards into a partial store (see :mod:`relabel_store.write.slices`)."""
    if world > 1:
        raise ConfigurationError(
            "--slice runs one process per slice (a SLURM array task, a Kubernetes Job); under "
            "torchrun, write one whole store to a shared filesystem instead"
        )
    out = SliceOutput(output, part, staging=staging, storage_options=storage_options)
    if overwrite and out.remote is not None:
        raise ConfigurationError(
            f"--overwrite deletes local stores only; remove {out.location} with your storage's "
            "own tools, or write the slice to a new URL"
        )
    out.prepare(meta)
    writer = StoreWriter.open(out.local, meta, overwrite=overwrite, threads=threads)
    try:
        out.started(writer)
        return _annotate(writer, inputs, annotator, meta, 0, 1, started, part=part,
                         location=out.location, **options)  # fmt: skip
    finally:
        writer.close()


def _annotate(
    writer: StoreWriter,
    inputs: InputSource,
    annotator: DenseAnnotator,
    meta: StoreMetadata,
    rank: int,
    world: int,
    started: float,
    *,
    batch_size: int,
    workers: int,
    on_error: OnError,
    progress: bool | None,
    part: Slice | None = None,
    location: str | None = None,
) -> GenerateResult:
    """Annotate this rank's unfinished shards (of ``part`` only, when given), then (rank 0)
    finalize the store; a slice is left for ``merge`` to finalize."""
    path = writer.root
    done = writer.completed_shards()
    mine = part.shards(writer.num_shards) if part else range(rank, writer.num_shards, world)
    todo = [s for s in mine if s not in done]
    shard_rows = [writer.shard_rows(s) for s in todo]
    rows = [r for rng in shard_rows for r in rng]

    device = annotator.device
    loader = DataLoader(
        # uint8: normalised on device; each image's content signature taken before the resize
        InputDataset(inputs, annotator.transform.resized, rows, signatures=True),
        batch_sampler=_ShardBatches([len(r) for r in shard_rows], batch_size),
        num_workers=workers,
        collate_fn=collate_inputs,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    bar = Progress(
        len(rows),
        desc=resumed(
            f"annotating (rank {rank}/{world})" if world > 1 else "annotating",
            len(done),
            writer.num_shards,
        ),
        unit="images",
        show=False if not rows else progress,
        position=rank if world > 1 else None,
    )
    batches = iter(loader)
    # Finished shards are compressed and written on the writer's thread while the next ones are
    # annotated; leaving the block waits for them (also when annotation fails: they are kept).
    with writer.background(max_pending=2) as background:
        for shard, rng in zip(todo, shard_rows, strict=True):
            maps = _ShardMaps(rng, annotator.grid, annotator.k, device)
            seen = 0
            while seen < len(rng):
                batch = next(batches)
                for f in batch.failures:
                    if on_error == "fail":
                        raise input_failed(f"annotate {f.location} (key {f.key!r})", f.reason)
                    maps.fail(f, inputs.label(f.row))
                if len(batch):
                    values, indices = annotator(batch.images)
                    maps.add(batch, values, indices)
                step = len(batch) + len(batch.failures)
                seen += step
                bar.update(step)
            background.submit_call(shard, maps.ready)
    bar.close()
    if part is not None:
        return GenerateResult(
            path=path,
            records=0,
            skipped=0,
            done_now=len(rows),
            seconds=time.perf_counter() - started,
            store_bytes=0,
            digest=None,
            already_complete=not todo,
            slice=part,
            location=location,
        )
    _barrier(world)
    digest = None
    if rank == 0:
        manifest = writer.finalize()
        digest = manifest.digest
        size = manifest.total_bytes
        records = writer.metadata.record_count
    else:
        size, records = 0, 0
    _barrier(world)
    return GenerateResult(
        path=path,
        records=records,
        skipped=meta.rows - records if rank == 0 else 0,
        done_now=len(rows),
        seconds=time.perf_counter() - started,
        store_bytes=size,
        digest=digest,
    )
