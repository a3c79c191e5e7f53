"""``relabel-store import``: the published ReLabel / TokenLabeling maps as a store."""

from __future__ import annotations

from pathlib import Path

import click

from relabel_store._extras import requires_extra
from relabel_store.cli._options import check_resume, store_writing_options
from relabel_store.cli.quality import echo_headline
from relabel_store.write._run import OnError

__all__ = ["import_"]


@click.command(name="import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
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
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The images the maps were made from (ImageNet's train folder): adds each record's "
    "image signature, which loaders check training images against. The published maps come "
    "without; add them later with `relabel-store sign`.",
)
@store_writing_options
def import_(source: Path, output: Path | str, format_: str, values: str, images: Path | None,
            workers: int | None, shard_records: int, on_error: OnError, resume: bool,
            overwrite: bool, quiet: bool) -> None:  # fmt: skip
    """Convert published label maps (SOURCE: the release's tar, or its extracted folder).

    The official ReLabel release (relabel_imagenet.tar, EfficientNet-L2 maps of ImageNet's
    training set) and TokenLabeling's NFNet-F6 maps are read safely (tensors only, never
    pickled objects) and written as a verified store keyed by file stem. Rerunning the same
    command after an interruption resumes it; the finished store is identical. Rerunning it on
    a finished store says so and exits 0.
    """
    with requires_extra("generate", "relabel-store import"):
        from relabel_store.write.importer import import_maps

    if isinstance(output, str):
        raise click.UsageError(
            f"import writes a local folder, not {output}; publish it with `relabel-store push`"
        )
    check_resume(output, resume=resume, overwrite=overwrite)
    result = import_maps(
        source,
        output,
        format=format_,  # type: ignore[arg-type]
        values=values,
        workers=workers,
        shard_records=shard_records,
        on_error=on_error,
        overwrite=overwrite,
        progress=False if quiet else None,
    )
    if not quiet:
        click.echo(result.summary())
    if images is not None and result.records:
        from relabel_store.write.sign import sign_store

        signed = sign_store(output, images, workers=workers or 0, progress=False if quiet else None)
        if not quiet:
            click.echo(signed.summary())
    if not quiet and result.records:
        echo_headline(output)
