"""Named stores: short names such as ``imagenet-relabel`` for a published store at a pinned revision.

Two JSON files are read, the second overriding the first name by name:

1. ``registry.json`` shipped inside the package;
2. the user's registry: the file named by ``$RELABEL_STORE_REGISTRY``, else
   ``$XDG_CONFIG_HOME/relabel-store/registry.json`` (``~/.config/relabel-store/registry.json``).

Both have the form ``{"registry_version": 1, "stores": {name: entry}}``, an entry being
``{"repo_id": "org/name", "revision": "<commit>", "subdir": ..., "digest": ..., "description":
...}``, ``{"url": "s3://bucket/store.relabel.zarr", "digest": ...}`` or ``{"path":
"/data/store.relabel.zarr"}`` (a local folder: a mirror on a cluster without Hub access).
``digest`` (optional) pins the manifest digest: opening fails if the published manifest differs.
An entry with none of the three is a store not published yet: ``make`` (the command that builds
it) and ``download`` (its input) tell the user how to make it, and opening the name fails at
once with those instructions, without a request. :func:`register` adds an entry to the user's
file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from relabel_store.errors import FormatError, StoreNotFoundError
from relabel_store.format.manifest import safe_relpath
from relabel_store.read.hub_names import HubTarget, is_repo_id

__all__ = [
    "REGISTRY_ENV",
    "REGISTRY_VERSION",
    "RegistryEntry",
    "known",
    "lookup",
    "packaged",
    "register",
    "unregister",
    "user_registry_path",
]

REGISTRY_ENV = "RELABEL_STORE_REGISTRY"
REGISTRY_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = (
    "repo_id",
    "revision",
    "subdir",
    "url",
    "path",
    "digest",
    "description",
    "download",
    "make",
)


@dataclass(frozen=True)
class RegistryEntry:
    """Where a named store lives: a Hub repo at a revision (plus subfolder), a URL, a local
    folder, or nowhere yet (then ``make`` says how to build it)."""

    name: str
    repo_id: str | None = None
    revision: str | None = None
    subdir: str | None = None
    url: str | None = None
    path: str | None = None
    digest: str | None = None
    description: str = ""
    download: str | None = None
    make: str | None = None
    origin: str = ""  # "package" or the user registry file it came from

    @property
    def published(self) -> bool:
        return self.repo_id is not None or self.url is not None or self.path is not None

    @property
    def location(self) -> str:
        if self.url is not None:
            return self.url
        if self.path is not None:
            return self.path
        if self.repo_id is None:
            return "(not published yet: make it yourself)"
        return HubTarget(self.repo_id, self.revision, self.subdir).url

    def how_to_make(self) -> str:
        """How to build this store yourself, and point the name at it ("" if unknown)."""
        if self.make is None:
            return ""
        steps = [f"download {self.download}"] if self.download else []
        steps.append(f"run: {self.make}")
        listing = "\n".join(f"  {i}. {step}" for i, step in enumerate(steps, 1))
        return (
            f"To make {self.name!r} yourself:\n{listing}\n"
            "then open the store by its path, or point the name at it (or at a mirror) once: "
            f'relabel_store.read.registry.register("{self.name}", path="/absolute/path/to/store") '
            f'(or url="s3://..."), which writes {user_registry_path()} (${REGISTRY_ENV}).'
        )

    def unpublished_error(self) -> StoreNotFoundError:
        return StoreNotFoundError(
            f"{self.name!r} is not published yet: {self.description} {self.how_to_make()}"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: data[k] for k in _FIELDS if data[k] not in (None, "")}


def user_registry_path() -> Path:
    """The user's registry file (it need not exist)."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "relabel-store" / "registry.json"


def _entry(name: str, data: Any, origin: str) -> RegistryEntry:
    where = f"registry {origin}, entry {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise FormatError(
            f"registry {origin}: {name!r} is not a valid store name (lowercase letters, digits, "
            "'.', '_' and '-', starting with a letter or digit)"
        )
    if not isinstance(data, dict):
        raise FormatError(f"{where}: expected an object")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise FormatError(f"{where}: unknown fields {sorted(unknown)}; known: {list(_FIELDS)}")
    if any(v is not None and not isinstance(v, str) for v in data.values()):
        raise FormatError(f"{where}: every field must be a string")
    repo_id, url, path = data.get("repo_id"), data.get("url"), data.get("path")
    places = sum(v is not None for v in (repo_id, url, path))
    if places > 1 or (places == 0 and not data.get("make")):
        raise FormatError(
            f"{where}: give exactly one of 'repo_id' (a Hub dataset repo), 'url' (an fsspec URL) "
            "or 'path' (a local folder); only a store not published yet has none, and then "
            "'make' says how to build it"
        )
    if path is not None and not Path(path).expanduser().is_absolute():
        raise FormatError(f"{where}: 'path' must be an absolute path, got {path!r}")
    if repo_id is not None and not is_repo_id(repo_id):
        raise FormatError(f"{where}: {repo_id!r} is not a Hub repo id (org/name)")
    if repo_id is not None and not data.get("revision"):
        raise FormatError(f"{where}: a Hub entry needs a 'revision' (a commit sha pins it)")
    if url is not None and "://" not in url:
        raise FormatError(f"{where}: 'url' must be a URL such as s3://bucket/store.relabel.zarr")
    if repo_id is None and data.get("revision"):
        raise FormatError(f"{where}: 'revision' applies to Hub entries only")
    digest = data.get("digest")
    if digest is not None and not _DIGEST.match(digest):
        raise FormatError(f"{where}: 'digest' must be a manifest digest (64 hex digits)")
    subdir = data.get("subdir")
    if subdir:
        safe_relpath(subdir.strip("/"))
    return RegistryEntry(
        name=name,
        repo_id=repo_id,
        revision=data.get("revision"),
        subdir=subdir.strip("/") if subdir else None,
        url=url.rstrip("/") if url else None,
        path=str(Path(path).expanduser()) if path else None,
        digest=digest,
        description=data.get("description") or "",
        download=data.get("download"),
        make=data.get("make"),
        origin=origin,
    )


def _parse(raw: str, origin: str) -> dict[str, RegistryEntry]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"registry {origin} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stores", {}), dict):
        raise FormatError(f'registry {origin}: expected {{"stores": {{name: entry}}}}')
    version = data.get("registry_version", REGISTRY_VERSION)
    if version != REGISTRY_VERSION:
        raise FormatError(
            f"registry {origin} has registry_version {version!r}; this relabel-store reads "
            f"version {REGISTRY_VERSION}"
        )
    return {name: _entry(name, entry, origin) for name, entry in data.get("stores", {}).items()}


def packaged() -> dict[str, RegistryEntry]:
    """The entries shipped with relabel-store."""
    raw = resources.files("relabel_store.read").joinpath("registry.json").read_text()
    return _parse(raw, "package")


def _user(path: Path) -> dict[str, RegistryEntry]:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    return _parse(raw, str(path))


def known() -> dict[str, RegistryEntry]:
    """Every registered name: the package's entries, overridden by the user's."""
    return {**packaged(), **_user(user_registry_path())}


def lookup(name: str) -> RegistryEntry:
    """The entry for ``name``; an unknown name raises an error listing the known ones."""
    entries = known()
    entry = entries.get(name)
    if entry is not None:
        return entry
    listing = "\n".join(f"  {n:<24} {e.location}  ({e.origin})" for n, e in sorted(entries.items()))
    raise StoreNotFoundError(
        f"unknown store name {name!r} (and no local directory of that name). Known stores:\n"
        f"{listing or '  (none)'}\n"
        f'Register one with relabel_store.read.registry.register("{name}", "<org>/<repo>", '
        f'revision="<commit sha>"), which writes the user registry {user_registry_path()} '
        f"(set ${REGISTRY_ENV} to use another file), or open it directly by path, hf:// URL or "
        "org/name."
    )


def register(
    name: str,
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    subdir: str | None = None,
    digest: str | None = None,
    description: str = "",
    registry_file: str | os.PathLike[str] | None = None,
) -> RegistryEntry:
    """Add (or replace) ``name`` in the user registry (``registry_file``, default
    :func:`user_registry_path`) and return the entry. Give ``repo_id`` and ``revision`` (a commit
    sha pins the store for good), ``url`` (any fsspec URL) or ``path`` (a local folder, made
    absolute here)."""
    target = Path(registry_file) if registry_file is not None else user_registry_path()
    fields = {
        "repo_id": repo_id,
        "revision": revision,
        "subdir": subdir,
        "url": url,
        "path": str(Path(path).expanduser().absolute()) if path is not None else None,
        "digest": digest,
        "description": description or None,
    }
    entry = _entry(name, {k: v for k, v in fields.items() if v is not None}, str(target))
    _write(target, {**_user(target), name: entry})
    return entry


def unregister(name: str, *, registry_file: str | os.PathLike[str] | None = None) -> bool:
    """Remove ``name`` from the user registry; False when it was not there."""
    target = Path(registry_file) if registry_file is not None else user_registry_path()
    entries = _user(target)
    if name not in entries:
        return False
    del entries[name]
    _write(target, entries)
    return True


def _write(path: Path, entries: dict[str, RegistryEntry]) -> None:
    from relabel_store.format._io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "registry_version": REGISTRY_VERSION,
        "stores": {n: e.to_json() for n, e in sorted(entries.items())},
    }
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
