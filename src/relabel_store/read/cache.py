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
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

from relabel_store.format._io import atomic_write_bytes, regular_file_stat, remove_abandoned_temps

__all__ = [
    "CACHE_ENV",
    "FILES_DIR",
    "LOCKS_DIR",
    "RANGES_DIR",
    "CacheDir",
    "CacheEntry",
    "default_cache_dir",
    "read_ref",
    "write_ref",
]

CACHE_ENV = "RELABEL_STORE_CACHE"
FILES_DIR = "files"
LOCKS_DIR = "locks"
RANGES_DIR = "ranges"


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

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def files(self) -> Path:
        """The store's verified files, laid out as in the store."""
        return self.directory / FILES_DIR

    def lock_path(self, path: str) -> Path:
        """The lock file that serialises downloads of store file ``path``."""
        return self.directory / LOCKS_DIR / f"{hashlib.sha256(path.encode()).hexdigest()[:32]}.lock"

    def tail_path(self, sha256: str, length: int) -> Path:
        """Where range mode keeps the last ``length`` bytes of the file with that sha256."""
        return self.directory / _tail_name(sha256, length)

    def read_tail(self, sha256: str, length: int) -> bytes | None:
        """A kept tail, or None when there is none of that length (a link raises)."""
        st = regular_file_stat(self.directory, _tail_name(sha256, length))
        if st is None or st.st_size != length:
            return None
        return self.tail_path(sha256, length).read_bytes()

    def remove_abandoned_temps(self) -> None:
        """Delete temporary files that killed downloads left here (never a live one's)."""
        for sub in (FILES_DIR, RANGES_DIR):
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
        return CacheEntry(self._hub_repo(endpoint, repo_id) / name)

    def _url_home(self, url: str) -> Path:
        return self.root / "url" / hashlib.sha256(url.encode()).hexdigest()[:24]

    def url_ref(self, url: str) -> Path:
        """The file recording the manifest digest ``url`` served last (read when offline)."""
        return self._url_home(url) / "ref"

    def url_entry(self, url: str, digest: str) -> CacheEntry:
        return CacheEntry(self._url_home(url) / digest)

    def record_url(self, url: str, digest: str) -> None:
        """Remember that ``url`` served the store with manifest ``digest`` (best effort)."""
        home = self._url_home(url)
        write_ref(home / "url.txt", url)
        write_ref(home / "ref", digest)


def read_ref(path: Path) -> str | None:
    """The value of a ref file (a commit sha or digest); None when there is none."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_ref(path: Path, value: str) -> None:
    """Record ``value`` in ``path``; best effort: a read-only shared cache still works."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, value.encode())
