"""relabel-store: ReLabel label maps as a verified Zarr v3 artifact, with LabelPooling loaders.

The package is built by wing, one subpackage each, with one-way rules between them
(``tests/test_layering.py`` checks every import, including those inside functions)::

    cli ─────────────► anything below
    loaders ─────────► read, pooling, format, base
    report ──────────► read, pooling, format, base
    publish ─────────► read, format, base
    write ───────────► read, pooling, format, base
    read ────────────► format, base
    pooling ─────────► base
    format ──────────► base
    base: errors, _extras, _progress, _parallel, images (no wing)

The public names below load on first use (PEP 562), so ``import relabel_store`` costs next to
nothing: reading a store imports numpy and the codecs, writing one zarr, and only
:class:`BatchPooler` imports torch (``pip install 'relabel-store[torch]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from relabel_store.errors import (
    AnnotatorError,
    ArgumentTypeError,
    ConfigurationError,
    CorruptDataError,
    FormatError,
    ImageMismatchError,
    IncompleteStoreError,
    InputError,
    InputSizeWarning,
    InsufficientMemoryError,
    InvalidBoxError,
    LabelSpaceError,
    MissingExtraError,
    NoSignaturesWarning,
    RecordNotFoundError,
    RelabelStoreError,
    RemoteError,
    RowOutOfRangeError,
    StoreLockedError,
    StoreNotFoundError,
    UnsafePathError,
    UnsupportedTransformError,
)

if TYPE_CHECKING:
    from relabel_store.format.manifest import VerifyReport, verify_store
    from relabel_store.format.metadata import StoreMetadata
    from relabel_store.pooling import CropBox, PoolingSpec, pool
    from relabel_store.pooling.batched import BatchPooler
    from relabel_store.read.api import load_relabel
    from relabel_store.read.reader import Record, RecordBatch, RelabelStore
    from relabel_store.report.quality import QualityReport, quality_report
    from relabel_store.write.writer import BackgroundWriter, StoreWriter

_LAZY = {
    "load_relabel": "relabel_store.read.api",
    "StoreMetadata": "relabel_store.format.metadata",
    "VerifyReport": "relabel_store.format.manifest",
    "verify_store": "relabel_store.format.manifest",
    "CropBox": "relabel_store.pooling",
    "PoolingSpec": "relabel_store.pooling",
    "pool": "relabel_store.pooling",
    "QualityReport": "relabel_store.report.quality",
    "quality_report": "relabel_store.report.quality",
    "Record": "relabel_store.read.reader",
    "RecordBatch": "relabel_store.read.reader",
    "RelabelStore": "relabel_store.read.reader",
    "BatchPooler": "relabel_store.pooling.batched",
    "StoreWriter": "relabel_store.write.writer",
    "BackgroundWriter": "relabel_store.write.writer",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AnnotatorError",
    "ArgumentTypeError",
    "BackgroundWriter",
    "BatchPooler",
    "ConfigurationError",
    "CorruptDataError",
    "CropBox",
    "FormatError",
    "ImageMismatchError",
    "IncompleteStoreError",
    "InputError",
    "InputSizeWarning",
    "InsufficientMemoryError",
    "InvalidBoxError",
    "LabelSpaceError",
    "MissingExtraError",
    "NoSignaturesWarning",
    "PoolingSpec",
    "QualityReport",
    "Record",
    "RecordBatch",
    "RecordNotFoundError",
    "RelabelStore",
    "RelabelStoreError",
    "RemoteError",
    "RowOutOfRangeError",
    "StoreLockedError",
    "StoreMetadata",
    "StoreNotFoundError",
    "StoreWriter",
    "UnsafePathError",
    "UnsupportedTransformError",
    "VerifyReport",
    "load_relabel",
    "pool",
    "quality_report",
    "verify_store",
]
