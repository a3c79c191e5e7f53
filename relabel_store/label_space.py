"""Label spaces: what an annotator's class ids mean, as names and identifiers (ImageNet wnids).

A store records the label space of its class ids (``label_space``, ``class_names``,
``class_identifiers``); loaders match a dataset's labels against it. ``generate`` takes it from
the annotator, ``import`` from ImageNet-1k's table. The tables are timm's offline ImageNet info,
imported only when asked for (``pip install 'relabel-store[generate]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from relabel_store._extras import requires_extra

if TYPE_CHECKING:
    from relabel_store.annotator import DenseAnnotator

__all__ = ["LabelSpace", "imagenet_label_space", "label_space_of"]


@dataclass(frozen=True)
class LabelSpace:
    """The label space an annotator's class ids index: its name, class names and identifiers."""

    name: str | None = None
    class_names: tuple[str, ...] | None = None
    class_identifiers: tuple[str, ...] | None = None


def label_space_of(annotator: DenseAnnotator) -> LabelSpace:
    """The annotator's label space, from timm's offline ImageNet info (names and wnids).

    A model timm cannot place in an ImageNet subset gets an unknown label space: its store then
    has no class identifiers, and loaders refuse to mix its classes with a dataset's labels.
    """
    with requires_extra("generate", "label_space_of"):
        from timm.data import infer_imagenet_subset

    subset = infer_imagenet_subset(annotator.model)
    if not subset:
        return LabelSpace()
    space = imagenet_label_space(subset)
    if len(space.class_identifiers or ()) != annotator.num_classes:
        return LabelSpace()
    return space


def imagenet_label_space(subset: str = "imagenet-1k") -> LabelSpace:
    """An ImageNet subset's class names and wnids in class-id order (timm's offline tables)."""
    with requires_extra("generate", "imagenet_label_space"):
        from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    n = info.num_classes()
    return LabelSpace(
        name=subset,
        class_names=tuple(info.index_to_description(i) for i in range(n)),
        class_identifiers=tuple(info.index_to_label_name(i) for i in range(n)),
    )
