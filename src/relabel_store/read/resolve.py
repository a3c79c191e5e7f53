"""What a store name means: a local folder, a Hub dataset repo, an fsspec URL or a registered name.

:func:`resolve` decides it once, without any request; everything after it (opening the store,
pulling it) works from the :class:`Resolved` it returns. :func:`resolve_destination` does the
same for where ``push`` publishes to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from relabel_store.errors import ConfigurationError, StoreNotFoundError
from relabel_store.read import registry
from relabel_store.read.hub_names import (
    HF_PREFIX,
    HubTarget,
    is_commit_sha,
    is_repo_id,
    parse_hf_url,
    parse_repo_path,
)

__all__ = ["LocalTarget", "Resolved", "UrlTarget", "resolve", "resolve_destination"]


@dataclass(frozen=True)
class UrlTarget:
    """A store at an fsspec URL (``s3://``, ``gs://``, ``file://``, ...)."""

    url: str


@dataclass(frozen=True)
class LocalTarget:
    """A store in a local folder, read in place."""

    path: Path


Target = HubTarget | UrlTarget | LocalTarget


@dataclass(frozen=True)
class Resolved:
    """Where a store lives, plus the manifest digest a registry entry pins (None: not pinned)."""

    target: Target
    digest: str | None = None
    #: How to make a registered store yourself: added to the error when it cannot be reached.
    hint: str = ""


def resolve(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Resolved:
    """What ``name_or_path`` refers to. Order: an existing local path, ``hf://``, any other URL,
    ``org/name[@rev]``, a registered name. No request is made.

    ``revision`` (a branch, tag or commit) applies to Hub stores only.
    """
    if isinstance(name_or_path, os.PathLike) or Path(str(name_or_path)).exists():
        if revision is not None:
            raise ConfigurationError(
                f"revision={revision!r} applies to Hub stores only; {name_or_path} is a local path"
            )
        return Resolved(LocalTarget(Path(name_or_path)))
    text = str(name_or_path)
    if text.startswith(HF_PREFIX):
        return Resolved(parse_hf_url(text, revision))
    if "://" in text:
        if revision is not None:
            raise ConfigurationError(
                f"revision={revision!r} applies to Hub stores only; an fsspec URL has no revisions"
            )
        return Resolved(UrlTarget(text.rstrip("/")))
    if "/" in text:
        if is_repo_id(text.split("@", 1)[0]):
            return Resolved(parse_repo_path(text, revision, text))
        raise StoreNotFoundError(
            f"no relabel-store store at {text}: no such directory, and it is not a Hub repo id "
            "(org/name), an hf:// URL or an fsspec URL."
        )
    looks_like_a_path = text.endswith(".zarr") or text.startswith((".", "~"))
    if looks_like_a_path and text not in registry.known():
        raise StoreNotFoundError(
            f"no relabel-store store at {text}: no such directory. Check the path (a store is a "
            "folder holding zarr.json and manifest.json)."
        )
    entry = registry.lookup(text)  # raises, listing the known names
    if not entry.published:
        raise entry.unpublished_error()  # at once, without a request
    hint = entry.how_to_make()
    if entry.path is not None:
        return Resolved(LocalTarget(Path(entry.path)), hint=hint)
    if entry.url is not None:
        return Resolved(UrlTarget(entry.url), digest=entry.digest, hint=hint)
    assert entry.repo_id is not None
    target = HubTarget(entry.repo_id, revision or entry.revision, entry.subdir)
    return Resolved(target, digest=entry.digest, hint=hint)


def resolve_destination(destination: str, revision: str | None = None) -> HubTarget | UrlTarget:
    """Where ``push`` publishes: ``org/name``, ``hf://datasets/org/name[@branch][/subdir]`` (a
    branch, created if needed; never a commit) or any fsspec URL."""
    if destination.startswith(HF_PREFIX):
        target = parse_hf_url(destination, revision)
    elif "://" in destination:
        if revision is not None:
            raise ConfigurationError("--revision/--branch applies to Hub destinations only")
        return UrlTarget(destination.rstrip("/"))
    elif is_repo_id(destination.split("@", 1)[0]):
        target = parse_repo_path(destination, revision, destination)
    else:
        raise ConfigurationError(
            f"{destination!r} is not a destination: give a Hub dataset repo id (org/name), an "
            "hf://datasets/org/name URL, or an fsspec URL such as s3://bucket/store.relabel.zarr"
        )
    if target.revision and is_commit_sha(target.revision):
        raise ConfigurationError(
            f"cannot push to commit {target.revision}: give a branch name (it is created if needed)"
        )
    return target
