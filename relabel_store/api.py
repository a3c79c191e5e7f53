"""``load_relabel``: the one entry point training code needs."""

from __future__ import annotations

import os
from pathlib import Path

from relabel_store.reader import RelabelStore


def load_relabel(name_or_path: str | os.PathLike[str], revision: str | None = None) -> RelabelStore:
    """Open a store by local path.

    Registered names (``"imagenet-relabel"``), Hub repos and fsspec URLs resolve through the same
    call once remote access is configured (see the docs' publishing page).
    """
    if revision is not None:
        raise ValueError("revision= applies to Hub stores only; a local path has no revisions")
    return RelabelStore.open(Path(name_or_path))
