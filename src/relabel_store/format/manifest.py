"""The checksum manifest: every file's path, size and sha256, plus one digest over them all.

``manifest.json`` is written last, atomically, after all data; its presence is what makes a store
complete. Paths in a manifest are validated before use, wherever the manifest came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relabel_store.errors import (
    FormatError,
    IncompleteStoreError,
    StoreNotFoundError,
    UnsafePathError,
)
from relabel_store.format._io import atomic_write_bytes, file_kind, open_regular, sha256_stream
from relabel_store.format.metadata import MANIFEST_NAME, PROGRESS_DIR, software_version

__all__ = [
    "MANIFEST_VERSION",
    "Manifest",
    "ManifestEntry",
    "VerifyReport",
    "build_manifest",
    "compare_files",
    "entries_digest",
    "read_manifest",
    "safe_relpath",
    "scan_store",
    "store_files",
    "verify_dir",
    "verify_store",
    "write_manifest",
]

MANIFEST_VERSION = 1
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The files of a store. ``digest`` identifies the whole store's content."""

    entries: tuple[ManifestEntry, ...]

    @property
    def digest(self) -> str:
        return entries_digest(self.entries)

    def by_path(self) -> dict[str, ManifestEntry]:
        return {e.path: e for e in self.entries}

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "algorithm": "sha256",
            "digest": self.digest,
            "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in self.entries],
        }

    @classmethod
    def from_bytes(cls, raw: bytes, *, where: str = "manifest.json") -> Manifest:
        """Parse and check a manifest: every path safe, every field well-formed, digest right."""
        try:
            data = json.loads(raw)
            version, algorithm = data["manifest_version"], data["algorithm"]
            files = data["files"]
            entries = tuple(
                ManifestEntry(safe_relpath(f["path"]), int(f["size"]), str(f["sha256"]))
                for f in files
            )
            recorded = data["digest"]
        except UnsafePathError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"{where} is not a valid relabel-store manifest: {exc}") from None
        if version != MANIFEST_VERSION or isinstance(version, bool):
            raise FormatError(
                f"{where} has manifest_version {version!r}; this relabel-store "
                f"{software_version()} reads version {MANIFEST_VERSION} only. Upgrade "
                "relabel-store (pip install -U relabel-store) to read it."
            )
        if algorithm != "sha256":
            raise FormatError(
                f"{where} checksums its files with {algorithm!r}; relabel-store checks sha256 "
                "only, and will not treat other digests as sha256. Re-download or regenerate it."
            )
        for e in entries:
            if e.size < 0 or not re.fullmatch(r"[0-9a-f]{64}", e.sha256):
                raise FormatError(f"{where} has a malformed entry for {e.path!r}")
        if len({e.path for e in entries}) != len(entries):
            raise FormatError(f"{where} lists a path twice")
        manifest = cls(tuple(sorted(entries, key=lambda e: e.path)))
        if manifest.digest != recorded:
            raise FormatError(
                f"{where}: recorded digest {recorded} does not match its entries "
                f"({manifest.digest}); the manifest was edited or damaged"
            )
        return manifest


def entries_digest(entries: Iterable[ManifestEntry]) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(f"{e.path}\t{e.size}\t{e.sha256}\n".encode())
    return h.hexdigest()


def safe_relpath(path: Any) -> str:
    """Return ``path`` if it is a plain relative POSIX path inside a store, else raise.

    Refuses absolute paths, ``..``/``.`` components, backslashes, drive letters, NUL bytes and
    empty components: a manifest or a remote listing must never make us touch files outside.
    """
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"refusing store path {path!r}: not a non-empty string")
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or _WINDOWS_DRIVE.match(path)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UnsafePathError(
            f"refusing store path {path!r}: it is absolute or escapes the store. A manifest may "
            "only name relative paths inside the store; this store is damaged or malicious."
        )
    return path


def scan_store(
    root: Path, *, include_scratch: bool = False
) -> tuple[list[str], list[tuple[str, str]]]:
    """The regular files under ``root`` (relative POSIX paths, sorted), and every entry that is
    neither a regular file nor a folder, as ``(path, kind)``: symlinks (never followed), FIFOs,
    devices, sockets. Unless ``include_scratch``, what a manifest does not cover is left out:
    ``manifest.json`` itself, the ``_progress/`` folder and ``*.tmp`` files."""
    files: list[str] = []
    irregular: list[tuple[str, str]] = []

    def visit(folder: str, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if include_scratch or rel != PROGRESS_DIR:
                        visit(entry.path, rel + "/")
                elif entry.is_file(follow_symlinks=False):
                    scratch = rel == MANIFEST_NAME or entry.name.endswith(".tmp")
                    if include_scratch or not scratch:
                        files.append(rel)
                else:
                    irregular.append((rel, file_kind(entry.path) or "file"))

    visit(os.fspath(root), "")
    return sorted(files), sorted(irregular)


def store_files(root: Path, *, include_scratch: bool = False) -> list[str]:
    """The files a manifest covers (all files with ``include_scratch``), as :func:`scan_store`;
    raises :class:`UnsafePathError` if the store holds a symlink or another non-regular file."""
    files, irregular = scan_store(root, include_scratch=include_scratch)
    if irregular:
        path, kind = irregular[0]
        raise UnsafePathError(
            f"refusing {root}/{path}: it is a {kind}. A store holds only regular files and "
            f"folders, and relabel-store never follows a link inside one ({len(irregular)} such "
            "entries); replace it with the real file, or remove it."
        )
    return files


def build_manifest(root: Path) -> Manifest:
    entries = []
    for rel in store_files(root):
        with open_regular(root, rel) as f:
            size, digest = sha256_stream(f)
        entries.append(ManifestEntry(rel, size, digest))
    return Manifest(tuple(entries))


def write_manifest(root: Path, manifest: Manifest) -> None:
    atomic_write_bytes(root / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=1).encode())


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` when nothing is missing, extra, resized, altered or a
    non-regular file (a symlink is reported and never followed)."""

    digest: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    resized: list[tuple[str, int, int]] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    not_regular: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.resized or self.altered or self.not_regular)

    def lines(self) -> list[str]:
        out = [f"not a regular file: {p} ({kind}; not followed)" for p, kind in self.not_regular]
        out += [f"missing: {p}" for p in self.missing]
        out += [f"extra: {p}" for p in self.extra]
        out += [f"resized: {p} (manifest {a} bytes, found {b})" for p, a, b in self.resized]
        out += [f"altered: {p} (sha256 differs)" for p in self.altered]
        return out


def compare_files(
    manifest: Manifest,
    sizes: Mapping[str, int],
    same_content: Callable[[ManifestEntry], bool],
    extra: Iterable[str] = (),
) -> VerifyReport:
    """The report for a set of files (path -> size) checked against ``manifest``: missing,
    resized, and altered where ``same_content(entry)`` is false (asked only when the size
    matches); ``extra`` are files that should not be there. Local, Hub and fsspec checks all
    build their report here."""
    report = VerifyReport(digest=manifest.digest, extra=sorted(extra))
    for entry in manifest.entries:
        size = sizes.get(entry.path)
        if size is None:
            report.missing.append(entry.path)
            continue
        report.checked += 1
        if size != entry.size:
            report.resized.append((entry.path, entry.size, size))
        elif not same_content(entry):
            report.altered.append(entry.path)
    return report


def verify_dir(root: Path, manifest: Manifest) -> VerifyReport:
    """Check every file under ``root`` against ``manifest``. A symlink or another non-regular
    file is reported (``not_regular``) and never followed, opened or hashed."""
    present, not_regular = scan_store(root)
    blocked = {p for p, _ in not_regular}
    listed = manifest.by_path()
    sizes = {}
    for path in present:
        if path in listed:
            with contextlib.suppress(FileNotFoundError):  # removed since the scan: missing
                sizes[path] = os.lstat(root / path).st_size

    def same_content(entry: ManifestEntry) -> bool:
        try:
            with open_regular(root, entry.path) as f:
                return sha256_stream(f)[1] == entry.sha256
        except (FileNotFoundError, UnsafePathError):  # gone, or swapped for a link, since
            return False

    report = compare_files(
        manifest, sizes, same_content, extra=[p for p in present if p not in listed]
    )
    report.not_regular = not_regular
    report.missing = [p for p in report.missing if not _inside(p, blocked)]
    return report


def _inside(path: str, entries: set[str]) -> bool:
    """Whether ``path`` is one of ``entries`` or lies in a folder that is one."""
    parts = path.split("/")
    return any("/".join(parts[:i]) in entries for i in range(1, len(parts) + 1))


def read_manifest(root: Path) -> Manifest:
    """The parsed ``manifest.json`` of the local store at ``root``, read without following links.

    Raises :class:`StoreNotFoundError` when ``root`` holds no store, and
    :class:`IncompleteStoreError` when the store was never finalized.
    """
    try:
        open_regular(root, "zarr.json").close()
    except (FileNotFoundError, NotADirectoryError):
        raise StoreNotFoundError(
            f"no relabel-store store at {root} (no zarr.json); check the path"
        ) from None
    try:
        with open_regular(root, MANIFEST_NAME) as f:
            raw = f.read()
    except FileNotFoundError:
        raise IncompleteStoreError(
            f"{root} has no {MANIFEST_NAME}: the store was never finalized. Re-run the "
            "`relabel-store generate` command that created it to resume and finish it."
        ) from None
    return Manifest.from_bytes(raw, where=f"{root}/{MANIFEST_NAME}")


def verify_store(path: str | os.PathLike[str]) -> VerifyReport:
    """Check a local store against its own ``manifest.json``."""
    root = Path(path)
    return verify_dir(root, read_manifest(root))
