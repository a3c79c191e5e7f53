"""CutMix and MixUp on soft targets: timm's ``Mixup`` built right, and checks of any mixer.

CutMix and MixUp mix targets linearly, so ReLabel's soft targets mix exactly like one-hot ones
— with the right settings:

- timm ``Mixup``/``FastCollateMixup`` need ``multi_label=True`` to take dense ``(B, C)``
  targets (without it they one-hot encode the targets as if they were class indices), and
  ``label_smoothing=0``: timm smooths dense targets towards 0.5, so with its default 0.1 over
  1000 classes every target sums to about 51. :func:`timm_mixup` builds them that way.
- torchvision ``v2.MixUp``/``v2.CutMix`` take ``(B, C)`` float targets as they are; leave
  ``num_classes`` unset (or equal to C).
- Token-level targets (``PoolingSpec(output_size=(oh, ow))``) need a token-aware mixer; neither
  of the above mixes them.

:func:`check_mixing` refuses a mixer configured otherwise, naming the fix.
"""

from __future__ import annotations

import sys
from typing import Any

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.pooling import PoolingSpec

__all__ = ["check_mixing", "timm_mixup"]


def _num_classes(source: Any) -> int:
    if isinstance(source, int) and not isinstance(source, bool):
        return source
    count = getattr(source, "num_classes", None)  # RelabelDataset, LabelPooler
    if count is None:
        count = getattr(getattr(source, "metadata", None), "num_classes", None)  # RelabelStore
    if not isinstance(count, int):
        raise ArgumentTypeError(
            "num_classes must be an int, a RelabelStore or a RelabelDataset, got "
            f"{type(source).__name__}"
        )
    return count


def timm_mixup(num_classes: Any, *, collate: bool = False, **mixup_args: Any) -> Any:
    """timm ``Mixup`` (or ``FastCollateMixup`` with ``collate=True``) for soft targets.

    ``num_classes``: the store's class count (an int, a ``RelabelStore`` or a
    ``RelabelDataset``). ``mixup_args`` are timm's (``mixup_alpha``, ``cutmix_alpha``,
    ``cutmix_minmax``, ``prob``, ``switch_prob``, ``mode``, ``correct_lam``); ``multi_label``
    is set, and ``label_smoothing`` must be 0 (its default here). The result is checked with
    :func:`check_mixing`. timm mixes pairs across the batch: use even batch sizes
    (``drop_last=True``).
    """
    with requires_extra("generate", "timm_mixup"):
        from timm.data import FastCollateMixup, Mixup

    count = _num_classes(num_classes)
    for name, needed in (("multi_label", True), ("num_classes", count)):
        if name in mixup_args and mixup_args[name] != needed:
            raise ConfigurationError(
                f"timm_mixup sets {name}={needed!r} for soft targets; got {name}="
                f"{mixup_args[name]!r}. Leave it out."
            )
    mixup_args.update(multi_label=True, num_classes=count)
    mixup_args.setdefault("label_smoothing", 0.0)
    mixer = (FastCollateMixup if collate else Mixup)(**mixup_args)
    check_mixing(mixer, count)
    return mixer


def check_mixing(mixer: Any, num_classes: Any, spec: PoolingSpec | None = None) -> None:
    """Refuse a CutMix/MixUp configuration that would break soft targets, naming the fix.

    ``mixer``: a timm ``Mixup``/``FastCollateMixup`` or a torchvision ``v2.MixUp``/``v2.CutMix``
    (or a ``v2.RandomChoice``/``v2.Compose`` of them). ``num_classes``: the store's class count
    (an int, a ``RelabelStore`` or a ``RelabelDataset``, whose ``spec`` is then checked too).
    """
    count = _num_classes(num_classes)
    spec = spec or getattr(num_classes, "spec", None)
    name = type(mixer).__name__
    if spec is not None and spec.grid != (1, 1):
        raise ConfigurationError(
            f"{name} mixes (B, C) targets; these are token-level targets of shape "
            f"(B, {spec.grid[0]}, {spec.grid[1]}, C), which need a token-aware mixer (mix the "
            "target grids with the same boxes as the images)."
        )
    from torchvision.transforms import v2

    # A timm mixer means timm is loaded; torchvision-only users need not install it.
    timm_data = sys.modules.get("timm.data")
    if timm_data is not None and isinstance(mixer, timm_data.Mixup):
        if not mixer.multi_label:
            raise ConfigurationError(
                f"{name}(multi_label=False) one-hot encodes targets as class indices; soft "
                "(B, C) targets need multi_label=True (or build it with "
                "relabel_store.loaders.timm_mixup)."
            )
        if mixer.label_smoothing != 0:
            total = 1 + mixer.label_smoothing * (count / 2 - 1)
            raise ConfigurationError(
                f"{name}(label_smoothing={mixer.label_smoothing}) smooths soft targets towards "
                f"0.5, so each target sums to about {total:.0f} instead of 1. Pass "
                "label_smoothing=0 (timm's train.py: --smoothing 0); ReLabel targets are soft "
                "already."
            )
        if mixer.num_classes != count:
            raise ConfigurationError(
                f"{name}(num_classes={mixer.num_classes}) does not match the store's "
                f"{count} classes; pass num_classes={count}."
            )
        return
    if isinstance(mixer, v2.MixUp | v2.CutMix):
        if mixer.num_classes is not None and mixer.num_classes != count:
            raise ConfigurationError(
                f"v2.{name}(num_classes={mixer.num_classes}) does not match the store's "
                f"{count} classes; leave num_classes unset for (B, C) soft targets."
            )
        return
    if isinstance(mixer, v2.RandomChoice | v2.Compose):
        for inner in mixer.transforms:
            check_mixing(inner, count, spec)
        return
    raise ArgumentTypeError(
        "check_mixing knows timm Mixup/FastCollateMixup and torchvision v2 MixUp/CutMix (or a "
        f"v2.RandomChoice of them), got {name}"
    )
