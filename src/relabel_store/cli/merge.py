"""``relabel-store merge --ensemble``: one store from stores of the same images by several
annotators (the logic is :func:`relabel_store.write.ensemble.ensemble_stores`)."""

from __future__ import annotations

from pathlib import Path

import click

from relabel_store.cli._options import check_resume
from relabel_store.format.metadata import DEFAULT_SHARD_RECORDS


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
    "--ensemble",
    is_flag=True,
    help="Combine stores of the same images by different annotators: weighted mean of logits "
    "per cell over the union of their top-k, then top-k.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Store to write.",
)
@click.option(
    "--weights",
    callback=_weights,
    default=None,
    help="One positive weight per store, comma-separated (normalised; default: equal).",
)
@click.option(
    "-k",
    "--top-k",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="Classes kept per cell (default: the most any store keeps).",
)
@click.option(
    "--missing",
    type=click.Choice(["zero", "kth"]),
    default="zero",
    show_default=True,
    help="A class a store does not list at a cell counts as logit 0 (as LabelPooling reads it) "
    "or as that store's k-th logit there.",
)
@click.option(
    "--shard-records",
    type=click.IntRange(min=1),
    default=DEFAULT_SHARD_RECORDS,
    show_default=True,
    help="Records per shard file of the new store.",
)
@click.option("--resume", is_flag=True, help="Require an unfinished store at --output.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store at --output first.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output or summary.")
def merge(stores: tuple[str, ...], ensemble: bool, output: Path, weights: list[float] | None,
          k: int | None, missing: str, shard_records: int, resume: bool, overwrite: bool,
          quiet: bool) -> None:  # fmt: skip
    """Merge STORES into one store at --output (--ensemble: same images, several annotators).

    Rerunning the same command after an interruption resumes it; on a finished store it says
    so and exits 0.
    """
    from relabel_store.write.ensemble import ensemble_stores

    if not ensemble:
        raise click.UsageError(
            "give --ensemble to combine stores of the same images by different annotators"
        )
    check_resume(output, resume=resume, overwrite=overwrite)
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
