"""The Hugging Face Hub backend: a dataset repo at a pinned commit, read with huggingface_hub.

Everything that talks to the Hub for reading lives here: which endpoint, how a branch or tag is
pinned to its commit (:func:`resolve_hub_revision`), how the client's errors become
relabel-store errors (:func:`hub_errors`), and byte access (:class:`HubRemote`) through
huggingface_hub's HTTP client (its session, auth headers, retries, offline switch).

The token goes to the Hub only: LFS/Xet files are served from a CDN or signed storage URL the
Hub redirects to, and those requests never carry it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

from relabel_store.errors import (
    ConfigurationError,
    CorruptDataError,
    RemoteError,
    StoreNotFoundError,
)
from relabel_store.format.manifest import safe_relpath
from relabel_store.read.hub_names import HF_PREFIX, is_commit_sha
from relabel_store.read.sources import (
    Remote,
    network_retries,
    network_timeout,
    offline_error,
)

__all__ = [
    "RESUME_DELAYS_S",
    "HubRemote",
    "check_content_range",
    "endpoint_url",
    "hub_errors",
    "resolve_hub_revision",
]

#: Waits before resuming a download whose connection dropped mid-file. huggingface_hub retries
#: failures before a response starts; a drop inside the body is resumed here, by a Range request
#: from the last byte received.
RESUME_DELAYS_S = (0.5, 1.0, 2.0)
_MAX_REDIRECTS = 5
_RERUN = "re-running the same command resumes where it stopped"


def endpoint_url(endpoint: str | None = None) -> str:
    """The Hub endpoint: ``endpoint``, else huggingface_hub's (``HF_ENDPOINT``)."""
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def _transient_errors() -> tuple[type[Exception], ...]:
    """The transfer failures worth retrying (huggingface_hub retries the same ones)."""
    import httpx2

    return (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub/httpx2 errors into relabel-store errors that say what to do."""
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
        raise offline_error(what) from None
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
    except httpx2.TimeoutException as exc:
        raise RemoteError(f"{what}: {timeout_reason(exc)}; {_RERUN}.") from None
    except (httpx2.HTTPError, httpx2.StreamError) as exc:
        raise RemoteError(
            f"{what}: transfer from {_host_of(exc)} failed ({type(exc).__name__}: {exc}); {_RERUN}."
        ) from None


def timeout_reason(exc: BaseException) -> str:
    """Why a request timed out, naming the host, the timeout and how to change it."""
    limit = network_timeout()
    kind = "connect" if "Connect" in type(exc).__name__ else "read"
    return (
        f"{_host_of(exc)} did not answer within {limit:g} s ({kind} timeout, "
        f"{network_retries() + 1} tries); the network or the server stalled. Set "
        "RELABEL_STORE_TIMEOUT (seconds) higher for a slow link"
    )


def _host_of(exc: BaseException) -> str:
    """The host a failed httpx2 request went to ('the server' when unknown)."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx2 raises RuntimeError when no request is set
        return "the server"
    return f"{url.host}:{url.port}" if url.port else str(url.host)


def request_limits() -> dict[str, Any]:
    """The timeout and retry arguments of huggingface_hub's http_backoff for every request."""
    import httpx2

    return {
        "timeout": httpx2.Timeout(network_timeout()),
        "max_retries": network_retries(),
        "base_wait_time": 0.5,
        "max_wait_time": 4,
    }


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def resolve_hub_revision(
    repo_id: str, revision: str | None, *, endpoint: str | None = None, token: str | None = None
) -> str:
    """The 40-hex commit a branch, tag or commit prefix points to (one request; none for a
    full commit sha)."""
    from huggingface_hub import HfApi

    rev = revision or "main"
    if is_commit_sha(rev):
        return rev
    api = HfApi(endpoint=endpoint_url(endpoint), token=token)
    with hub_errors(f"{HF_PREFIX}datasets/{repo_id}@{rev}"):
        sha = api.repo_info(
            repo_id, repo_type="dataset", revision=rev, timeout=network_timeout()
        ).sha
    if not sha or not is_commit_sha(sha):
        raise RemoteError(f"{HF_PREFIX}datasets/{repo_id}@{rev}: the Hub returned no commit sha")
    return sha


def check_content_range(
    status: int, content_range: str | None, start: int, stop: int | None, where: str
) -> None:
    """Refuse a 206 answer whose ``Content-Range`` is not the range asked for (``start`` to
    ``stop - 1``, or to the end when ``stop`` is None): its bytes belong elsewhere in the file."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (content_range or "").strip())
    ok = (
        status == 206
        and m is not None
        and int(m.group(1)) == start
        and (stop is None or int(m.group(2)) == stop - 1)
    )
    if not ok:
        asked = f"{start}-{'' if stop is None else stop - 1}"
        raise CorruptDataError(
            f"{where}: asked for bytes {asked}, the server answered HTTP {status} with "
            f"Content-Range {content_range!r}; refusing bytes from another part of the file."
        )


class _HubState:
    """Per-process connection state of a HubRemote (rebuilt after fork/unpickle)."""

    def __init__(self, token: str | None) -> None:
        from huggingface_hub.utils import build_hf_headers

        from relabel_store.format.metadata import software_version

        self.pid = os.getpid()
        self.headers = build_hf_headers(
            token=token, library_name="relabel-store", library_version=software_version()
        )
        # path -> where the Hub redirected a ranged read of that (LFS/Xet) file: a CDN or signed
        # storage URL. Later ranges go there directly: one request instead of two.
        self.redirects: dict[str, str] = {}


class HubRemote(Remote):
    """A store in a Hub dataset repo at a pinned commit."""

    def __init__(
        self,
        repo_id: str,
        commit: str,
        subdir: str | None = None,
        *,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        if not is_commit_sha(commit):
            raise ConfigurationError(f"HubRemote needs a 40-hex commit sha, got {commit!r}")
        self.repo_id = repo_id
        self.commit = commit
        self.subdir = safe_relpath(subdir) if subdir else None
        self.endpoint = endpoint_url(endpoint)
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
        """The ``/resolve/`` URL of store file ``path`` at the pinned commit."""
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
                r = http_backoff(
                    "GET", self.url(path), headers=self._st().headers, **request_limits()
                )
                hf_raise_for_status(r)
            except EntryNotFoundError:
                return None
            return r.content

    def download(self, path: str, out: BinaryIO, max_bytes: int) -> None:
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

        where = f"{self.location}/{path}"
        url = self.url(path)
        import httpx2

        written = 0
        timeouts = 0
        delays = iter(RESUME_DELAYS_S)
        with hub_errors(where):
            while True:
                headers = dict(self._st().headers)
                if written:
                    headers["Range"] = f"bytes={written}-"
                try:
                    # No retry on exceptions inside huggingface_hub's loop: one raised while we
                    # read the body would be thrown into its generator, which would retry and
                    # break the context manager. Transient failures are retried below, resuming.
                    with http_stream_backoff(
                        "GET", url, headers=headers, retry_on_exceptions=(), **request_limits()
                    ) as r:
                        if r.status_code >= 400:
                            r.read()
                        hf_raise_for_status(r)
                        if written and r.status_code == 200:  # Range ignored: start over
                            out.seek(0)
                            out.truncate()
                            written = 0
                        elif written:
                            check_content_range(
                                r.status_code, r.headers.get("Content-Range"), written, None, where
                            )
                        for chunk in r.iter_bytes():  # as received: a resume loses nothing
                            chunk = chunk[: max_bytes - written]
                            out.write(chunk)
                            written += len(chunk)
                            if written >= max_bytes:
                                break
                    return
                except EntryNotFoundError:
                    raise CorruptDataError(
                        f"{where}: the manifest lists this file but the repo has no such file at "
                        "this commit; the upload is incomplete or damaged."
                    ) from None
                except _transient_errors() as exc:
                    delay = next(delays, None)
                    if isinstance(exc, httpx2.TimeoutException):
                        timeouts += 1  # a stall costs a whole timeout a try: bounded apart
                        if timeouts > network_retries():
                            raise RemoteError(
                                f"{where}: {timeout_reason(exc)}; {_RERUN}."
                            ) from None
                    if delay is None:
                        raise RemoteError(
                            f"{where}: the connection to {_host_of(exc)} kept dropping ({len(RESUME_DELAYS_S) + 1} "
                            f"tries, {written} bytes received; {type(exc).__name__}: {exc}). "
                            f"Files already downloaded and verified stay in the cache: {_RERUN}."
                        ) from None
                    time.sleep(delay)

    def read_range(self, path: str, start: int, stop: int) -> bytes:
        from huggingface_hub.utils import hf_raise_for_status, http_backoff

        st = self._st()
        rng = {"Range": f"bytes={start}-{stop - 1}"}
        where = f"{self.location}/{path}"
        with hub_errors(where):
            r = None
            target = st.redirects.get(path)
            if target is not None:
                r = http_backoff(
                    "GET", target, headers=rng, follow_redirects=False, **request_limits()
                )
                if r.status_code in (401, 403, 404, 410):  # a signed URL expired: ask the Hub again
                    st.redirects.pop(path, None)
                    r = None
            if r is None:
                url = self.url(path)
                r = http_backoff(
                    "GET",
                    url,
                    headers={**st.headers, **rng},
                    follow_redirects=False,
                    **request_limits(),
                )
                for _ in range(_MAX_REDIRECTS):
                    if not r.has_redirect_location:
                        break
                    target = urljoin(str(r.url), r.headers["Location"])
                    if _origin(target) == _origin(url):  # same host: keep the token
                        r = http_backoff(
                            "GET",
                            target,
                            headers={**st.headers, **rng},
                            follow_redirects=False,
                            **request_limits(),
                        )
                    else:  # CDN / signed storage URL: never send the token there
                        st.redirects[path] = target
                        r = http_backoff(
                            "GET", target, headers=rng, follow_redirects=False, **request_limits()
                        )
            if r.status_code >= 400:
                hf_raise_for_status(r)
        if r.status_code == 200:  # the server ignored Range and sent the whole file
            return r.content[start:stop]
        check_content_range(r.status_code, r.headers.get("Content-Range"), start, stop, where)
        return r.content

    def close(self) -> None:
        self._state = None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()
