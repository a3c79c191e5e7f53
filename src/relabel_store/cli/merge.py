"""``relabel-store merge``: one store from several, in one of two modes.

- slices (default): the partial stores of one ``generate --slice I/N`` run, assembled as they
  are (:func:`relabel_store.write.slices.merge`);
- ``--ensemble``: stores of the same images by several annotators, their logits combined
  (:func:`relabel_store.write.ensemble.ensemble_stores`).
"""

from __future__ import annotations

from pathlib import Path

import click

from relabel_store.cli._options import check_resume
from relabel_store.cli.quality import echo_headline
from relabel_store.format.metadata import DEFAULT_SHARD_RECORDS

__all__ = ["merge"]


def _weights(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated numbers, e.g. 2,1") from None


@click.command()
@click.argument("stores", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The merged store to write (a local folder).",
)
@click.option(
    "--ensemble",
    is_flag=True,
    help="Combine stores of the same images by different annotators: weighted mean of logits "
    "per cell over the union of their top-k, then top-k. Without it, STORES are the slices of "
    "one `generate --slice` run.",
)
@click.option(
    "--weights",
    callback=_weights,
    default=None,
    help="--ensemble: one positive weight per store, comma-separated (normalised; default: equal).",
)
@click.option(
    "-k",
    "--top-k",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="--ensemble: classes kept per cell (default: the most any store keeps).",
)
@click.option(
    "--missing",
    type=click.Choice(["zero", "kth"]),
    default="zero",
    show_default=True,
    help="--ensemble: a class a store does not list at a cell counts as logit 0 (as "
    "LabelPooling reads it) or as that store's k-th logit there.",
)
@click.option(
    "--shard-records",
    type=click.IntRange(min=1),
    default=DEFAULT_SHARD_RECORDS,
    show_default=True,
    help="--ensemble: records per shard file of the new store (slices keep theirs).",
)
@click.option("--resume", is_flag=True, help="Require an unfinished store at --output.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store at --output first.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output or summary.")
def merge(stores: tuple[str, ...], output: Path, ensemble: bool, weights: list[float] | None,
          k: int | None, missing: str, shard_records: int, resume: bool, overwrite: bool,
          quiet: bool) -> None:  # fmt: skip
    """Merge STORES into one finalized store at --output.

    By default STORES are the slices (folders or fsspec URLs) written by `generate --slice I/N`:
    shard files are copied as they are and checked, and the key index, errors.jsonl and manifest
    are built as a single run builds them, so the data files equal a single run's. Slices that
    are not one run's (other settings, a slice missing, twice or unfinished, overlapping
    shards) are refused with every difference listed.

    With --ensemble, STORES hold the same images annotated by different models, and their
    logits are combined cell by cell.

    Rerunning the same command after an interruption resumes it; on a finished store it says
    so and exits 0.
    """
    if not ensemble:
        given = [
            name
            for name, used in (
                ("--weights", weights is not None),
                ("--top-k", k is not None),
                ("--missing", missing != "zero"),
                ("--shard-records", shard_records != DEFAULT_SHARD_RECORDS),
            )
            if used
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} only apply with --ensemble (combining annotators); slices "
                "of one run are merged as they were written"
            )
    check_resume(output, resume=resume, overwrite=overwrite)
    if ensemble:
        from relabel_store.write.ensemble import ensemble_stores

        result = ensemble_stores(
            stores,
            output,
            weights=weights,
            k=k,
            missing=missing,  # type: ignore[arg-type]
            shard_records=shard_records,
            overwrite=overwrite,
            progress=False if quiet else None,
        )
        if not quiet:
            click.echo(result.summary())
        return
    from relabel_store.write._run import run_summary
    from relabel_store.write.slices import merge as run

    merged = run(stores, output, overwrite=overwrite, progress=False if quiet else None)
    if not quiet:
        click.echo(
            run_summary(
                merged.path,
                records=merged.records,
                skipped=merged.skipped,
                done_now=merged.shards_copied,
                unit="shards",
                seconds=merged.seconds,
                store_bytes=merged.store_bytes,
                digest=merged.digest,
                already_complete=merged.already_complete,
                before=[("slices", f"{len(stores)} merged")],
            )
        )
        if merged.records:
            echo_headline(output)
