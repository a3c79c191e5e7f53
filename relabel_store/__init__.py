"""relabel-store: ReLabel label maps as a verified Zarr v3 artifact, with LabelPooling loaders."""

from relabel_store.api import load_relabel
from relabel_store.errors import (
    CorruptDataError,
    FormatError,
    IncompleteStoreError,
    InputError,
    InvalidArgumentError,
    InvalidBoxError,
    RecordNotFoundError,
    RelabelStoreError,
    RemoteError,
    RowOutOfRangeError,
    StoreLockedError,
    StoreNotFoundError,
    UnsafePathError,
)
from relabel_store.format import StoreMetadata
from relabel_store.manifest import VerifyReport, verify_store
from relabel_store.pooling import BatchPooler, CropBox, PoolingSpec, pool
from relabel_store.reader import Record, RecordBatch, RelabelStore
from relabel_store.writer import StoreWriter

__all__ = [
    "BatchPooler",
    "CorruptDataError",
    "CropBox",
    "FormatError",
    "IncompleteStoreError",
    "InputError",
    "InvalidArgumentError",
    "InvalidBoxError",
    "PoolingSpec",
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
    "VerifyReport",
    "load_relabel",
    "pool",
    "verify_store",
]
