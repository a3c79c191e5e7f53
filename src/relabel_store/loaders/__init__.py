"""Loaders: ReLabel soft targets for your own datasets and transforms."""

from typing import TYPE_CHECKING

from relabel_store._extras import requires_extra

if TYPE_CHECKING:  # at run time from __getattr__ below: they import timm
    from relabel_store.loaders._timm_mix import SoftCollateMixup, SoftMixup

with requires_extra("torch", "relabel_store.loaders"):
    from relabel_store.loaders.crops import ReturnsCropBox, kornia_refs, track_crops
    from relabel_store.loaders.hf import relabel_transform
    from relabel_store.loaders.maps import DeviceMaps
    from relabel_store.loaders.mixing import check_collate, check_mixing, timm_mixup
    from relabel_store.loaders.poolers import LabelPooler, ResidentPooler
    from relabel_store.loaders.pytorch import RelabelDataset
    from relabel_store.loaders.streaming import RelabelStream

__all__ = [
    "DeviceMaps",
    "LabelPooler",
    "RelabelDataset",
    "RelabelStream",
    "ResidentPooler",
    "ReturnsCropBox",
    "SoftCollateMixup",
    "SoftMixup",
    "check_collate",
    "check_mixing",
    "kornia_refs",
    "relabel_transform",
    "timm_mixup",
    "track_crops",
]


def __getattr__(name: str) -> object:
    """``SoftMixup`` and ``SoftCollateMixup`` subclass timm's mixers: timm is imported only when
    one of them is asked for."""
    if name in ("SoftMixup", "SoftCollateMixup"):
        from relabel_store.loaders import mixing

        return getattr(mixing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
