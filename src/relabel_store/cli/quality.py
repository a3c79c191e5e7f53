"""``relabel-store quality``: what a store will teach, before a training run is spent on it."""

from __future__ import annotations

from pathlib import Path

import click

from relabel_store.cli._options import in_existing_folder

__all__ = ["echo_headline", "quality"]


@click.command()
@click.argument("store")
@click.option(
    "--sample",
    type=int,
    default=2000,
    show_default=True,
    help="Records to measure, drawn at random (0: all of them).",
)
@click.option("--crops", default=4, show_default=True, help="Random crops pooled per record.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample and the crops.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=in_existing_folder,
    default=None,
    help="Also draw the distributions into this PNG file.",
)
def quality(store: str, sample: int, crops: int, seed: int, plot: Path | None) -> None:
    """Label quality of STORE: agreement of its whole-image top-1 with the dataset's labels,
    confidence of random-crop targets, probability left to classes outside the map, and
    distinct classes per map."""
    from relabel_store.report.quality import quality_report

    report = quality_report(store, sample=sample or None, crops=crops, seed=seed)
    click.echo("\n".join(report.lines()))
    if plot is not None:
        click.echo(f"wrote {report.plot(plot)}")


def echo_headline(store: str | Path) -> None:
    """Print the quality report's headline of a store just written (``generate``, ``import``)."""
    from relabel_store.report.quality import quality_report

    click.echo("label quality (relabel-store quality for more):")
    for line in quality_report(store).headline():
        click.echo(f"  {line}")
