"""Loaders: ReLabel soft targets for your own datasets and transforms."""

from relabel_store._extras import requires_extra

with requires_extra("torch", "relabel_store.loaders"):
    from relabel_store.loaders.crops import ReturnsCropBox, kornia_refs, track_crops
    from relabel_store.loaders.hf import relabel_transform
    from relabel_store.loaders.maps import DeviceMaps
    from relabel_store.loaders.mixing import check_mixing, timm_mixup
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
    "check_mixing",
    "kornia_refs",
    "relabel_transform",
    "timm_mixup",
    "track_crops",
]
