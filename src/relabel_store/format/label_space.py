"""Label spaces: what a store's class ids mean, and how a dataset's labels map onto them.

A store records the label space of its class ids (``label_space``, ``class_names``,
``class_identifiers``, ImageNet wnids). ``generate`` takes it from the annotator and ``import``
from ImageNet-1k's table (timm's offline ImageNet info, imported only when asked for:
``pip install 'relabel-store[generate]'``).

A dataset's label index is not a class id. ``missing="original"`` and
``PoolingSpec(original_weight=...)`` mix the dataset's own label into the target, at the store's
class id for it. An ImageFolder of ImageNet's ``n02124075`` folder alone labels it 0; the store's
class 0 is ``n01440764`` (tench), the cat is 285. So :func:`match_labels` matches labels by
identity: the dataset's class names (ImageFolder ``classes``, timm's class map, HF
``ClassLabel`` names) against the store's ``class_identifiers``, then its unique
``class_names``. When that is impossible the loaders refuse to mix labels instead of guessing;
``class_map=`` (the user's own mapping) is the escape hatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from relabel_store._extras import requires_extra
from relabel_store.errors import ArgumentTypeError, LabelSpaceError
from relabel_store.format.metadata import StoreMetadata

__all__ = [
    "ClassMap",
    "LabelMap",
    "LabelSpace",
    "imagenet_label_space",
    "match_labels",
]


@dataclass(frozen=True)
class LabelSpace:
    """The label space an annotator's class ids index: its name, class names and identifiers."""

    name: str | None = None
    class_names: tuple[str, ...] | None = None
    class_identifiers: tuple[str, ...] | None = None


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


#: A user's mapping from dataset labels to store class ids: ``{label or class name: id}``, or a
#: sequence of ids indexed by label (``range(n)`` when labels already are the store's ids).
ClassMap = Union[Mapping[int | str, int], Sequence[int]]  # noqa: UP007 (a runtime alias)

_FIX = (
    "Pass class_map= to say which store class each dataset class is: a dict "
    "{dataset class name or label: store class id}, or a sequence of store class ids indexed "
    "by the dataset's label (class_map=range(n) when the labels already are the store's class "
    "ids)."
)


@dataclass(frozen=True)
class LabelMap:
    """Dataset label -> store class id (``table``, -1: none), or why labels cannot be mixed in
    (``problem``)."""

    table: np.ndarray | None
    problem: str | None

    def to_store(self, labels: np.ndarray) -> np.ndarray:
        """Store class ids of dataset labels (int64); -1 for unknown or unmatched labels."""
        labels = np.asarray(labels, dtype=np.int64)
        if self.table is None:
            return np.full(labels.shape, -1, np.int64)
        known = (labels >= 0) & (labels < len(self.table))
        out = np.full(labels.shape, -1, np.int64)
        out[known] = self.table[labels[known]]
        return out

    def require(self, why: str) -> None:
        """Raise :class:`LabelSpaceError` if labels are needed (``why``) but unmatched."""
        if self.problem is not None:
            raise LabelSpaceError(f"{why} needs the dataset's labels, but {self.problem}. {_FIX}")


def match_labels(
    metadata: StoreMetadata,
    dataset_classes: Sequence[str] | None,
    class_map: ClassMap | None = None,
    *,
    dataset: str = "the dataset",
    unnamed: str | None = None,
) -> LabelMap:
    """How the labels of ``dataset`` (named ``dataset_classes``, in label order) index the
    store's classes; ``class_map`` overrides the matching. ``unnamed`` says why the classes
    are unknown when ``dataset_classes`` is None."""
    n = metadata.num_classes
    if class_map is not None:
        return _from_user(class_map, dataset_classes, n)
    if dataset_classes is None:
        return LabelMap(None, unnamed or f"{dataset} does not name its classes")
    identifiers, names = metadata.class_identifiers, metadata.class_names
    space = metadata.label_space or "an unnamed label space"
    classes = tuple(dataset_classes)
    if classes in (identifiers, names):  # the store's own class list, in its order
        return LabelMap(np.arange(n, dtype=np.int64), None)
    if identifiers is None and names is None:
        return LabelMap(None, f"the store ({space}) records no class identifiers or names")
    lookup: dict[str, int] = {}
    if names is not None:
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        lookup.update((name, i) for i, name in enumerate(names) if counts[name] == 1)
    if identifiers is not None:
        lookup.update((ident, i) for i, ident in enumerate(identifiers))
    table = np.array([lookup.get(c, -1) for c in classes], dtype=np.int64)
    unmatched = [c for c, i in zip(classes, table.tolist(), strict=True) if i < 0]
    if unmatched:
        return LabelMap(
            table,
            f"{len(unmatched)} of the {len(classes)} classes of {dataset} match none of the "
            f"store's class identifiers ({space}; e.g. "
            f"{(identifiers or names or ('?',))[0]!r}): {unmatched[:5]}",
        )
    return LabelMap(table, None)


def _from_user(class_map: Any, dataset_classes: Sequence[str] | None, n: int) -> LabelMap:
    if isinstance(class_map, str | bytes) or not isinstance(
        class_map, Mapping | Sequence | np.ndarray
    ):
        raise ArgumentTypeError(
            "class_map must be a dict {dataset class name or label: store class id} or a "
            f"sequence of store class ids indexed by label, got {type(class_map).__name__}"
        )
    if isinstance(class_map, Mapping):
        index = {name: i for i, name in enumerate(dataset_classes or ())}
        pairs: list[tuple[int, Any]] = []
        for key, value in class_map.items():
            if isinstance(key, str):
                if key not in index:
                    raise LabelSpaceError(
                        f"class_map names the dataset class {key!r}, which the dataset does not "
                        f"have (its classes: {list(index)[:10]})"
                    )
                pairs.append((index[key], value))
            else:
                pairs.append((_as_int(key, "class_map key"), value))
        size = max([len(index), *(label + 1 for label, _ in pairs)])
        table = np.full(size, -1, np.int64)
        for label, value in pairs:
            table[label] = _store_id(value, n)
    else:
        table = np.array([_store_id(v, n) for v in class_map], dtype=np.int64)
    short = len(dataset_classes or ()) > len(table)
    unmatched = [i for i, v in enumerate(table.tolist()) if v < 0]
    if short or unmatched:
        missing = unmatched + list(range(len(table), len(dataset_classes or ())))
        return LabelMap(
            table,
            f"class_map leaves dataset labels {missing[:10]} without a class (a class_map "
            "replaces matching by name: it must name every dataset class)",
        )
    return LabelMap(table, None)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ArgumentTypeError(f"{what} must be an int, got {value!r}")
    return int(value)


def _store_id(value: Any, n: int) -> int:
    class_id = _as_int(value, "a class_map value")
    if not 0 <= class_id < n:
        raise LabelSpaceError(
            f"class_map maps to class id {class_id}, outside the store's 0..{n - 1}"
        )
    return class_id
