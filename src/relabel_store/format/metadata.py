"""Store format v1: array names, layout constants, and the metadata schema.

The authoritative description is docs/format.md; this module is its executable form. Everything
here is plain data so that both the writer (zarr-python) and the fast reader agree on one layout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relabel_store.errors import FormatError

__all__ = [
    "ATTRS_KEY",
    "DEFAULT_SHARD_RECORDS",
    "DEFAULT_ZSTD_LEVEL",
    "ERRORS_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDICES",
    "INDICES_ZSTD_LEVEL",
    "KEYS",
    "KEY_CHUNK_ROWS",
    "LABELS",
    "MANIFEST_NAME",
    "MAX_INDEX_CHUNK_ROWS",
    "MAX_KEY_BYTES",
    "PROGRESS_DIR",
    "ROWS",
    "SIZES",
    "VALUES",
    "VALUES_BLOSC_LEVEL",
    "VALUES_DTYPES",
    "VALUE_KINDS",
    "StoreMetadata",
    "read_group_attribute",
    "software_version",
]

FORMAT_NAME = "relabel-store"
# 1.1 added `label_space` and `class_identifiers` (optional fields: 1.0 readers ignore them).
# 1.2 added `values_dtype`: logits may be stored as float32 (lossless imports of float32 maps).
# 1.3 added the optional `signatures` array (a content signature of each record's image, for the
# loaders' image check); 1.2 readers ignore it and load such stores without the check.
FORMAT_VERSION = "1.3"
ATTRS_KEY = "relabel"
MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.jsonl"
PROGRESS_DIR = "_progress"

# Record arrays: one inner chunk per record, `shard_records` records per shard file.
INDICES = "indices"
VALUES = "values"
# Written by finalize(), in key order, in chunks of KEY_CHUNK_ROWS: the sorted keys (NUL-padded
# UTF-8 bytes), the record row each key lives in, its original label and its image size.
KEYS = "keys"
ROWS = "rows"
LABELS = "labels"
SIZES = "sizes"
KEY_CHUNK_ROWS = 1 << 18
# Optional (format 1.3), in key order like `sizes`: (N, SIGNATURE_BYTES) uint8, the content
# signature of each record's whole image as the annotator read it (relabel_store.images
# .image_signature). Its zarr.json attribute SIGNATURE_ATTR = {"kind": SIGNATURE_KIND} names the
# recipe; a reader refuses signatures of a kind it does not know. Written by finalize() when
# every record has one, or added to a finalized store by `relabel-store sign`.
SIGNATURES = "signatures"
SIGNATURE_ATTR = "relabel_signature"
SIGNATURE_KIND = "gray-box8-z32"
SIGNATURE_BYTES = 64
# Limits every reader enforces before allocating (docs/format.md): a key's UTF-8 bytes (keys are
# stored fixed-width, so one long key widens all N), and the rows of one key-index chunk.
MAX_KEY_BYTES = 1024
MAX_INDEX_CHUNK_ROWS = 1 << 20
# Sane absolute caps on what a store may declare, checked before anything is allocated for it
# (docs/format.md, "Limits"): a grid side, the entries of one record (grid cells x k: one record's
# decoded bytes are at most 6x this, indices uint16 + values float32), the records of one shard,
# the rows, and the bytes of the decoded key table (records x key width).
MAX_GRID_SIDE = 256
MAX_RECORD_ENTRIES = 1 << 20
MAX_SHARD_RECORDS = 1 << 20
MAX_ROWS = 1 << 40
MAX_KEY_TABLE_BYTES = 1 << 31

DEFAULT_SHARD_RECORDS = 4096
DEFAULT_ZSTD_LEVEL = 9
INDICES_ZSTD_LEVEL = 13
VALUES_BLOSC_LEVEL = 7  # c-blosc runs zstd at level 2 * 7 - 1 = 13
VALUE_KINDS = ("logits",)
#: Element types the ``values`` array may have; stores before 1.2 are all float16.
VALUES_DTYPES = ("float16", "float32")


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relabel-store")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


@dataclass(frozen=True)
class StoreMetadata:
    """Everything a store says about itself (the group attribute ``relabel``)."""

    grid: tuple[int, int]
    k: int
    num_classes: int
    rows: int
    shard_records: int = DEFAULT_SHARD_RECORDS
    class_names: tuple[str, ...] | None = None
    #: Name of the label space the class ids index, e.g. ``"imagenet-1k"``; None when unknown.
    label_space: str | None = None
    #: Stable identifier of each class (ImageNet wnids such as ``"n01440764"``), in class-id
    #: order: what lets a loader map a dataset's own classes onto the store's by identity.
    class_identifiers: tuple[str, ...] | None = None
    value_kind: str = "logits"
    #: Element type of ``values``: float16 (the default, half the size) or float32 (lossless for
    #: float32 sources such as the official ReLabel maps). Absent before format 1.2: float16.
    values_dtype: str = "float16"
    annotator: Mapping[str, Any] = field(default_factory=dict)
    dataset: Mapping[str, Any] = field(default_factory=dict)
    parent: Mapping[str, Any] | None = None
    software_version: str = field(default_factory=software_version)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    complete: bool = False
    record_count: int = 0
    format: str = FORMAT_NAME
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check(
            len(self.grid) == 2 and all(_posint(v) and v <= MAX_GRID_SIDE for v in self.grid),
            f"grid must be two integers in 1..{MAX_GRID_SIDE}, got {self.grid!r}",
        )
        _check(_posint(self.k), f"k must be a positive integer, got {self.k!r}")
        _check(
            self.grid[0] * self.grid[1] * self.k <= MAX_RECORD_ENTRIES,
            f"a record of grid {self.grid[0]}x{self.grid[1]} and k={self.k} holds "
            f"{self.grid[0] * self.grid[1] * self.k} entries; at most {MAX_RECORD_ENTRIES} are "
            "supported",
        )
        _check(
            _posint(self.num_classes) and self.num_classes <= 65536,
            f"num_classes must be in 1..65536 (class ids are uint16), got {self.num_classes!r}",
        )
        _check(self.k <= self.num_classes, f"k={self.k} exceeds num_classes={self.num_classes}")
        _check(
            isinstance(self.rows, int) and 0 <= self.rows <= MAX_ROWS,
            f"rows must be in 0..{MAX_ROWS}, got {self.rows!r}",
        )
        _check(
            _posint(self.shard_records) and self.shard_records <= MAX_SHARD_RECORDS,
            f"shard_records must be an integer in 1..{MAX_SHARD_RECORDS}, got "
            f"{self.shard_records!r}",
        )
        _check(
            self.class_names is None or len(self.class_names) == self.num_classes,
            f"class_names has {len(self.class_names or ())} names for {self.num_classes} classes",
        )
        _check(
            self.class_identifiers is None or len(self.class_identifiers) == self.num_classes,
            f"class_identifiers has {len(self.class_identifiers or ())} entries for "
            f"{self.num_classes} classes",
        )
        _check(
            self.class_identifiers is None
            or len(set(self.class_identifiers)) == len(self.class_identifiers),
            "class_identifiers must be unique",
        )
        _check(
            self.value_kind in VALUE_KINDS,
            f"value_kind must be one of {VALUE_KINDS}, got {self.value_kind!r}",
        )
        _check(
            self.values_dtype in VALUES_DTYPES,
            f"values_dtype must be one of {VALUES_DTYPES}, got {self.values_dtype!r}",
        )
        _check(
            isinstance(self.record_count, int) and 0 <= self.record_count <= self.rows,
            f"record_count={self.record_count} is outside 0..rows={self.rows}",
        )

    @property
    def num_shards(self) -> int:
        return -(-self.rows // self.shard_records)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["grid"] = list(self.grid)
        out["class_names"] = list(self.class_names) if self.class_names is not None else None
        out["class_identifiers"] = (
            list(self.class_identifiers) if self.class_identifiers is not None else None
        )
        out["annotator"] = dict(self.annotator)
        out["dataset"] = dict(self.dataset)
        # Round-trip through json to reject anything that would not survive serialisation.
        checked: dict[str, Any] = json.loads(json.dumps(out, allow_nan=False))
        return checked

    @classmethod
    def from_json(cls, data: Any, *, where: str = "store") -> StoreMetadata:
        """Validate and parse the ``relabel`` group attribute; refuse other formats and majors."""
        if not isinstance(data, Mapping):
            raise FormatError(
                f"{where} has no relabel-store metadata (group attribute {ATTRS_KEY!r}): "
                "is it a relabel-store Zarr group? Open the store's root folder."
            )
        if data.get("format") != FORMAT_NAME:
            raise FormatError(
                f"{where} is not a relabel-store store (format={data.get('format')!r})"
            )
        version = str(data.get("format_version", ""))
        major = version.split(".")[0]
        if major != FORMAT_VERSION.split(".")[0]:
            raise FormatError(
                f"{where} uses relabel-store format version {version!r}; this relabel-store "
                f"{software_version()} reads major version {FORMAT_VERSION.split('.')[0]} only. "
                "Upgrade relabel-store (pip install -U relabel-store) to read it."
            )
        if data.get("values_dtype", "float16") not in VALUES_DTYPES:
            raise FormatError(
                f"{where} stores its logits as {data.get('values_dtype')!r}; this relabel-store "
                f"{software_version()} reads {' and '.join(VALUES_DTYPES)} only. Upgrade "
                "relabel-store (pip install -U relabel-store) to read it."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}  # newer minors may add fields
        try:
            kwargs["grid"] = tuple(kwargs["grid"])
            for name in ("class_names", "class_identifiers"):
                if kwargs.get(name) is not None:
                    kwargs[name] = tuple(kwargs[name])
            return cls(**kwargs)
        except FormatError as exc:
            raise FormatError(
                f"{where} has relabel-store metadata this reader refuses: {exc}. The store is "
                "damaged or was not written by relabel-store; re-download or regenerate it."
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where} has malformed relabel-store metadata: {exc!r}") from None


def read_group_attribute(group_json: bytes, where: str) -> Any:
    """The ``relabel`` attribute of a store's group ``zarr.json`` (None when it has none), for
    :meth:`StoreMetadata.from_json`. Raises :class:`FormatError` when the file is not JSON."""
    try:
        group = json.loads(group_json)
    except ValueError:
        raise FormatError(f"{where}/zarr.json is not valid JSON; the store is damaged") from None
    attrs = group.get("attributes") if isinstance(group, dict) else None
    return attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None


def _posint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise FormatError(message)
