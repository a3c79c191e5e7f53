"""``relabel-store import``: the published ReLabel / TokenLabeling maps as a store."""

from __future__ import annotations

from pathlib import Path

import click

from relabel_store._extras import requires_extra
from relabel_store.format import DEFAULT_SHARD_RECORDS, PROGRESS_DIR


@click.command(name="import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Store to write (a folder, e.g. imagenet-relabel.relabel.zarr).",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["auto", "relabel", "tokenlabeling"]),
    default="auto",
    show_default=True,
    help="The release: ReLabel (float32 [2, 5, 15, 15]) or TokenLabeling (float16 "
    "[2, 5, H, W]); auto recognises it from the files.",
)
@click.option(
    "--values",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="How logits are stored: float16 (half the size) or float32 (exact for ReLabel's "
    "float32 maps). The summary prints what float16 changes in pooled targets.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decoding processes (default: one per CPU; 0 decodes in this process).",
)
@click.option(
    "--shard-records",
    default=DEFAULT_SHARD_RECORDS,
    show_default=True,
    help="Records per shard file.",
)
@click.option(
    "--on-error",
    type=click.Choice(["skip", "fail"]),
    default="skip",
    show_default=True,
    help="Members that are not label maps: list them in errors.jsonl and go on, or stop.",
)
@click.option("--resume", is_flag=True, help="Require an unfinished store at --output to resume.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store at --output first.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output or summary.")
def import_(source: Path, output: Path, format_: str, values: str, workers: int | None,
            shard_records: int, on_error: str, resume: bool, overwrite: bool,
            quiet: bool) -> None:  # fmt: skip
    """Convert published label maps (SOURCE: the release's tar, or its extracted folder).

    The official ReLabel release (relabel_imagenet.tar, EfficientNet-L2 maps of ImageNet's
    training set) and TokenLabeling's NFNet-F6 maps are read safely (tensors only, never
    pickled objects) and written as a verified store keyed by file stem. Rerunning the same
    command after an interruption resumes it; the finished store is identical.
    """
    with requires_extra("generate", "relabel-store import"):
        from relabel_store.importer import import_maps

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    if resume and not (output / PROGRESS_DIR).is_dir():
        raise click.UsageError(f"--resume: there is no unfinished store at {output}")
    result = import_maps(
        source,
        output,
        format=format_,  # type: ignore[arg-type]
        values=values,
        workers=workers,
        shard_records=shard_records,
        on_error=on_error,  # type: ignore[arg-type]
        overwrite=overwrite,
        progress=False if quiet else None,
    )
    if not quiet:
        click.echo(result.summary())
