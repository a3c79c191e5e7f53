"""CutMix and MixUp on soft targets: timm's mixers made exact, and checks of any mixer or collate.

CutMix and MixUp mix targets linearly, so ReLabel's soft targets mix exactly like one-hot ones
— with the right mixer:

- timm's ``Mixup``/``FastCollateMixup`` build targets from class indices: given dense ``(B, C)``
  targets they one-hot encode them as indices (``FastCollateMixup``, the collate of timm's
  train.py with the prefetcher, then returns every target as class 0, with no error), or, with
  ``multi_label=True``, smooth them towards 0.5 (with timm's default 0.1 over 1000 classes every
  target sums to about 51). :class:`SoftMixup` and :class:`SoftCollateMixup` take the same
  arguments, draw and mix the images exactly as timm does, and mix the soft targets exactly
  (label smoothing as timm applies it to one-hot labels); :func:`timm_mixup` builds them.
- torchvision ``v2.MixUp``/``v2.CutMix`` take ``(B, C)`` float targets as they are; leave
  ``num_classes`` unset (or equal to C).
- Token-level targets (``PoolingSpec(output_size=(oh, ow))``) need a token-aware mixer; none
  of the above mixes them.

:func:`check_mixing` refuses a mixer configured otherwise, naming the fix. :func:`check_collate`
collates a probe batch of two known soft targets with whatever ``collate_fn`` the DataLoader
has and refuses one whose output is not a mixture of them (``RelabelDataset`` runs it on the
first batch of every process).
"""

from __future__ import annotations

import os
import random
import sys
import weakref
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, ConfigurationError
from relabel_store.pooling import PoolingSpec

if TYPE_CHECKING:  # at run time from __getattr__ below: they import timm
    from relabel_store.loaders._timm_mix import SoftCollateMixup, SoftMixup

__all__ = [
    "SoftCollateMixup",
    "SoftMixup",
    "check_collate",
    "check_collate_once",
    "check_mixing",
    "collate_of_caller",
    "timm_mixup",
]

_TIMM_MIXERS = ("SoftMixup", "SoftCollateMixup")


def __getattr__(name: str) -> Any:
    """``SoftMixup`` and ``SoftCollateMixup`` subclass timm's mixers: timm is imported only when
    one of them is asked for."""
    if name in _TIMM_MIXERS:
        with requires_extra("generate", f"relabel_store.loaders.{name}"):
            from relabel_store.loaders import _timm_mix
        return getattr(_timm_mix, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """:class:`SoftMixup` (or :class:`SoftCollateMixup` with ``collate=True``, for timm's
    prefetcher) for the store's soft targets.

    ``num_classes``: the store's class count (an int, a ``RelabelStore`` or a
    ``RelabelDataset``), which ``num_classes`` is set to. ``mixup_args`` are timm's
    (``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``, ``prob``, ``switch_prob``, ``mode``,
    ``correct_lam``, ``label_smoothing``: 0 by default here, ReLabel's targets being soft
    already). The result is checked with :func:`check_mixing`. timm mixes each sample with its
    mirror in the batch: use even batch sizes (``drop_last=True``).
    """
    count = _num_classes(num_classes)
    mixup_args.update(num_classes=count)
    mixup_args.setdefault("label_smoothing", 0.0)
    mixer = __getattr__("SoftCollateMixup" if collate else "SoftMixup")(**mixup_args)
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
    ours = sys.modules.get("relabel_store.loaders._timm_mix")
    if ours is not None and isinstance(mixer, ours.SoftMixup | ours.SoftCollateMixup):
        if mixer.num_classes != count:
            raise ConfigurationError(
                f"{name}(num_classes={mixer.num_classes}) does not match the store's "
                f"{count} classes; pass num_classes={count}."
            )
        return
    if timm_data is not None and isinstance(mixer, timm_data.Mixup):
        soft = f"Soft{name}" if name in ("Mixup", "FastCollateMixup") else "SoftMixup"
        if not getattr(mixer, "multi_label", False):
            raise ConfigurationError(
                f"{name}(multi_label=False) one-hot encodes targets as class indices (every "
                f"soft target becomes class 0). Use relabel_store.loaders.{soft} with the same "
                "arguments: it mixes soft (B, C) targets exactly."
            )
        if mixer.label_smoothing != 0:
            total = 1 + mixer.label_smoothing * (count / 2 - 1)
            raise ConfigurationError(
                f"{name}(label_smoothing={mixer.label_smoothing}) smooths soft targets towards "
                f"0.5, so each target sums to about {total:.0f} instead of 1. Use "
                f"relabel_store.loaders.{soft} with the same arguments (it smooths soft targets "
                "as timm smooths one-hot labels), or pass label_smoothing=0 (timm's train.py: "
                "--smoothing 0); ReLabel targets are soft already."
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


# -- the collate function a DataLoader builds batches with ---------------------------------------

_FETCHERS: tuple[Any, ...] | None = None
#: Frames walked up from the dataset's method to the DataLoader's fetcher: the dataset's own,
#: a wrapping dataset's (timm's AugMixDataset), a list comprehension, the fetcher's.
_DEPTH = 8


def _fetch_codes() -> tuple[Any, ...]:
    global _FETCHERS
    if _FETCHERS is None:
        try:  # torch's private fetchers: the frames that hold the DataLoader's collate_fn
            from torch.utils.data._utils import fetch

            _FETCHERS = tuple(
                getattr(fetch, name).fetch.__code__
                for name in ("_MapDatasetFetcher", "_IterableDatasetFetcher")
                if hasattr(getattr(fetch, name, None), "fetch")
            )
        except ImportError:  # another torch: the check is skipped
            _FETCHERS = ()
    return _FETCHERS


def collate_of_caller() -> Any:
    """The ``collate_fn`` of the DataLoader fetching the batch being built, when the caller is
    a dataset method a DataLoader called (in a worker or in the main process); else None.

    Cheap (a walk of a few frames comparing code objects), so it can run on every batch.
    """
    codes = _fetch_codes()
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_DEPTH):
        if frame is None:
            return None
        if frame.f_code in codes:
            fetcher = frame.f_locals.get("self")
            if getattr(fetcher, "auto_collation", True) is False:
                return None  # batch_size=None: samples are not collated
            return getattr(fetcher, "collate_fn", None)
        frame = frame.f_back
    return None


class _Checked:
    """The collate functions checked in this process: a weak set (an id could be reused by a
    collate made after a checked one is freed), reset in a forked child (its own first batch
    is checked again)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.weak: weakref.WeakSet[Any] = weakref.WeakSet()
        self.ids: set[int] = set()  # collates that take no weak reference: held alive below
        self.held: list[Any] = []

    def _here(self) -> None:
        if self.pid != os.getpid():
            self.__init__()  # type: ignore[misc]

    def __contains__(self, collate: Any) -> bool:
        self._here()
        try:
            return collate in self.weak
        except TypeError:
            return id(collate) in self.ids

    def add(self, collate: Any) -> None:
        self._here()
        try:
            self.weak.add(collate)
        except TypeError:
            self.ids.add(id(collate))
            self.held.append(collate)  # its id stays its own


_CHECKED = _Checked()


def check_collate_once(collate_fn: Any, image: Any, target: torch.Tensor) -> None:
    """:func:`check_collate`, once per process for each collate function that passes."""
    if collate_fn in _CHECKED:
        return
    check_collate(collate_fn, image, target)
    _CHECKED.add(collate_fn)


def _probe_targets(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two soft targets of ``shape`` (classes last) that neither a uniform distribution nor the
    other can make: an int cast makes both zeros, a one-hot encoding of them is no mixture."""
    count = shape[-1]
    ramp = torch.arange(1, count + 1, dtype=torch.float64)
    first, second = ramp, (count + 1 - ramp) ** 2
    return tuple(  # type: ignore[return-value]
        (t / t.sum()).float().expand(shape).clone() for t in (first, second)
    )


def _copy_image(image: Any) -> Any:
    if isinstance(image, torch.Tensor):
        return image.clone()
    if isinstance(image, np.ndarray):
        return image.copy()
    copy = getattr(image, "copy", None)
    return copy() if callable(copy) else image


def check_collate(collate_fn: Any, image: Any, target: torch.Tensor) -> None:
    """Refuse a ``collate_fn`` that would not carry soft targets into the batch.

    Collates a probe batch of two samples (copies of ``image``, a real transformed image, and
    two known soft targets shaped like ``target``) and checks that every target in the output
    is a mixture of the two (plus, for label smoothing, some uniform mass) and sums to 1:
    stacked as ``default_collate`` and timm's ``fast_collate`` do, or mixed as CutMix and MixUp
    mix them. A collate that casts targets to class indices (timm's ``FastCollateMixup``,
    timm's ``fast_collate`` before 1.0.16) or smooths them towards 0.5 is refused, naming the
    fix. Python's, numpy's and torch's random states are restored afterwards, so the run's
    draws do not change. An output that holds no target tensor second is not judged.
    """
    count = int(target.shape[-1]) if target.ndim else 0
    if collate_fn is None or count < 3:
        return
    probes = _probe_targets(tuple(target.shape))
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        out = collate_fn([(_copy_image(image), probes[0]), (_copy_image(image), probes[1])])
    except Exception:  # the real batch, collated next, shows the collate's own error
        return
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    if not isinstance(out, tuple | list) or len(out) < 2 or not isinstance(out[1], torch.Tensor):
        return
    problem = _mixture_problem(out[1], probes, count)
    if problem is None:
        return
    raise ConfigurationError(_collate_message(collate_fn, problem))


def _mixture_problem(
    collated: torch.Tensor, probes: tuple[torch.Tensor, torch.Tensor], count: int
) -> str | None:
    """Why the collated targets are not mixtures of the two probe targets, or None."""
    if not collated.is_floating_point():
        return f"it returns {collated.dtype} targets: class indices, not soft targets"
    if collated.ndim < 1 or collated.numel() % count or collated.shape[-1] != count:
        return f"it returns targets of shape {tuple(collated.shape)} for two of shape " + str(
            tuple(probes[0].shape)
        )
    eps = torch.finfo(collated.dtype).eps  # a float16 or bfloat16 collate rounds the targets
    rows = collated.detach().cpu().double().reshape(-1, count)
    basis = torch.stack(
        [
            probes[0].reshape(-1, count)[0].double(),
            probes[1].reshape(-1, count)[0].double(),
            torch.full((count,), 1.0 / count, dtype=torch.float64),
        ],
        dim=1,
    )  # (C, 3): the two targets and the uniform distribution
    weights = torch.linalg.lstsq(basis, rows.T).solution  # (3, rows)
    residual = (basis @ weights - rows.T).abs().max().item()
    sums = rows.sum(1)
    if residual > 1e-4 / count + 4 * eps * rows.abs().max().item() or (weights < -1e-4).any():
        top = rows.argmax(1).tolist()
        return (
            "its targets are not mixtures of the samples' targets (they put their mass on "
            f"class{'es' if len(set(top)) > 1 else ''} {sorted(set(top))}: the soft targets were "
            "read as class indices and one-hot encoded)"
        )
    if (sums - 1).abs().max().item() > max(1e-3, 8 * eps):
        return (
            f"its targets sum to {sums.max().item():.3g} instead of 1 (label smoothing towards "
            "0.5, as timm's multi_label=True does)"
        )
    return None


def _collate_message(collate_fn: Any, problem: str) -> str:
    name = getattr(collate_fn, "__name__", None) or type(collate_fn).__name__
    timm_data = sys.modules.get("timm.data")
    if timm_data is not None and isinstance(collate_fn, timm_data.FastCollateMixup):
        fix = (
            "In timm's train.py (create_loader(collate_fn=...) with the prefetcher), replace "
            "`collate_fn = FastCollateMixup(**mixup_args)` with `collate_fn = "
            "SoftCollateMixup(**mixup_args)` (from relabel_store.loaders): the same mixing of "
            "the images, and the soft targets mixed exactly."
        )
    elif timm_data is not None and name == "fast_collate":
        fix = (
            "This timm version's fast_collate cannot carry soft targets: pass "
            "use_prefetcher=False to create_loader, or upgrade timm."
        )
    else:
        fix = (
            "A collate_fn must keep the (C,) float targets: stack them (default_collate), or mix "
            "them linearly with the images (SoftCollateMixup, torchvision v2.CutMix/MixUp)."
        )
    return f"the DataLoader's collate_fn ({name}) destroys ReLabel's soft targets: {problem}. {fix}"
