"""The ``relabel-store`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relabel_store.errors import RelabelStoreError


class _Group(click.Group):
    """Turns our errors into one clear line and exit status 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RelabelStoreError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="relabel-store")
def main() -> None:
    """Generate, verify, publish and read ReLabel label-map stores."""


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError


@main.command()
@click.argument("store")
def info(store: str) -> None:
    """Summarise a store: records, grid, k, classes, annotator, size on disk, digest."""
    from relabel_store import load_relabel

    s = load_relabel(store)
    m = s.metadata
    size = s.manifest.total_bytes if s.manifest else 0
    ann = dict(m.annotator)
    lines = [
        f"store:       {s.source.location}",
        f"format:      {m.format} {m.format_version} (written by relabel-store {m.software_version})",
        f"records:     {len(s)}"
        + (f" ({m.rows - len(s)} failed, see errors.jsonl)" if m.rows > len(s) else ""),
        f"grid:        {m.grid[0]}x{m.grid[1]}, top-{m.k} of {m.num_classes} classes ({m.value_kind})",
        f"dataset:     {m.dataset.get('name', '?')} / {m.dataset.get('split', '?')}",
        f"annotator:   {ann.get('model', '?')} @ {ann.get('input_size', '?')}"
        + (
            f", weights sha256 {str(ann['weights_sha256'])[:16]}…"
            if ann.get("weights_sha256")
            else ""
        ),
        f"created:     {m.created_at}",
        f"size:        {_human(size)} ({_human(size / max(len(s), 1))} per record)",
        f"digest:      {s.manifest.digest if s.manifest else '-'}",
    ]
    if m.parent:
        lines.append(
            f"parent:      {m.parent.get('digest', '?')} ({m.parent.get('location', '?')})"
        )
    click.echo("\n".join(lines))


@main.command()
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
def verify(store: Path) -> None:
    """Check every file of STORE against its manifest; exit 1 on any difference."""
    from relabel_store.manifest import verify_store

    report = verify_store(store)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        click.echo(f"FAILED: {len(report.lines())} problem(s) in {store}", err=True)
        sys.exit(1)
    click.echo(f"ok: {report.checked} files match manifest digest {report.digest}")
