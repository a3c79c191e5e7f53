"""``relabel-store push`` and ``relabel-store pull``."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["pull", "push"]


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
@click.argument("destination")
@click.option(
    "--revision",
    "--branch",
    "revision",
    default=None,
    help="Branch to push to (created from main if needed). Default: main.",
)
@click.option("--private", is_flag=True, help="Create the Hub repo as private (if it is new).")
@click.option(
    "--license",
    "license_",
    default="other",
    show_default=True,
    help="License id for the dataset card (e.g. cc-by-4.0); 'other' notes the source's terms.",
)
@click.option("--pretty-name", default=None, help="Title of the dataset card.")
@click.option("--no-card", is_flag=True, help="Do not write README.md (the dataset card).")
@click.option("-m", "--message", default=None, help="Commit message.")
@click.option(
    "--batch-files",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Files per commit: an interrupted push keeps the batches it committed.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only show the plan: what would be uploaded, and what deleted (files an earlier push "
    "wrote that this store does not have). Nothing is created, sent or deleted.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the result.")
def push(store: Path, destination: str, revision: str | None, private: bool, license_: str,
         pretty_name: str | None, no_card: bool, message: str | None, batch_files: int,
         dry_run: bool, quiet: bool) -> None:  # fmt: skip
    """Publish the finalized STORE to DESTINATION and check the upload.

    DESTINATION is a Hugging Face Hub dataset repo (org/name, or
    `hf://datasets/org/name[@branch][/subfolder]`) or any fsspec URL (file://, s3://, ...). The
    token comes from huggingface_hub's usual sources (HF_TOKEN, `hf auth login`). Re-running
    after an interruption uploads only what is missing. Push deletes only files an earlier
    push wrote (the files of the store it replaces), says which before deleting them, and
    refuses a destination holding other files in the store's folders.
    """
    from relabel_store.publish.push import push as run

    result = run(
        store,
        destination,
        revision=revision,
        private=private,
        license=license_,
        pretty_name=pretty_name,
        card=not no_card,
        commit_message=message,
        batch_files=batch_files,
        log=(lambda _: None) if quiet else _echo_err,
        progress=False if quiet else None,
        dry_run=dry_run,
    )
    click.echo(result.summary())


@click.command()
@click.argument("name_or_url")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to download into (it becomes a plain local store). Default: the cache.",
)
@click.option("--revision", default=None, help="Branch, tag or commit (Hub stores).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache folder (default: $RELABEL_STORE_CACHE or $HF_HOME/relabel-store).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the store's path.")
def pull(name_or_url: str, to: Path | None, revision: str | None, cache_dir: Path | None,
         quiet: bool) -> None:  # fmt: skip
    """Download a whole store and verify every file against its manifest.

    NAME_OR_URL is a registered name (imagenet-relabel), a Hub repo (org/name,
    hf://datasets/org/name@rev) or an fsspec URL. Prints the local path of the store.
    """
    from relabel_store.read.pull import pull as run

    result = run(
        name_or_url,
        to,
        revision,
        cache_dir=cache_dir,
        log=(lambda _: None) if quiet else _echo_err,
        progress=False if quiet else None,
    )
    if quiet:
        click.echo(str(result.path))
        return
    click.echo(
        f"pulled {result.files} files ({result.downloaded} downloaded), all match manifest "
        f"digest {result.digest}\n{result.path}"
    )
