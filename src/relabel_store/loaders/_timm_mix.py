"""timm's ``Mixup`` and ``FastCollateMixup``, mixing ReLabel's soft targets exactly.

Imported only when one of them is asked for (it imports timm): through
``relabel_store.loaders.SoftMixup`` / ``SoftCollateMixup``.

timm mixes a batch with its mirror image (sample ``i`` with sample ``B - 1 - i``), with one
``lam`` per batch, pair or element, and builds targets from class indices; given soft ``(B, C)``
targets it one-hot encodes them as if they were indices (every target becomes class 0), or with
``multi_label=True`` smooths them towards 0.5. These subclasses let timm draw and apply
everything to the images, exactly as it would, and recover the mixing itself: the targets timm
is given are the sample positions ``0..B-1`` (over ``B`` classes, no smoothing), so the target it
returns is the matrix ``M`` of how much of each sample every output holds. The soft targets
mixed are ``M @ T``; label smoothing then acts as timm's does on one-hot labels:
``(1 - s) * target + s / C``, so every target still sums to 1.

Being subclasses, they are what timm expects where it checks: ``PrefetchLoader.mixup_enabled``
(train.py's ``--mixup-off-epoch``) reaches a ``SoftCollateMixup``; they pickle by reference to
this module, so DataLoader workers started with ``spawn`` get them too.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from timm.data import FastCollateMixup, Mixup

from relabel_store.errors import ConfigurationError

__all__ = ["SoftCollateMixup", "SoftMixup"]


def _init_args(args: dict[str, Any]) -> dict[str, Any]:
    """timm's arguments without ``multi_label``, which these classes do not need (and which
    older timm versions do not take); ``multi_label=False`` is refused nowhere: it is moot."""
    args.pop("multi_label", None)
    return args


def _positions_mixer(mixer: Any, count: int) -> Any:
    """A shallow copy of ``mixer`` that mixes class indices ``0..count-1`` unsmoothed: its target
    is the mixing matrix. Random draws and ``mixup_enabled`` are the original's."""
    probe = copy.copy(mixer)
    probe.num_classes = count
    probe.label_smoothing = 0.0
    if hasattr(probe, "multi_label"):
        probe.multi_label = False
    return probe


def _mix_targets(mixer: Any, weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``weights @ targets`` for (B, C) soft targets, then timm's label smoothing."""
    count = targets.shape[-1]
    if targets.ndim != 2:
        raise ConfigurationError(
            f"{type(mixer).__name__} mixes (B, C) targets; these have shape "
            f"{tuple(targets.shape)} (token-level targets need a token-aware mixer)."
        )
    if mixer.num_classes != count:
        raise ConfigurationError(
            f"{type(mixer).__name__}(num_classes={mixer.num_classes}) does not match the "
            f"targets' {count} classes; pass num_classes={count} (timm's train.py: "
            f"--num-classes {count})."
        )
    mixed = weights.to(targets.device, torch.float32) @ targets.float()
    smoothing = float(mixer.label_smoothing)
    if smoothing:
        mixed = mixed * (1.0 - smoothing) + smoothing / count
    return mixed


def _soft(targets: Any) -> bool:
    return isinstance(targets, torch.Tensor) and targets.is_floating_point()


class SoftMixup(Mixup):
    """timm's ``Mixup`` (same arguments, same draws, same images) that mixes float ``(B, C)``
    soft targets exactly; class-index targets are mixed as timm mixes them."""

    def __init__(self, **mixup_args: Any) -> None:
        super().__init__(**_init_args(mixup_args))

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not _soft(target):
            return super().__call__(x, target)
        positions = torch.arange(len(x), device=x.device)
        x, weights = Mixup.__call__(_positions_mixer(self, len(x)), x, positions)
        return x, _mix_targets(self, weights, target)


class SoftCollateMixup(FastCollateMixup):
    """timm's ``FastCollateMixup`` (same arguments; uint8 images mixed and collated as timm
    does, for its ``PrefetchLoader``) that mixes float soft targets exactly. A drop-in for
    ``collate_fn = FastCollateMixup(**mixup_args)`` in timm's train.py."""

    def __init__(self, **mixup_args: Any) -> None:
        super().__init__(**_init_args(mixup_args))

    def __call__(self, batch: Any, _: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not batch or not _soft(batch[0][1]):
            return super().__call__(batch, _)
        targets = torch.stack([sample[1] for sample in batch])
        positions = [(sample[0], i) for i, sample in enumerate(batch)]
        images, weights = FastCollateMixup.__call__(_positions_mixer(self, len(batch)), positions)
        return images, _mix_targets(self, weights, targets)
