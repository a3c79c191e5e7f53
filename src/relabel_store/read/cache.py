"""The cache of remote stores on this machine: where everything lives in it, and its locks.

Root: ``cache_dir=``, else ``$RELABEL_STORE_CACHE``, else ``relabel-store/`` beside
huggingface_hub's cache (``$HF_HOME/relabel-store``). Layout::

    hub/<host>/datasets--<org>--<name>/refs/<revision>      commit a branch/tag resolved to
    hub/<host>/datasets--<org>--<name>/<commit>[+<subdir>]/  one store (a CacheEntry)
    url/<hash of the URL>/ref                               manifest digest the URL served last
    url/<hash of the URL>/<manifest digest>/                 one store (a CacheEntry)

A store's entry holds ``files/`` (its verified files, laid out as in the store), ``locks/`` (one
lock file per file being downloaded) and ``ranges/`` (range mode's shard-index tails). Only
relabel-store writes here; it is safe to delete any of it when no job is running.

Nothing in the cache is reached through a link: every folder from the root down is checked
(``lstat``) before a file in it is read, written or locked, and files are opened with
``O_NOFOLLOW``; a link anywhere below the root is :class:`UnsafePathError` (the root itself is
the user's choice). What relabel-store creates is private: folders 0700, files 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from pathlib import Path
from urllib.parse import quote, urlsplit

from relabel_store.errors import UnsafePathError
from relabel_store.format._io import (
    atomic_write_bytes,
    open_regular,
    regular_file_stat,
    remove_abandoned_temps,
)

__all__ = [
    "CACHE_ENV",
    "FILES_DIR",
    "LOCKS_DIR",
    "RANGES_DIR",
    "CacheDir",
    "CacheEntry",
    "default_cache_dir",
    "private_folder",
]

CACHE_ENV = "RELABEL_STORE_CACHE"
FILES_DIR = "files"
LOCKS_DIR = "locks"
RANGES_DIR = "ranges"
#: Permissions of what relabel-store creates in the cache: the user's alone.
FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(root: Path, folder: Path, *, create: bool = True) -> bool:
    """Check that ``folder`` (inside the cache ``root``) and every folder between them is a real
    folder, not a link; create the missing ones (mode 0700) when ``create``. Returns whether
    ``folder`` exists. Raises :class:`UnsafePathError` on a link or a file on the way."""
    rel = folder.relative_to(root)
    if create:
        root.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            if not create:
                return False
            with contextlib.suppress(FileExistsError):
                os.mkdir(current, FOLDER_MODE)
            st = current.lstat()
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            raise UnsafePathError(
                f"refusing the cache folder {current}: it is {kind}. relabel-store never follows "
                "links in its cache (it would read or write files elsewhere). Delete it (the "
                "cache refills itself), or choose another cache with cache_dir= or "
                "RELABEL_STORE_CACHE."
            )
    return True


def default_cache_dir() -> Path:
    """``$RELABEL_STORE_CACHE``, else ``relabel-store/`` beside huggingface_hub's own cache
    (``$HF_HOME/relabel-store``, i.e. ``~/.cache/huggingface/relabel-store`` by default)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser().parent / "relabel-store"


class CacheEntry:
    """The cache folder of one store at one pinned version (a Hub commit or a manifest digest)."""

    def __init__(
        self, directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
    ) -> None:
        self.directory = Path(directory)
        #: The cache root: every folder from it down to a file is checked (never a link).
        self.root = Path(root) if root is not None else self.directory

    def folder(self, name: str | None = None, *, create: bool = True) -> Path:
        """The entry's folder ``name`` (``files``, ``locks``, ``ranges``; the entry itself when
        None), checked from the cache root down, and created (0700) when ``create``."""
        path = self.directory / name if name else self.directory
        private_folder(self.root, path, create=create)
        return path

    @property
    def files(self) -> Path:
        """The store's verified files, laid out as in the store."""
        return self.directory / FILES_DIR

    def lock_path(self, path: str) -> Path:
        """The lock file that serialises downloads of store file ``path`` (its folder checked
        and created)."""
        name = f"{hashlib.sha256(path.encode()).hexdigest()[:32]}.lock"
        return self.folder(LOCKS_DIR) / name

    def tail_path(self, sha256: str, length: int) -> Path:
        """Where range mode keeps the last ``length`` bytes of the file with that sha256."""
        return self.directory / _tail_name(sha256, length)

    def read_tail(self, sha256: str, length: int) -> bytes | None:
        """A kept tail, or None when there is none of that length (a link raises)."""
        if not private_folder(self.root, self.directory / RANGES_DIR, create=False):
            return None
        st = regular_file_stat(self.directory, _tail_name(sha256, length))
        if st is None or st.st_size != length:
            return None
        with open_regular(self.directory, _tail_name(sha256, length)) as f:
            return f.read()

    def write_tail(self, sha256: str, length: int, data: bytes) -> None:
        """Keep a tail (private, never written through a link)."""
        self.folder(RANGES_DIR)
        regular_file_stat(self.directory, _tail_name(sha256, length))
        atomic_write_bytes(self.tail_path(sha256, length), data, mode=FILE_MODE)

    def remove_abandoned_temps(self) -> None:
        """Delete temporary files that killed downloads left here (never a live one's)."""
        for sub in (FILES_DIR, RANGES_DIR):
            if private_folder(self.root, self.directory / sub, create=False):
                remove_abandoned_temps(self.directory / sub)

    def __repr__(self) -> str:
        return f"CacheEntry({str(self.directory)!r})"


def _tail_name(sha256: str, length: int) -> str:
    return f"{RANGES_DIR}/{sha256}.{length}.tail"


class CacheDir:
    """The cache root, and where each kind of remote store goes in it."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def _hub_repo(self, endpoint: str, repo_id: str) -> Path:
        host = re.sub(r"[^\w.-]", "_", urlsplit(endpoint).netloc or "hub")
        return self.root / "hub" / host / ("datasets--" + repo_id.replace("/", "--"))

    def hub_ref(self, endpoint: str, repo_id: str, revision: str) -> Path:
        """The file recording the commit a branch or tag resolved to (read when offline)."""
        return self._hub_repo(endpoint, repo_id) / "refs" / quote(revision, safe="")

    def hub_entry(
        self, endpoint: str, repo_id: str, commit: str, subdir: str | None = None
    ) -> CacheEntry:
        name = commit if not subdir else f"{commit}+{quote(subdir, safe='')}"
        return CacheEntry(self._hub_repo(endpoint, repo_id) / name, self.root)

    def _url_home(self, url: str) -> Path:
        return self.root / "url" / hashlib.sha256(url.encode()).hexdigest()[:24]

    def url_ref(self, url: str) -> Path:
        """The file recording the manifest digest ``url`` served last (read when offline)."""
        return self._url_home(url) / "ref"

    def url_entry(self, url: str, digest: str) -> CacheEntry:
        return CacheEntry(self._url_home(url) / digest, self.root)

    def record_url(self, url: str, digest: str) -> None:
        """Remember that ``url`` (credentials redacted: :func:`~relabel_store.errors.redact`)
        served the store with manifest ``digest`` (best effort)."""
        home = self._url_home(url)
        self.write_ref(home / "url.txt", url)
        self.write_ref(home / "ref", digest)

    def read_ref(self, path: Path) -> str | None:
        """The value of a ref file in the cache (a commit sha or digest); None when there is
        none. Read without following links."""
        if not private_folder(self.root, path.parent, create=False):
            return None
        try:
            with open_regular(path.parent, path.name) as f:
                return f.read().decode().strip() or None
        except FileNotFoundError:
            return None

    def write_ref(self, path: Path, value: str) -> None:
        """Record ``value`` in ``path``; best effort: a read-only shared cache still works (a
        link on the way is refused, never written through)."""
        private_folder(self.root, path.parent, create=False)  # raises on a link, first
        with contextlib.suppress(OSError):
            private_folder(self.root, path.parent)
            regular_file_stat(path.parent, path.name)
            atomic_write_bytes(path, value.encode(), mode=FILE_MODE)
