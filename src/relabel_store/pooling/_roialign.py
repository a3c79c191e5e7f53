"""The rules both LabelPooling implementations share: which boxes and labels they accept, and how
many RoIAlign sampling points of a bin can matter.

:func:`relabel_store.pooling.pool` (numpy, one sample) and
:class:`relabel_store.pooling.batched.BatchPooler` (torch, a batch) import these, so that the two
accept the same inputs and refuse the rest with the same messages. numpy-free and torch-free.
"""

from __future__ import annotations

import math

from relabel_store.errors import ConfigurationError


def box_problem(x0: float, y0: float, x1: float, y1: float) -> str | None:
    """Why a normalised box is unusable, or None if it is fine."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return "coordinates must be finite numbers"
    if x1 <= x0 or y1 <= y0:
        kind = "empty" if (x1 == x0 or y1 == y0) else "inverted"
        return f"the box is {kind}: need x0 < x1 and y0 < y1"
    return None


def sampling_window(size: int) -> int:
    """Most sampling points of one bin that can fall within [-1, size], whatever the box.

    Consecutive points are ``bin_size / ceil(bin_size)`` apart, at least half a cell, so at most
    ``2 * size + 3`` of them land in that range; two more on each side absorb rounding.
    """
    return 2 * size + 6


def original_label_error(
    weight: float, num_classes: int, label: int, row: int | None = None
) -> ConfigurationError:
    """The error for mixing in an original label outside ``[0, num_classes)`` (``row``: its
    place in a batch)."""
    where = f"row {row} has {label}" if row is not None else f"got {label}"
    return ConfigurationError(
        f"original_weight={weight} mixes in the dataset's original label, which must be in "
        f"[0, {num_classes}); {where} (-1 means unknown). Give the labels (a dataset whose "
        "labels match the store's classes), or set original_weight=0."
    )
