"""``relabel-store merge``: the slices of one ``generate --slice`` run, made one store."""

from __future__ import annotations

from pathlib import Path

import click

from relabel_store.cli.quality import echo_headline


@click.command()
@click.argument("parts", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The merged store to write (a local folder).",
)
@click.option("--overwrite", is_flag=True, help="Delete an existing store at --output first.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output or summary.")
def merge(parts: tuple[str, ...], output: Path, overwrite: bool, quiet: bool) -> None:
    """Assemble the slices PARTS (folders or fsspec URLs written by `generate --slice I/N`)
    into one finalized store.

    Shard files are copied as they are and checked; the key index, errors.jsonl and manifest
    are built as a single run builds them, so the data files equal a single run's. Slices that
    are not one run's (other settings, a slice missing, twice or unfinished, overlapping
    shards) are refused with every difference listed. Rerunning resumes an interrupted merge.
    """
    from relabel_store.write._run import run_summary
    from relabel_store.write.slices import merge as run

    result = run(parts, output, overwrite=overwrite, progress=False if quiet else None)
    if not quiet:
        click.echo(
            run_summary(
                result.path,
                records=result.records,
                skipped=result.skipped,
                done_now=result.shards_copied,
                unit="shards",
                seconds=result.seconds,
                store_bytes=result.store_bytes,
                digest=result.digest,
                already_complete=result.already_complete,
                before=[("slices", f"{len(parts)} merged")],
            )
        )
        if result.records:
            echo_headline(output)
