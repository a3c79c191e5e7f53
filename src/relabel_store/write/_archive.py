"""Where published label maps come from: one tar archive, or a folder of extracted files.

A tar is never extracted. A first pass reads only its headers (seeking over the data of an
uncompressed tar; a gzip/bzip2/xz tar has to be decompressed for it) and lists the members;
a second pass reads the file once from start to end, hashing every byte (the sha256 the store
records) and handing out the bytes of the members asked for. A folder is walked in sorted path
order; its files are read where they are decoded.

Rows are members in archive order (sorted path order for a folder), directories excepted: the
same source always gives the same rows, which is what makes an interrupted import resumable.
Members that cannot be label maps (links, devices, sparse or huge files) keep their row and carry
the reason; they are never read.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Self, cast

from relabel_store._progress import Progress
from relabel_store.errors import InputError
from relabel_store.write._published import MAX_MAP_BYTES

_READ = 8 << 20
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_TARFILE_READS = {"gzip", "bzip2", "xz"}


@dataclass
class Members:
    """The rows of a source: each member's name, and for uncompressed tars where its data is."""

    names: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # start of the data (tar), else -1
    sizes: list[int] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)  # row -> why it is not read

    def add(self, name: str, offset: int, size: int, problem: str | None) -> None:
        if problem is not None:
            self.problems[len(self.names)] = problem
        self.names.append(name)
        self.offsets.append(offset)
        self.sizes.append(size)

    def __len__(self) -> int:
        return len(self.names)


Payload = bytes | str | None  # a member's bytes, a file to read, or None (not read)


class MapArchive:
    """A source of published label maps. :meth:`scan` first, then :meth:`stream`."""

    kind: str

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members = Members()
        self.sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def scan(self, show: bool | None) -> Members:
        raise NotImplementedError

    def read_rows(self, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """The bytes of some early rows (ascending), for recognising the format."""
        raise NotImplementedError

    def stream(self, plan: Sequence[tuple[range, bool]]) -> Iterator[tuple[range, list[Payload]]]:
        """Payloads of the chunks ``(rows, wanted)`` marked wanted, in order.

        ``plan`` covers every row once, in order. A tar is read from its first byte to its last
        (hashing it into :attr:`sha256`) whatever is wanted.
        """
        raise NotImplementedError


def open_archive(source: str | os.PathLike[str]) -> MapArchive:
    """A tar file or a folder; anything else is refused with what to give instead."""
    path = Path(source)
    if path.is_dir():
        return FolderArchive(path)
    if path.is_file():
        return TarArchive(path)
    raise InputError(
        f"{path} does not exist. Give the published tar (e.g. relabel_imagenet.tar) or the "
        "folder it was extracted to."
    )


# --------------------------------------------------------------------------------------------
# tar
# --------------------------------------------------------------------------------------------


class _EndCheckingTarInfo(tarfile.TarInfo):
    """Records why the archive ended: tarfile treats a damaged header like the end marker."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.relabel_stop = exc  # type: ignore[attr-defined]
            raise


def _member_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        return f"a {kind} link (to {member.linkname!r}); links are never followed"
    if member.ischr() or member.isblk() or member.isfifo():
        return "a device or pipe, not a file"
    if member.issparse():
        return "a sparse file; label maps are plain files"
    if not member.isreg():
        return f"tar member type {member.type!r} is not a plain file"
    if member.size > MAX_MAP_BYTES:
        return f"is {member.size} bytes, more than any label map ({MAX_MAP_BYTES})"
    return None


class TarArchive(MapArchive):
    """A tar file, uncompressed (read with seeks) or gzip/bzip2/xz-compressed (read as a stream)."""

    kind = "tar"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(6)
        self.compression = next((c for m, c in _COMPRESSED.items() if head.startswith(m)), None)
        if self.compression is not None and self.compression not in _TARFILE_READS:
            raise InputError(
                f"{path} is {self.compression}-compressed; decompress it first "
                f"(e.g. `zstd -d {path.name}`) and import the .tar"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "tar",
            "file": self.path.name,
            "size": self.size,
            "compression": self.compression,
            "members": len(self.members),
        }

    def _open(self, f: BinaryIO) -> tarfile.TarFile:
        mode = "r:" if self.compression is None else "r|*"
        fileobj = f if self.compression is None else _EndGuard(f)
        try:
            return tarfile.open(fileobj=fileobj, mode=mode, tarinfo=_EndCheckingTarInfo)  # type: ignore[call-overload]
        except tarfile.TarError as exc:
            raise InputError(
                f"{self.path} is not a tar archive ({exc}). Give the published tar or the "
                "folder it was extracted to."
            ) from None

    def _members(self, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        """Every member but directories, in archive order; a damaged archive raises."""
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, OSError, OverflowError, ValueError) as exc:
                # A stream (compressed) has no size to check a header against: its absurd
                # claims fail here, in tarfile's seek or read, as one error.
                raise self._damaged(exc, tar.offset) from None
            if member is None:
                break
            cast(Any, tar).members = []  # tarfile keeps every member otherwise: 1.3M objects
            if self.compression is None and member.offset_data + member.size > self.size:
                raise self._damaged(
                    f"member {member.name[:80]!r} declares {member.size} bytes, more than the "
                    f"{self.size}-byte archive holds: its header is damaged or hostile",
                    member.offset,
                )
            if not member.isdir():
                yield member
        stop = getattr(tar, "relabel_stop", None)
        if type(stop).__name__ != "EOFHeaderError":  # the all-zero end-of-archive block
            raise self._damaged(stop or "no end-of-archive marker", tar.offset)

    def _damaged(self, why: object, offset: int) -> InputError:
        return InputError(
            f"{self.path} is damaged or truncated at byte {offset} ({why}). Download it again "
            "(its size and sha256 should match the published ones) and rerun the import; "
            "finished shards are kept."
        )

    def scan(self, show: bool | None) -> Members:
        members = Members()
        with (
            open(self.path, "rb") as f,
            Progress(self.size, desc=f"scanning {self.path.name}", unit="B", show=show) as bar,
        ):
            tar = self._open(f)
            seen = 0
            for m in self._members(tar):
                offset = m.offset_data if self.compression is None else -1
                members.add(m.name, offset, m.size, _member_problem(m))
                position = m.offset_data + m.size if self.compression is None else f.tell()
                bar.update(position - seen)
                seen = position
            bar.update(self.size - seen)  # the end-of-archive blocks
        self.members = members
        return members

    def read_rows(self, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        wanted = set(rows)
        if self.compression is None:
            with open(self.path, "rb") as f:
                for row in sorted(wanted):
                    f.seek(self.members.offsets[row])
                    yield row, f.read(self.members.sizes[row])
            return
        last = max(wanted, default=-1)
        with open(self.path, "rb") as f:
            tar = self._open(f)
            for row, member in enumerate(self._members(tar)):
                if row > last:
                    return
                if row in wanted:
                    yield row, _extract(tar, member)

    def stream(self, plan: Sequence[tuple[range, bool]]) -> Iterator[tuple[range, list[Payload]]]:
        with open(self.path, "rb", buffering=_READ) as raw:
            reader = _HashingReader(raw)
            if self.compression is None:
                yield from self._stream_plain(reader, plan)
            else:
                yield from self._stream_compressed(reader, plan)
            reader.drain()
        if reader.size != self.size:
            raise InputError(f"{self.path} changed size while it was being imported; rerun")
        self.sha256 = reader.hexdigest()

    def _stream_plain(
        self, reader: _HashingReader, plan: Sequence[tuple[range, bool]]
    ) -> Iterator[tuple[range, list[Payload]]]:
        m = self.members
        for rows, wanted in plan:
            if not wanted:
                reader.skip_to(m.offsets[rows.stop - 1] + m.sizes[rows.stop - 1])
                continue
            payloads: list[Payload] = []
            for row in rows:
                reader.skip_to(m.offsets[row])  # the member's header
                end = m.offsets[row] + m.sizes[row]
                if row in m.problems:  # never held in memory, however large
                    reader.skip_to(end)
                    payloads.append(None)
                else:
                    payloads.append(reader.read_to(end))
            yield rows, payloads

    def _stream_compressed(
        self, reader: _HashingReader, plan: Sequence[tuple[range, bool]]
    ) -> Iterator[tuple[range, list[Payload]]]:
        m = self.members
        tar = self._open(reader)  # type: ignore[arg-type]
        members = enumerate(self._members(tar))
        for rows, wanted in plan:
            payloads: list[Payload] = []
            for row in rows:
                index, member = next(members, (None, None))
                if index != row or member is None or member.name != m.names[row]:
                    raise InputError(f"{self.path} changed while it was being imported; rerun")
                if wanted:
                    payloads.append(None if row in m.problems else _extract(tar, member))
            if wanted:
                yield rows, payloads
        if next(members, None) is not None:  # also reaches (and checks) the end marker
            raise InputError(f"{self.path} changed while it was being imported; rerun")


class _EndGuard:
    """A compressed tar's source for tarfile's stream mode, refusing to be read on past its end.

    tarfile skips a member by reading forward block by block and does not stop at the end of
    the data: a header declaring 10^15 bytes would have it read nothing 10^11 times (hours).
    The first few reads at the end are tarfile's own; more mean a header claimed bytes the
    archive does not hold."""

    _MAX_EMPTY_READS = 16

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._empty = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n) if n >= 0 else self._raw.read()
        if not data and n != 0:
            self._empty += 1
            if self._empty > self._MAX_EMPTY_READS:
                raise tarfile.ReadError(
                    "a member's header declares more bytes than the archive holds: its header "
                    "is damaged or hostile"
                )
        return data

    def __getattr__(self, name: str) -> Any:  # tell(), close(), ... of the raw source
        return getattr(self._raw, name)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None  # a regular file: the scan refused everything else
    return f.read()


class _HashingReader:
    """Reads a file front to back exactly once, feeding every byte to sha256."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:  # what tarfile's stream mode calls
        data = self._raw.read(n) if n >= 0 else self._raw.read()
        self._hash.update(data)
        self.size += len(data)
        return data

    def read_to(self, end: int) -> bytes:
        """Everything from the current position up to byte ``end``."""
        parts = []
        while self.size < end:
            data = self.read(min(_READ, end - self.size))
            if not data:
                raise InputError("the source ended early: it changed while being imported")
            parts.append(data)
        return b"".join(parts)

    def skip_to(self, end: int) -> None:
        while self.size < end:
            if not self.read(min(_READ, end - self.size)):
                raise InputError("the source ended early: it changed while being imported")

    def drain(self) -> None:
        while self.read(_READ):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# --------------------------------------------------------------------------------------------
# folder
# --------------------------------------------------------------------------------------------


class FolderArchive(MapArchive):
    """A folder of extracted files (``<wnid>/<stem>.pt``), walked in sorted order, links refused."""

    kind = "folder"

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "folder": self.path.name, "members": len(self.members)}

    def scan(self, show: bool | None) -> Members:
        members = Members()
        with Progress(None, desc=f"scanning {self.path}", unit="files", show=show) as bar:
            stack = [""]
            while stack:
                rel_dir = stack.pop()
                with os.scandir(self.path / rel_dir) as it:
                    entries = sorted(it, key=lambda e: e.name)
                subdirs = []
                for entry in entries:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(rel)
                        continue
                    st = entry.stat(follow_symlinks=False)
                    members.add(rel, -1, st.st_size, _file_problem(st, entry.path))
                    bar.update(1)
                stack.extend(reversed(subdirs))
        self.members = members
        return members

    def read_rows(self, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        for row in sorted(set(rows)):
            yield row, read_file(str(self.path / self.members.names[row]))

    def stream(self, plan: Sequence[tuple[range, bool]]) -> Iterator[tuple[range, list[Payload]]]:
        m = self.members
        for rows, wanted in plan:
            if wanted:
                yield (
                    rows,
                    [None if row in m.problems else str(self.path / m.names[row]) for row in rows],
                )


def _file_problem(st: os.stat_result, path: str) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return f"a symbolic link (to {os.readlink(path)!r}); links are never followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a plain file (a device, pipe or socket)"
    if st.st_size > MAX_MAP_BYTES:
        return f"is {st.st_size} bytes, more than any label map ({MAX_MAP_BYTES})"
    return None


def read_file(path: str) -> bytes:
    """A folder member's bytes, refusing a file that became a link or grew past any map."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_MAP_BYTES + 1)
    return data
