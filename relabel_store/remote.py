"""Opening stores that live elsewhere: what a name means, revision pinning, where bytes come from.

``open_source(name_or_path, revision)`` turns what a user typed into a :class:`Source`:

- an existing local directory: read in place (:class:`LocalSource`);
- ``hf://datasets/org/name[@rev][/subdir]``, ``org/name[@rev]`` (plus ``revision=``): a dataset
  repo on the Hugging Face Hub. A branch or tag is resolved to its 40-hex commit once, at open;
  every later read addresses that commit, so the store cannot change under a running job and
  cached files need no request at all;
- any other ``protocol://...`` URL (``file://``, ``s3://``, ``gs://``, ...): read with fsspec;
- a registered name (``imagenet-relabel``): looked up in :mod:`relabel_store.registry`.

Remote stores are read through a verified cache (``mode="cache"``, the default) or by ranged
requests (``mode="range"``), see :mod:`relabel_store.sources.cached` and ``.ranged``. The manifest
is always fetched first and parsed (paths checked) before anything is written to the cache.

Cache layout (default ``$HF_HOME/relabel-store``, or ``RELABEL_STORE_CACHE``, or ``cache_dir=``)::

    hub/<host>/datasets--<org>--<name>/refs/<revision>      commit a branch/tag resolved to
    hub/<host>/datasets--<org>--<name>/<commit>[+<subdir>]/  one store: files/ locks/ ranges/
    url/<hash of the URL>/ref                               digest the URL served last
    url/<hash of the URL>/<manifest digest>/                 one store: files/ locks/ ranges/

With ``HF_HUB_OFFLINE=1`` nothing is requested: branches resolve through ``refs/``, URLs through
``ref``, and only files already in the cache can be read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import quote, unquote, urljoin, urlsplit

from relabel_store._io import atomic_write_bytes
from relabel_store.errors import (
    CorruptDataError,
    IncompleteStoreError,
    RemoteError,
    StoreNotFoundError,
)
from relabel_store.format import MANIFEST_NAME
from relabel_store.manifest import Manifest, safe_relpath
from relabel_store.sources import Source
from relabel_store.sources.cached import FILES_DIR, Remote, ShardCacheSource
from relabel_store.sources.local import LocalSource
from relabel_store.sources.ranged import RangeSource

Mode = Literal["cache", "range"]
MODES = ("cache", "range")
CACHE_ENV = "RELABEL_STORE_CACHE"
HF_PREFIX = "hf://"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SPECIAL_REF = re.compile(r"^(refs/pr/\d+|refs/convert/[\w-]+)(/|$)")
_DOWNLOAD_CHUNK = 1 << 20


# -- what a name means ------------------------------------------------------------------------


@dataclass(frozen=True)
class HubTarget:
    """A store in a Hub dataset repo: ``revision`` as asked (None: main), ``subdir`` in the repo."""

    repo_id: str
    revision: str | None = None
    subdir: str | None = None

    @property
    def url(self) -> str:
        rev = f"@{quote(self.revision, safe='')}" if self.revision else ""
        return f"{HF_PREFIX}datasets/{self.repo_id}{rev}" + (
            f"/{self.subdir}" if self.subdir else ""
        )


@dataclass(frozen=True)
class UrlTarget:
    """A store at an fsspec URL."""

    url: str


@dataclass(frozen=True)
class LocalTarget:
    path: Path


Target = HubTarget | UrlTarget | LocalTarget


def parse_hf_url(url: str, revision: str | None = None) -> HubTarget:
    """``hf://datasets/org/name[@rev][/subdir]`` -> :class:`HubTarget` (no request is made)."""
    if not url.startswith(HF_PREFIX):
        raise ValueError(f"not an hf:// URL: {url!r}")
    rest = url[len(HF_PREFIX) :].strip("/")
    if not rest.startswith("datasets/"):
        raise ValueError(
            f"{url!r}: stores live in dataset repos; write hf://datasets/<org>/<name>[@revision]"
        )
    return _parse_repo_path(rest[len("datasets/") :], revision, url)


def _parse_repo_path(rest: str, revision: str | None, original: str) -> HubTarget:
    parts = rest.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{original!r}: expected <org>/<name> after hf://datasets/")
    org, name = parts[0], parts[1]
    tail = parts[2] if len(parts) > 2 else ""
    rev = None
    if "@" in name:
        name, rev_and_more = name.split("@", 1)
        rev_and_more = f"{rev_and_more}/{tail}" if tail else rev_and_more
        special = _SPECIAL_REF.match(rev_and_more)
        if special:  # refs/pr/1 may be written unencoded, as huggingface_hub accepts it
            rev, tail = special.group(1), rev_and_more[special.end() :]
        else:
            rev, _, tail = rev_and_more.partition("/")
            rev = unquote(rev)
        if not rev:
            raise ValueError(f"{original!r}: empty revision after '@'")
    repo_id = f"{org}/{name}"
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{original!r}: {repo_id!r} is not a valid Hub repo id")
    if rev is not None and revision is not None and rev != revision:
        raise ValueError(f"{original!r} names revision {rev!r} but revision={revision!r} was given")
    subdir = safe_relpath(tail.strip("/")) if tail.strip("/") else None
    return HubTarget(repo_id, revision if revision is not None else rev, subdir)


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text.split("@", 1)[0]))


@dataclass(frozen=True)
class Resolved:
    """A parsed location, plus what a registry entry pins (digest) and the name it came from."""

    target: Target
    digest: str | None = None
    name: str | None = None
    hint: str = ""  # how to make a registered store yourself, for when it cannot be reached


def resolve(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Resolved:
    """What ``name_or_path`` refers to. Order: an existing local path, ``hf://``, any other URL,
    ``org/name[@rev]``, a registered name. No request is made."""
    if isinstance(name_or_path, os.PathLike) or Path(str(name_or_path)).exists():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} applies to Hub stores only; {name_or_path} is a local path"
            )
        return Resolved(LocalTarget(Path(name_or_path)))
    text = str(name_or_path)
    if text.startswith(HF_PREFIX):
        return Resolved(parse_hf_url(text, revision))
    if "://" in text:
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} applies to Hub stores only; an fsspec URL has no revisions"
            )
        return Resolved(UrlTarget(text.rstrip("/")))
    if "/" in text:
        if looks_like_repo_id(text):
            return Resolved(_parse_repo_path(text, revision, text))
        raise StoreNotFoundError(
            f"no relabel-store store at {text}: no such directory, and it is not a Hub repo id "
            "(org/name), an hf:// URL or an fsspec URL."
        )
    from relabel_store import registry

    entry = registry.lookup(text)  # raises, listing the known names
    if not entry.published:
        raise entry.unpublished_error()  # at once, without a request
    if entry.path is not None:
        target: Target = LocalTarget(Path(entry.path))
    elif entry.url is not None:
        target = UrlTarget(entry.url)
    else:
        assert entry.repo_id is not None
        target = HubTarget(entry.repo_id, revision or entry.revision, entry.subdir)
    return Resolved(target, digest=entry.digest, name=text, hint=entry.how_to_make())


# -- cache locations --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$RELABEL_STORE_CACHE``, else ``relabel-store/`` beside huggingface_hub's own cache
    (``$HF_HOME/relabel-store``, i.e. ``~/.cache/huggingface/relabel-store`` by default)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser().parent / "relabel-store"


def is_offline() -> bool:
    """huggingface_hub's offline switch (``HF_HUB_OFFLINE=1``), which relabel-store honours for
    every remote, not just the Hub."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _offline_error(what: str) -> RemoteError:
    return RemoteError(
        f"{what} is not in the relabel-store cache, and HF_HUB_OFFLINE=1 forbids downloading it. "
        "Open the store once online (or run `relabel-store pull`) to fill the cache, or unset "
        "HF_HUB_OFFLINE."
    )


def _hub_repo_dir(cache: Path, endpoint: str, repo_id: str) -> Path:
    host = urlsplit(endpoint).netloc or "hub"
    host = re.sub(r"[^\w.-]", "_", host)
    return cache / "hub" / host / ("datasets--" + repo_id.replace("/", "--"))


def _hub_entry_dir(repo_dir: Path, commit: str, subdir: str | None) -> Path:
    return repo_dir / (commit if not subdir else f"{commit}+{quote(subdir, safe='')}")


def _url_dir(cache: Path, url: str) -> Path:
    return cache / "url" / hashlib.sha256(url.encode()).hexdigest()[:24]


# -- the Hub ----------------------------------------------------------------------------------


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub/httpx errors into relabel-store errors that say what to do."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except OfflineModeIsEnabled:
        raise _offline_error(what) from None
    except GatedRepoError as exc:
        raise RemoteError(
            f"{what}: the repo is gated; accept its conditions on the Hub and log in "
            f"(`hf auth login` or HF_TOKEN). ({_first_line(exc)})"
        ) from None
    except RepositoryNotFoundError as exc:
        raise StoreNotFoundError(
            f"{what}: no such dataset repo, or it is private and your token cannot read it. Check "
            f"the name, and log in with `hf auth login` or set HF_TOKEN. ({_first_line(exc)})"
        ) from None
    except RevisionNotFoundError as exc:
        raise StoreNotFoundError(
            f"{what}: no such revision (branch, tag or commit). ({_first_line(exc)})"
        ) from None
    except HfHubHTTPError as exc:
        raise RemoteError(f"{what}: {_first_line(exc)}") from None
    except (httpx2.HTTPError, httpx2.StreamError) as exc:
        raise RemoteError(f"{what}: transfer failed ({type(exc).__name__}: {exc})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def resolve_hub_revision(
    repo_id: str, revision: str | None, *, endpoint: str | None = None, token: str | None = None
) -> str:
    """The 40-hex commit a branch, tag or commit prefix points to (one request)."""
    from huggingface_hub import HfApi

    rev = revision or "main"
    if _SHA.match(rev):
        return rev
    api = HfApi(endpoint=_endpoint(endpoint), token=token)
    with hub_errors(f"hf://datasets/{repo_id}@{rev}"):
        sha = api.repo_info(repo_id, repo_type="dataset", revision=rev).sha
    if not sha or not _SHA.match(sha):
        raise RemoteError(f"hf://datasets/{repo_id}@{rev}: the Hub returned no commit sha")
    return sha


class _HubState:
    """Per-process connection state of a HubRemote (rebuilt after fork/unpickle)."""

    def __init__(self, token: str | None) -> None:
        from huggingface_hub.utils import build_hf_headers

        from relabel_store.format import software_version

        self.pid = os.getpid()
        self.headers = build_hf_headers(
            token=token, library_name="relabel-store", library_version=software_version()
        )
        # path -> where the Hub redirected a ranged read of that (LFS/Xet) file: a CDN or signed
        # storage URL. Later ranges go there directly: one request instead of two.
        self.redirects: dict[str, str] = {}
        self.lock = threading.Lock()


class HubRemote(Remote):
    """A store in a Hub dataset repo at a pinned commit, read with huggingface_hub's HTTP client
    (its session, auth headers, retries, offline switch and error types)."""

    def __init__(
        self,
        repo_id: str,
        commit: str,
        subdir: str | None = None,
        *,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        if not _SHA.match(commit):
            raise ValueError(f"HubRemote needs a 40-hex commit sha, got {commit!r}")
        self.repo_id = repo_id
        self.commit = commit
        self.subdir = safe_relpath(subdir) if subdir else None
        self.endpoint = _endpoint(endpoint)
        self.token = token
        self.location = f"{HF_PREFIX}datasets/{repo_id}@{commit}" + (
            f"/{self.subdir}" if self.subdir else ""
        )
        self._state: _HubState | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_state"] = None
        return state

    def _st(self) -> _HubState:
        st = self._state
        if st is None or st.pid != os.getpid():
            st = self._state = _HubState(self.token)
        return st

    def url(self, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(
            self.repo_id,
            safe_relpath(path),
            subfolder=self.subdir,
            repo_type="dataset",
            revision=self.commit,
            endpoint=self.endpoint,
        )

    def fetch(self, path: str) -> bytes | None:
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import hf_raise_for_status, http_backoff

        with hub_errors(f"{self.location}/{path}"):
            try:
                r = http_backoff("GET", self.url(path), headers=self._st().headers)
                hf_raise_for_status(r)
            except EntryNotFoundError:
                return None
            return r.content

    def download(self, path: str, out: BinaryIO) -> None:
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

        where = f"{self.location}/{path}"
        with hub_errors(where):
            try:
                with http_stream_backoff("GET", self.url(path), headers=self._st().headers) as r:
                    if r.status_code >= 400:
                        r.read()
                    hf_raise_for_status(r)
                    for chunk in r.iter_bytes(_DOWNLOAD_CHUNK):
                        out.write(chunk)
            except EntryNotFoundError:
                raise CorruptDataError(
                    f"{where}: the manifest lists this file but the repo has no such file at "
                    "this commit; the upload is incomplete or damaged."
                ) from None

    def read_range(self, path: str, start: int, stop: int) -> bytes:
        from huggingface_hub.utils import hf_raise_for_status, http_backoff

        st = self._st()
        rng = {"Range": f"bytes={start}-{stop - 1}"}
        where = f"{self.location}/{path}"
        with hub_errors(where):
            r = None
            target = st.redirects.get(path)
            if target is not None:
                r = http_backoff("GET", target, headers=rng, follow_redirects=False)
                if r.status_code in (401, 403, 404, 410):  # a signed URL expired: ask the Hub again
                    st.redirects.pop(path, None)
                    r = None
            if r is None:
                url = self.url(path)
                r = http_backoff("GET", url, headers={**st.headers, **rng}, follow_redirects=False)
                for _ in range(5):
                    if not r.has_redirect_location:
                        break
                    target = urljoin(str(r.url), r.headers["Location"])
                    if _origin(target) == _origin(url):  # same host: keep the token
                        r = http_backoff(
                            "GET", target, headers={**st.headers, **rng}, follow_redirects=False
                        )
                    else:  # CDN / signed storage URL: never send the token there
                        st.redirects[path] = target
                        r = http_backoff("GET", target, headers=rng, follow_redirects=False)
            if r.status_code >= 400:
                hf_raise_for_status(r)
        return _range_body(
            r.status_code, r.headers.get("Content-Range"), r.content, start, stop, where
        )

    def close(self) -> None:
        self._state = None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _range_body(
    status: int, content_range: str | None, body: bytes, start: int, stop: int, where: str
) -> bytes:
    if status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/", content_range or "")
        if m is None or int(m.group(1)) != start:
            raise CorruptDataError(
                f"{where}: asked for bytes {start}-{stop - 1}, the server answered "
                f"Content-Range {content_range!r}"
            )
        return body
    if status == 200:  # the server ignored Range and sent the whole file
        return body[start:stop]
    raise RemoteError(f"{where}: unexpected HTTP status {status} for a ranged read")


# -- fsspec URLs ------------------------------------------------------------------------------


class FsspecRemote(Remote):
    """A store at any fsspec URL (``file://``, ``s3://``, ``gs://``, ``memory://``, ...)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.location = self.url
        self._fs: tuple[int, Any, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    def _filesystem(self) -> tuple[Any, str]:
        cur = self._fs
        if cur is None or cur[0] != os.getpid():
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            cur = self._fs = (os.getpid(), fs, root.rstrip("/"))
        return cur[1], cur[2]

    def _path(self, path: str) -> tuple[Any, str]:
        fs, root = self._filesystem()
        return fs, f"{root}/{safe_relpath(path)}"

    def _check_online(self, path: str) -> None:
        if is_offline():
            raise _offline_error(f"{self.location}/{path}")

    def fetch(self, path: str) -> bytes | None:
        self._check_online(path)
        fs, p = self._path(path)
        try:
            return fs.cat_file(p)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise RemoteError(f"{self.location}/{path}: {exc}") from None

    def download(self, path: str, out: BinaryIO) -> None:
        self._check_online(path)
        fs, p = self._path(path)
        try:
            with fs.open(p, "rb", block_size=_DOWNLOAD_CHUNK) as f:
                while chunk := f.read(_DOWNLOAD_CHUNK):
                    out.write(chunk)
        except FileNotFoundError:
            raise CorruptDataError(
                f"{self.location}/{path}: the manifest lists this file but it does not exist; "
                "the upload is incomplete or damaged."
            ) from None
        except OSError as exc:
            raise RemoteError(f"{self.location}/{path}: {exc}") from None

    def read_range(self, path: str, start: int, stop: int) -> bytes:
        self._check_online(path)
        fs, p = self._path(path)
        try:
            return bytes(fs.cat_file(p, start=start, end=stop))
        except OSError as exc:
            raise RemoteError(f"{self.location}/{path}: {exc}") from None

    def close(self) -> None:
        self._fs = None


# -- opening ----------------------------------------------------------------------------------


def open_source(
    name_or_path: str | os.PathLike[str],
    revision: str | None = None,
    *,
    mode: Mode = "cache",
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    storage_options: dict[str, Any] | None = None,
    endpoint: str | None = None,
) -> Source:
    """The :class:`Source` for a local path, Hub repo, fsspec URL or registered name."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    resolved = resolve(name_or_path, revision)
    target = resolved.target
    if isinstance(target, LocalTarget):
        if not target.path.is_dir():
            raise StoreNotFoundError(
                f"no relabel-store store at {target.path}: not a directory. Check the path, or "
                "create one with `relabel-store generate`."
            )
        return LocalSource(target.path)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cls = RangeSource if mode == "range" else ShardCacheSource
    try:
        if isinstance(target, HubTarget):
            return open_hub(
                target, cache=cache, cls=cls, token=token, endpoint=endpoint, digest=resolved.digest
            )
        return open_url(
            target.url,
            cache=cache,
            cls=cls,
            storage_options=storage_options,
            digest=resolved.digest,
        )
    except (RemoteError, StoreNotFoundError) as exc:
        if not resolved.hint:
            raise
        raise type(exc)(f"{exc}\n{resolved.hint}") from None


def open_hub(
    target: HubTarget,
    *,
    cache: Path,
    cls: type[ShardCacheSource] = ShardCacheSource,
    token: str | None = None,
    endpoint: str | None = None,
    digest: str | None = None,
) -> ShardCacheSource:
    endpoint = _endpoint(endpoint)
    repo_dir = _hub_repo_dir(cache, endpoint, target.repo_id)
    rev = target.revision or "main"
    ref_file = repo_dir / "refs" / quote(rev, safe="")
    if _SHA.match(rev):
        commit = rev
    elif is_offline():
        try:
            commit = ref_file.read_text().strip()
        except FileNotFoundError:
            raise _offline_error(f"{target.url} (revision {rev!r})") from None
    else:
        commit = resolve_hub_revision(target.repo_id, rev, endpoint=endpoint, token=token)
    remote = HubRemote(target.repo_id, commit, target.subdir, endpoint=endpoint, token=token)
    entry = _hub_entry_dir(repo_dir, commit, target.subdir)
    raw = _manifest_bytes(remote, entry)
    source = _make_source(cls, remote, entry, raw, digest)
    if commit != rev:
        with contextlib.suppress(OSError):  # best effort: a read-only shared cache still works
            ref_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(ref_file, commit.encode())
    return source


def open_url(
    url: str,
    *,
    cache: Path,
    cls: type[ShardCacheSource] = ShardCacheSource,
    storage_options: dict[str, Any] | None = None,
    digest: str | None = None,
) -> ShardCacheSource:
    remote = FsspecRemote(url, storage_options)
    url_dir = _url_dir(cache, remote.url)
    ref_file = url_dir / "ref"
    if is_offline():
        try:
            current = ref_file.read_text().strip()
        except FileNotFoundError:
            raise _offline_error(remote.url) from None
        raw = _manifest_bytes(remote, url_dir / current)
    else:
        raw = _fetch_manifest(remote)
        current = Manifest.from_bytes(raw, where=f"{remote.url}/{MANIFEST_NAME}").digest
    source = _make_source(cls, remote, url_dir / current, raw, digest)
    with contextlib.suppress(OSError):  # best effort: a read-only shared cache still works
        atomic_write_bytes(url_dir / "url.txt", remote.url.encode())
        atomic_write_bytes(ref_file, current.encode())
    return source


def _manifest_bytes(remote: Remote, entry: Path) -> bytes:
    """The manifest from the cache entry if there (no request), else from the remote."""
    cached = entry / FILES_DIR / MANIFEST_NAME
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    if is_offline():
        raise _offline_error(remote.location)
    return _fetch_manifest(remote)


def _fetch_manifest(remote: Remote) -> bytes:
    raw = remote.fetch(MANIFEST_NAME)
    if raw is not None:
        return raw
    if remote.fetch("zarr.json") is not None:
        raise IncompleteStoreError(
            f"{remote.location} has a store without {MANIFEST_NAME}: its upload did not finish "
            "(`relabel-store push` uploads the manifest last) or it was never finalized. Re-run "
            "the push from the finalized local store."
        )
    raise StoreNotFoundError(
        f"no relabel-store store at {remote.location}: it has neither {MANIFEST_NAME} nor "
        "zarr.json. Check the location (a store in a subfolder of a repo is "
        "hf://datasets/<org>/<name>@<revision>/<subfolder>)."
    )


def _make_source(
    cls: type[ShardCacheSource], remote: Remote, entry: Path, raw: bytes, digest: str | None
) -> ShardCacheSource:
    if digest is not None:
        # Parse (paths checked) before comparing, and before anything is written.
        found = Manifest.from_bytes(raw, where=f"{remote.location}/{MANIFEST_NAME}").digest
        if found != digest:
            raise CorruptDataError(
                f"{remote.location}: manifest digest {found} is not the pinned digest {digest}; "
                "the registry entry and the published store disagree."
            )
    return cls(remote, entry, raw)
