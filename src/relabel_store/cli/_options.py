"""The options every store-writing command (``generate``, ``import``) shares, defined once.

Both write a store shard by shard, decode their inputs in worker processes, skip or stop at
unusable inputs, and resume an interrupted run: the same options, the same defaults and the same
checks, so that a requeued job behaves the same whichever command it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from relabel_store.format.metadata import DEFAULT_SHARD_RECORDS, PROGRESS_DIR
from relabel_store.write._run import ON_ERROR

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option(
        "-o",
        "--output",
        required=True,
        callback=lambda ctx, param, value: _output(value),
        help="Store to write (a folder, e.g. train.relabel.zarr; generate --slice also takes "
        "an fsspec URL such as s3://bucket/train-0).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="Processes decoding the inputs (default: the CPU cores of this process, shared "
        "among torchrun's ranks on a node; 0 decodes in this process).",
    ),
    click.option(
        "--shard-records",
        type=click.IntRange(min=1),
        default=DEFAULT_SHARD_RECORDS,
        show_default=True,
        help="Records per shard file (the unit of writing, resuming and caching).",
    ),
    click.option(
        "--on-error",
        type=click.Choice(ON_ERROR),
        default="skip",
        show_default=True,
        help="Unusable inputs (images that do not decode, files that are not label maps): list "
        "them in errors.jsonl and go on, or stop at the first (finished shards are kept).",
    ),
    click.option(
        "--resume",
        is_flag=True,
        help="Require a store at --output to resume (a finished one: nothing to do, exit 0).",
    ),
    click.option("--overwrite", is_flag=True, help="Delete an existing store at --output first."),
    click.option("-q", "--quiet", is_flag=True, help="No progress output or summary."),
)


def _output(value: str) -> Path | str:
    """A local folder as a Path; an fsspec URL (``s3://...``) kept as given (a Path would fold
    its ``//``). Only ``generate --slice`` writes to URLs; the commands refuse them otherwise."""
    if "://" in value:
        return value
    if Path(value).exists() and not Path(value).is_dir():
        raise click.BadParameter(f"{value} is a file, not a folder", param_hint="'-o'")
    return Path(value)


def store_writing_options(command: F) -> F:
    """Add ``-o``, ``--workers``, ``--shard-records``, ``--on-error``, ``--resume``,
    ``--overwrite`` and ``-q`` to ``command``."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def check_resume(output: Path | str, *, resume: bool, overwrite: bool) -> None:
    """Refuse ``--resume`` with ``--overwrite``, and ``--resume`` where there is no store to
    resume. A finished store passes: the command reports it complete and exits 0 (a requeued
    job reruns its command). A URL is checked by the command that writes there."""
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    if isinstance(output, str):
        return
    if resume and not any((output / name).exists() for name in ("zarr.json", PROGRESS_DIR)):
        raise click.UsageError(f"--resume: there is no store at {output} to resume")


def in_existing_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Any:
    """A click callback for a file to write: its folder must exist, checked before any work (a
    report computed for minutes, then lost to a typo in the path, helps nobody)."""
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(
            f"the folder {value.parent} does not exist; create it or choose another path"
        )
    return value
