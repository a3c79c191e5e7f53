"""relabel-store: ReLabel label maps as a verified Zarr v3 artifact, with LabelPooling loaders."""

from relabel_store.api import load_relabel
from relabel_store.errors import (
    ArgumentTypeError,
    ConfigurationError,
    CorruptDataError,
    FormatError,
    IncompleteStoreError,
    InputError,
    InsufficientMemoryError,
    InvalidArgumentError,
    InvalidBoxError,
    LabelSpaceError,
    RecordNotFoundError,
    RelabelStoreError,
    RemoteError,
    RowOutOfRangeError,
    StoreLockedError,
    StoreNotFoundError,
    UnsafePathError,
    UnsupportedTransformError,
)
from relabel_store.format import StoreMetadata
from relabel_store.manifest import VerifyReport, verify_store
from relabel_store.pooling import BatchPooler, CropBox, PoolingSpec, pool
from relabel_store.reader import Record, RecordBatch, RelabelStore
from relabel_store.writer import StoreWriter

__all__ = [
    "ArgumentTypeError",
    "BatchPooler",
    "ConfigurationError",
    "CorruptDataError",
    "CropBox",
    "FormatError",
    "IncompleteStoreError",
    "InputError",
    "InsufficientMemoryError",
    "InvalidArgumentError",
    "InvalidBoxError",
    "LabelSpaceError",
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
    "UnsupportedTransformError",
    "VerifyReport",
    "load_relabel",
    "pool",
    "verify_store",
]
