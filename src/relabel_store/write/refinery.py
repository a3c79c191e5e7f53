"""Label Refinery rounds: which store's labels trained an annotator, recorded portably.

A round trains a model on a store's targets, saves it with
:func:`~relabel_store.write.weights.save_checkpoint` (which records :func:`store_lineage` of that
store), and annotates again with the checkpoint: the new store's ``parent`` names the store it
learned from. The record puts the manifest digest first, the content's identity wherever the
store lives, then a location that means the same on another machine: a Hub repo, URL or
registered name as given, and only the folder name of a local store (a path on one machine names
nothing on another).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from relabel_store.errors import ConfigurationError

__all__ = ["parent_of", "store_lineage"]


def store_lineage(store: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"digest", "location", "location_kind", "annotator"}`` of the store at ``store``."""
    from relabel_store.read.api import load_relabel
    from relabel_store.read.resolve import LocalTarget, resolve

    opened = load_relabel(store)
    if opened.manifest is None:  # load_relabel refuses unfinished stores; keep the type honest
        raise ConfigurationError(f"{store} has no manifest, so nothing identifies its labels")
    local = isinstance(resolve(store).target, LocalTarget)
    return {
        "digest": opened.manifest.digest,
        "location": Path(store).resolve().name if local else str(store),
        "location_kind": "local" if local else "remote",
        "annotator": opened.metadata.annotator.get("model"),
    }


def parent_of(
    parent: str | os.PathLike[str] | None, trained_on: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The parent a new store records: ``parent`` (a store location) checked against what the
    annotator's checkpoint says it was ``trained_on``, or that record alone when no ``parent``
    is given. Disagreeing digests are an error: the lineage would be a lie."""
    if parent is None:
        return dict(trained_on) if trained_on else None
    lineage = store_lineage(parent)
    recorded = trained_on or {}
    if recorded.get("digest") not in (None, lineage["digest"]):
        raise ConfigurationError(
            f"the checkpoint was trained on the store with digest {recorded['digest']} "
            f"({recorded.get('location')}), but --parent {parent} has digest "
            f"{lineage['digest']}. Name the store the checkpoint learned from, or leave --parent "
            "out to record the checkpoint's own."
        )
    return lineage
