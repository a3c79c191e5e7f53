"""An in-process fake of the Hugging Face Hub HTTP API, for tests.

``FakeHub`` runs two real HTTP/1.1 servers on 127.0.0.1 (port 0), each in a thread:

* the **hub** (``hub.url``): the ``/api/...`` JSON endpoints, ``/{type}s/{repo}/resolve/{rev}/{path}``
  downloads and the git-LFS batch endpoint;
* the **cdn** (``hub.cdn_url``): where LFS objects are uploaded (basic and multipart transfer) and
  downloaded from.  It is a separate *origin* on purpose: the real Hub answers ``/resolve`` of an LFS
  file with a 302 to another host, and huggingface_hub treats a cross-origin redirect differently
  (it stops the HEAD there, reads ``X-Linked-Etag``/``X-Linked-Size`` from the 302, and drops the
  ``Authorization`` header for the download).

It speaks the subset of the API that huggingface_hub 2.4 uses for dataset (and model) repos:
create/delete repo, repo info, tree (recursive, paginated), paths-info, refs, commits, branches,
tags, settings, preupload, LFS batch + upload + verify, NDJSON commit, validate-yaml, whoami, and
file downloads with HEAD, ``Range`` (206) and redirects.  Xet is never advertised: no ``X-Xet-*``
headers, no ``xetHash`` in listings, and the batch endpoint only offers ``basic``/``multipart``.
The client still chooses Xet for uploads on its own whenever ``hf_xet`` is importable, so the
client side must be switched off too: see :func:`fake_hub_env`.

Repos live in memory with git-like history: every commit has a 40-hex sha and a full file map,
branches/tags map to commit shas, regular files have git blob ids, LFS files have sha256 oids.

Test hooks: a request log (``hub.requests``, ``hub.count()``, ``hub.bytes_sent()``,
``hub.reset_log()``), ``hub.corrupt()`` (serve different bytes than stored), ``hub.add_fault()`` /
``hub.fail_after()`` / ``hub.drop_uploads()`` (error statuses, aborted connections, silently lost
LFS uploads), direct seeding with ``hub.commit_files()`` and a clean ``hub.stop()``.

Typical use::

    with FakeHub() as hub:
        fake_hub_env(monkeypatch, tmp_path, hub)
        api = HfApi(endpoint=hub.url, token=TEST_TOKEN)
        api.create_repo("org/name", repo_type="dataset")
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import importlib
import itertools
import json
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = [
    "HTTPX2_DATA_DEPRECATION_FILTER",
    "TEST_TOKEN",
    "FakeHub",
    "FakeHubEnv",
    "Fault",
    "RequestRecord",
    "fake_hub_env",
    "iter_fake_hub",
    "set_offline",
]

TEST_TOKEN = "hf_fake_test_token"

# huggingface_hub 2.4 uploads LFS content with `http_backoff("PUT", url, data=<file object>)`
# (lfs.py `_upload_single_part` / `_upload_parts_iteratively`), and httpx2 deprecates raw bytes in
# `data=` with a DeprecationWarning ("Use 'content=<...>' ...", httpx2/_content.py
# `encode_request`).  The warning comes from the client library, not from our code, so under
# `filterwarnings = error` it has to be filtered narrowly wherever the legacy (non-Xet) LFS upload
# path runs: `pytest.mark.filterwarnings(HTTPX2_DATA_DEPRECATION_FILTER)` or the same string in
# pyproject's `filterwarnings` list.
HTTPX2_DATA_DEPRECATION_FILTER = (
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"
)

_MIB = 1024 * 1024
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
_REPO_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_URL_PREFIX = {"dataset": "datasets/", "model": "", "space": "spaces/"}

# A default `.gitattributes` in the spirit of the one the Hub commits into every new repo: the
# patterns that make the preupload endpoint answer "lfs".
_DEFAULT_LFS_PATTERNS = [
    "*.7z",
    "*.arrow",
    "*.avro",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lz4",
    "*.mds",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
    "*.mp3",
    "*.ogg",
    "*.wav",
    "*.flac",
    "*.bmp",
    "*.gif",
    "*.png",
    "*.tiff",
    "*.jpg",
    "*.jpeg",
    "*.webp",
    "*.mp4",
    "*.webm",
]
DEFAULT_GITATTRIBUTES = "".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _DEFAULT_LFS_PATTERNS
)


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now_iso(dt: datetime | None = None) -> str:
    dt = dt or datetime.now(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------
# In-memory git-like model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """One file version. `key` addresses the bytes in `FakeHub._objects`."""

    size: int
    git_oid: str  # git blob id (of the content, or of the LFS pointer for LFS files)
    lfs_sha256: str | None = None
    pointer_size: int | None = None

    @property
    def key(self) -> str:
        return f"lfs:{self.lfs_sha256}" if self.lfs_sha256 else f"git:{self.git_oid}"

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.git_oid


@dataclass
class _Commit:
    sha: str
    parent: str | None
    files: dict[str, _Blob]
    title: str
    message: str
    date: datetime


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)  # PR number -> head sha (ref refs/pr/N)
    gated: Any = False

    def resolve(self, revision: str) -> str | None:
        """Branch, tag, refs/pr/N, full sha or unambiguous sha prefix (>= 7) -> commit sha."""
        if revision in self.branches:
            return self.branches[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.branches:
            return self.branches[revision[11:]]
        if revision in self.tags:
            return self.tags[revision]
        if revision.startswith("refs/tags/") and revision[10:] in self.tags:
            return self.tags[revision[10:]]
        m = re.fullmatch(r"refs/pr/(\d+)", revision)
        if m and int(m.group(1)) in self.prs:
            return self.prs[int(m.group(1))]
        if _COMMIT_RE.match(revision):
            if revision in self.commits:
                return revision
            hits = [sha for sha in self.commits if sha.startswith(revision)]
            if len(hits) == 1:
                return hits[0]
        return None

    def history(self, sha: str) -> Iterator[_Commit]:
        cur: str | None = sha
        while cur is not None:
            commit = self.commits[cur]
            yield commit
            cur = commit.parent


# --------------------------------------------------------------------------------------------------
# Request log and fault injection
# --------------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the fake saw it. `bytes_sent` counts response *body* bytes put on the wire."""

    server: str  # "hub" or "cdn"
    method: str
    path: str  # unquoted path, without the query string
    query: str
    range: str | None
    status: int
    bytes_sent: int
    bytes_received: int
    authorized: bool
    fault: str | None = None  # "status", "abort", "drop" when a fault rule fired

    def __repr__(self) -> str:
        rng = f" range={self.range}" if self.range else ""
        flt = f" fault={self.fault}" if self.fault else ""
        return f"<{self.server} {self.method} {self.path} -> {self.status} ({self.bytes_sent} B){rng}{flt}>"


@dataclass
class Fault:
    """A rule that makes matching requests fail.  Created by `FakeHub.add_fault` and friends.

    A request matches when every given criterion holds: `method` (exact), `path` (substring of
    the unquoted path, or a compiled regex searched in it), `server` ("hub"/"cdn") and `match`
    (a predicate on the `RequestRecord` being built, before status/bytes are known).  The first
    `skip` matching requests pass untouched, then the next `times` ones (forever if None) get:

    * `status`: an error response with that status (JSON body, `X-Error-Message`),
    * `abort=True`: the connection is closed — for a GET with a body (downloads) after the
      headers and half the body, otherwise before any response (the request is not processed),
    * `drop=True` (LFS upload PUTs only): a normal 200 answer, but the bytes are thrown away, as if
      the upload was lost; a later commit referencing the object fails.

    `hits` counts the requests the rule actually broke.
    """

    method: str | None = None
    path: str | re.Pattern[str] | None = None
    server: str | None = None
    match: Callable[[RequestRecord], bool] | None = None
    status: int = 500
    abort: bool = False
    drop: bool = False
    skip: int = 0
    times: int | None = 1
    message: str = "Injected failure (FakeHub)"
    hits: int = 0
    seen: int = 0

    def _matches(self, rec: RequestRecord) -> bool:
        if self.method is not None and rec.method != self.method.upper():
            return False
        if self.server is not None and rec.server != self.server:
            return False
        if self.path is not None:
            if isinstance(self.path, re.Pattern):
                if not self.path.search(rec.path):
                    return False
            elif self.path not in rec.path:
                return False
        return not (self.match is not None and not self.match(rec))

    def _fire(self, rec: RequestRecord) -> bool:
        """Called under the hub lock for each request; True if this rule breaks it."""
        if not self._matches(rec):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class _HttpError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


@dataclass
class _Req:
    server: str
    method: str
    path: str  # raw (still quoted) path
    segments: list[str]  # raw segments
    query: dict[str, list[str]]
    query_string: str
    headers: Any
    body: bytes
    authorized: bool

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode() or "null")
        except ValueError as e:
            raise _HttpError(400, f"Invalid JSON body: {e}") from None


@dataclass
class _Resp:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def of_json(cls, data: Any, status: int = 200, headers: dict | None = None) -> _Resp:
        body = json.dumps(data).encode()
        return cls(
            status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body
        )


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: FakeHub, role: str):
        self.hub = hub
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 30  # idle keep-alive connections are dropped after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle + the client's
        # delayed ACK add ~40 ms to every request on loopback.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.hub._track(self.connection, threading.current_thread(), add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, threading.current_thread(), add=False)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        self.server.hub._dispatch(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


# --------------------------------------------------------------------------------------------------
# The fake hub
# --------------------------------------------------------------------------------------------------


class FakeHub:
    """In-memory Hugging Face Hub served over real HTTP on 127.0.0.1 (see module docstring).

    Args:
        lfs_threshold: files at least this large are "lfs" in preupload (the Hub uses 10 MiB).
        lfs_patterns: extra glob patterns (on the repo path) that are always LFS, on top of the
            repo's `.gitattributes` (e.g. `["*.json"]` to force small files through LFS).
        binary_is_lfs: a file whose 512-byte sample has a NUL byte is LFS (the Hub's binary rule).
        lfs_redirect: `/resolve` of an LFS file answers 302 to the cdn origin (like the Hub).  With
            False the hub serves LFS bytes itself (200 + X-Linked-* headers).
        multipart_chunk_size: if set, LFS objects larger than this are uploaded with the Hub's
            multipart transfer (one PUT per part to the cdn, then a completion POST).
        tree_page_size: entries per `/tree` page (the Hub uses 1000); smaller values exercise the
            `Link: rel="next"` pagination.
        tokens: accepted bearer tokens; None accepts any non-empty token.  Writes always need one.
        user: the user name returned by whoami and used as commit author.
    """

    def __init__(
        self,
        *,
        lfs_threshold: int = 10 * _MIB,
        lfs_patterns: list[str] | tuple[str, ...] = (),
        binary_is_lfs: bool = True,
        lfs_redirect: bool = True,
        multipart_chunk_size: int | None = None,
        tree_page_size: int = 1000,
        tokens: set[str] | None = None,
        user: str = "fake-user",
    ):
        self.lfs_threshold = lfs_threshold
        self.lfs_patterns = list(lfs_patterns)
        self.binary_is_lfs = binary_is_lfs
        self.lfs_redirect = lfs_redirect
        self.multipart_chunk_size = multipart_chunk_size
        self.tree_page_size = tree_page_size
        self.tokens = tokens
        self.user = user

        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._objects: dict[str, bytes] = {}  # blob key -> bytes
        self._corrupted: dict[str, bytes] = {}  # blob key -> bytes served instead
        self._multipart: dict[str, dict[int, bytes]] = {}  # lfs oid -> part number -> bytes
        self._log: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self._commit_counter = itertools.count()
        self.errors: list[str] = []  # tracebacks of exceptions raised inside the fake

        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._conns: dict[socket.socket, threading.Thread] = {}
        self.url = ""
        self.cdn_url = ""

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeHub:
        if self._servers:
            return self
        for role in ("hub", "cdn"):
            server = _Server(self, role)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fakehub-{role}",
                daemon=True,
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop both servers, close open keep-alive connections and join every thread."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _, thread in conns:
            thread.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is None and self.errors:
            raise AssertionError("FakeHub raised internally:\n" + "\n".join(self.errors))

    def _track(self, conn: socket.socket, thread: threading.Thread, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = thread
            else:
                self._conns.pop(conn, None)

    # ---------------------------------------------------------------------------- request log

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log (oldest first)."""
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _select(self, method=None, path=None, server=None, status=None) -> list[RequestRecord]:
        out = []
        for r in self.requests:
            if method is not None and r.method != method.upper():
                continue
            if server is not None and r.server != server:
                continue
            if status is not None and r.status != status:
                continue
            if path is not None and not (
                path.search(r.path) if isinstance(path, re.Pattern) else path in r.path
            ):
                continue
            out.append(r)
        return out

    def count(
        self, method: str | None = None, path=None, server: str | None = None, status=None
    ) -> int:
        """Number of logged requests matching all given filters (`path`: substring or regex)."""
        return len(self._select(method, path, server, status))

    def bytes_sent(self, method: str | None = None, path=None, server: str | None = None) -> int:
        """Response body bytes sent by requests matching the filters."""
        return sum(r.bytes_sent for r in self._select(method, path, server))

    # ---------------------------------------------------------------------------- fault hooks

    def add_fault(self, **kwargs: Any) -> Fault:
        """Register a `Fault` (see its docstring for the arguments) and return it.

        Rules are checked in the order they were added; the first one that fires handles the
        request, and the rules after it do not see (or count) that request.
        """
        fault = Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_after(
        self, n: int, *, status: int = 503, abort: bool = False, times: int | None = None, **kw
    ) -> Fault:
        """Let the next `n` requests through, then break the following ones (all, or `times`).

        Note: huggingface_hub retries 408/429/5xx and dropped connections on most calls, sleeping
        1, 2, 4, 8, 8 s between tries; use a 4xx status (e.g. 403) for an immediate failure.
        """
        return self.add_fault(skip=n, status=status, abort=abort, times=times, **kw)

    def drop_uploads(self, times: int | None = 1, oid: str | None = None) -> Fault:
        """Accept the next LFS upload PUT(s) with 200 but discard the bytes (a lost upload)."""
        path = f"/upload/{oid}" if oid else "/upload/"
        return self.add_fault(method="PUT", server="cdn", path=path, drop=True, times=times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def corrupt(
        self,
        repo_id: str,
        path: str,
        *,
        revision: str = "main",
        repo_type: str = "dataset",
        data: bytes | None = None,
    ) -> None:
        """Serve different bytes for that file from now on (headers, ETag and size unchanged).

        Default: the stored bytes with a few bytes flipped (same length).  The override is keyed
        by content, so every path/revision holding the same blob is affected.
        """
        with self._lock:
            blob = self._get_blob(repo_type, repo_id, revision, path)
            if data is None:
                original = bytearray(self._objects[blob.key])
                if not original:
                    raise ValueError("cannot corrupt an empty file without explicit data")
                for pos in {0, len(original) // 2, len(original) - 1}:
                    original[pos] ^= 0xFF
                data = bytes(original)
            self._corrupted[blob.key] = data

    def uncorrupt(self) -> None:
        with self._lock:
            self._corrupted.clear()

    # ---------------------------------------------------------------------------- direct access

    def create_repo(
        self, repo_id: str, *, repo_type: str = "dataset", private: bool = False
    ) -> str:
        """Create a repo with the Hub's initial commit (a `.gitattributes`); return its sha."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                raise ValueError(f"{repo_type} repo {repo_id} exists")
            repo = _Repo(
                repo_type=repo_type, repo_id=repo_id, private=private, created_at=datetime.now(UTC)
            )
            self._repos[key] = repo
            blob = self._store_regular(DEFAULT_GITATTRIBUTES.encode())
            return self._new_commit(
                repo, {".gitattributes": blob}, "initial commit", "", parent=None, branch="main"
            )

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes | None],
        *,
        repo_type: str = "dataset",
        branch: str = "main",
        message: str = "Seed files",
        lfs: bool | None = None,
    ) -> str:
        """Commit directly (no HTTP): `files` maps path -> bytes (None deletes).  Creates the repo if
        needed.  `lfs=None` applies the preupload rules, True/False forces.  Returns the new sha."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self.create_repo(repo_id, repo_type=repo_type)
            repo = self._repos[(repo_type, repo_id)]
            tree = (
                dict(repo.commits[repo.branches[branch]].files) if branch in repo.branches else {}
            )
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                    continue
                use_lfs = (
                    lfs
                    if lfs is not None
                    else self._is_lfs(repo, branch, path, len(data), data[:512])
                )
                tree[path] = self._store_lfs(data) if use_lfs else self._store_regular(data)
            return self._new_commit(
                repo, tree, message, "", parent=repo.branches.get(branch), branch=branch
            )

    def file_bytes(
        self, repo_id: str, path: str, *, revision: str = "main", repo_type: str = "dataset"
    ) -> bytes:
        """The bytes stored for a file (not the corrupted override)."""
        with self._lock:
            return self._objects[self._get_blob(repo_type, repo_id, revision, path).key]

    def head(self, repo_id: str, revision: str = "main", *, repo_type: str = "dataset") -> str:
        """Commit sha a revision points to."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            sha = repo.resolve(revision)
            if sha is None:
                raise KeyError(revision)
            return sha

    def files(
        self, repo_id: str, revision: str = "main", *, repo_type: str = "dataset"
    ) -> dict[str, dict]:
        """path -> {"size", "lfs", "oid"} at a revision."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.commits[self.head(repo_id, revision, repo_type=repo_type)]
            return {
                p: {"size": b.size, "lfs": b.lfs_sha256 is not None, "oid": b.etag}
                for p, b in commit.files.items()
            }

    def lfs_object_exists(self, sha256: str) -> bool:
        with self._lock:
            return f"lfs:{sha256}" in self._objects

    # ---------------------------------------------------------------------------- storage helpers

    def _store_regular(self, data: bytes) -> _Blob:
        blob = _Blob(size=len(data), git_oid=_git_blob_oid(data))
        self._objects[blob.key] = data
        return blob

    def _store_lfs(self, data: bytes) -> _Blob:
        oid = hashlib.sha256(data).hexdigest()
        self._objects[f"lfs:{oid}"] = data
        return self._lfs_blob(oid, len(data))

    @staticmethod
    def _lfs_blob(oid: str, size: int) -> _Blob:
        pointer = _LFS_POINTER.format(oid=oid, size=size).encode()
        return _Blob(
            size=size, git_oid=_git_blob_oid(pointer), lfs_sha256=oid, pointer_size=len(pointer)
        )

    def _new_commit(
        self,
        repo: _Repo,
        files: dict[str, _Blob],
        title: str,
        message: str,
        *,
        parent: str | None,
        branch: str | None = None,
    ) -> str:
        """Record a commit with the given full file map; move `branch` to it if given."""
        listing = "\n".join(f"{p} {b.git_oid}" for p, b in sorted(files.items()))
        seed = f"{parent}\n{listing}\n{title}\n{message}\n{next(self._commit_counter)}\n{id(self)}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = _Commit(sha, parent, dict(files), title, message, datetime.now(UTC))
        if branch is not None:
            repo.branches[branch] = sha
        return sha

    def _get_repo(self, repo_type: str, repo_id: str, req: _Req | None = None) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        if repo.private and req is not None and not req.authorized:
            raise _HttpError(401, "Repository not found", "RepoNotFound")
        return repo

    def _get_commit(self, repo: _Repo, revision: str) -> _Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _get_blob(self, repo_type: str, repo_id: str, revision: str, path: str) -> _Blob:
        repo = self._repos[(repo_type, repo_id)]
        commit = repo.commits[self.head(repo_id, revision, repo_type=repo_type)]
        return commit.files[path]

    def _lfs_patterns_for(self, repo: _Repo, revision: str) -> list[str]:
        patterns = list(self.lfs_patterns)
        sha = repo.resolve(revision)
        blob = repo.commits[sha].files.get(".gitattributes") if sha else None
        if blob is not None:
            for line in self._objects[blob.key].decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                    patterns.append(parts[0])
        return patterns

    def _is_lfs(self, repo: _Repo, revision: str, path: str, size: int, sample: bytes) -> bool:
        if size == 0:
            return False
        if size >= self.lfs_threshold:
            return True
        if self.binary_is_lfs and b"\0" in sample:
            return True
        name = path.rsplit("/", 1)[-1]
        for pattern in self._lfs_patterns_for(repo, revision):
            target = path if "/" in pattern else name
            if fnmatch.fnmatchcase(target, pattern):
                return True
        return False

    # ---------------------------------------------------------------------------- dispatch

    def _dispatch(self, h: _Handler) -> None:
        server = h.server.role
        method = h.command
        split = urlsplit(h.path)
        raw_path = split.path
        auth = h.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        authorized = bool(token) and (self.tokens is None or token in self.tokens)
        rec = RequestRecord(
            server=server,
            method=method,
            path=unquote(raw_path),
            query=split.query,
            range=h.headers.get("Range"),
            status=0,
            bytes_sent=0,
            bytes_received=0,
            authorized=authorized,
        )
        try:
            body = h._read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        except (OSError, ValueError):
            h.close_connection = True
            return
        rec.bytes_received = len(body)

        with self._lock:
            fault = next((f for f in self._faults if f._fire(rec)), None)

        req = _Req(
            server=server,
            method=method,
            path=raw_path,
            segments=raw_path.split("/")[1:],
            query=parse_qs(split.query, keep_blank_values=True),
            query_string=split.query,
            headers=h.headers,
            body=body,
            authorized=authorized,
        )
        if token and self.tokens is not None and not authorized:
            resp = self._error(401, "Invalid credentials in Authorization header", None)
        elif fault is not None and fault.abort and method != "GET":
            rec.fault, rec.status = "abort", 0
            with self._lock:
                self._log.append(rec)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        elif fault is not None and not fault.abort and not fault.drop:
            rec.fault = "status"
            resp = self._error(fault.status, fault.message, None)
        else:
            try:
                resp = self._route(req, drop=fault is not None and fault.drop)
                if fault is not None and fault.drop:
                    rec.fault = "drop"
            except _HttpError as e:
                resp = self._error(e.status, e.message, e.code, e.headers)
            except Exception:
                tb = traceback.format_exc()
                with self._lock:
                    self.errors.append(f"{method} {raw_path}\n{tb}")
                resp = self._error(
                    500, "FakeHub internal error: " + tb.strip().splitlines()[-1], None
                )

        abort_mid_body = fault is not None and fault.abort and method == "GET"
        if abort_mid_body and len(resp.body) < 2:  # nothing to cut in half: drop the connection
            rec.fault, rec.status = "abort", 0
            with self._lock:
                self._log.append(rec)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        send_body = method != "HEAD"
        body_out = resp.body if send_body else b""
        if abort_mid_body:
            body_out = body_out[: len(body_out) // 2]
            rec.fault = "abort"
        rec.status = resp.status
        rec.bytes_sent = len(body_out)
        # Logged before sending: a client that got the reply always finds its entry in the log.
        with self._lock:
            self._log.append(rec)

        try:
            h.send_response(resp.status)
            headers = {"Content-Length": str(len(resp.body)), **resp.headers}
            for name, value in headers.items():
                h.send_header(name, value)
            if abort_mid_body:
                h.send_header("Connection", "close")
            h.end_headers()
            if body_out:
                h.wfile.write(body_out)
            h.wfile.flush()
        except OSError:
            h.close_connection = True
            return
        if abort_mid_body:
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _error(status: int, message: str, code: str | None, headers: dict | None = None) -> _Resp:
        safe = message.encode("latin-1", "replace").decode("latin-1").replace("\n", " ")[:1000]
        extra = {"X-Error-Message": safe, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        return _Resp.of_json({"error": message}, status, extra)

    def _route(self, req: _Req, drop: bool) -> _Resp:
        seg = req.segments
        m = req.method
        if req.server == "cdn":
            if len(seg) == 2 and seg[0] == "lfs" and m in ("GET", "HEAD"):
                return self._cdn_download(req, seg[1])
            if len(seg) in (2, 3) and seg[0] == "upload" and m == "PUT":
                return self._cdn_upload(req, seg[1], int(seg[2]) if len(seg) == 3 else None, drop)
            raise _HttpError(501, f"FakeHub cdn: route not implemented: {m} {req.path}")

        if seg and seg[0] == "api":
            return self._route_api(req, seg[1:])

        # /{datasets/|spaces/}{org}/{name}(.git)/...
        repo_type = "model"
        rest = seg
        if seg and seg[0] in ("datasets", "spaces"):
            repo_type, rest = _REPO_TYPES[seg[0]], seg[1:]
        if len(rest) >= 3 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1][:-4])}"
            action = rest[5:]
            if action == ["batch"] and m == "POST":
                return self._lfs_batch(req, repo_type, repo_id)
            if action == ["verify"] and m == "POST":
                return self._lfs_verify(req, repo_type, repo_id)
            if len(action) == 2 and action[0] == "complete" and m == "POST":
                return self._lfs_complete(req, repo_type, repo_id, action[1])
        if len(rest) >= 5 and rest[2] == "resolve" and m in ("GET", "HEAD"):
            repo_id = f"{unquote(rest[0])}/{unquote(rest[1])}"
            revision = unquote(rest[3])
            path = unquote("/".join(rest[4:]))
            return self._resolve(req, repo_type, repo_id, revision, path)
        raise _HttpError(501, f"FakeHub: route not implemented: {m} {req.path}")

    def _route_api(self, req: _Req, seg: list[str]) -> _Resp:
        m = req.method
        if seg == ["whoami-v2"] and m == "GET":
            return self._whoami(req)
        if seg == ["agent-harnesses"] and m == "GET":
            return _Resp.of_json({"standardEnvVars": [], "harnesses": {}})
        if seg == ["validate-yaml"] and m == "POST":
            return self._validate_yaml(req)
        if seg == ["repos", "create"] and m == "POST":
            return self._api_create_repo(req)
        if seg == ["repos", "delete"] and m in ("POST", "DELETE"):
            return self._api_delete_repo(req)
        if len(seg) >= 3 and seg[0] in _REPO_TYPES:
            repo_type = _REPO_TYPES[seg[0]]
            repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
            tail = seg[3:]
            with self._lock:
                if not tail and m == "GET":
                    return self._api_repo_info(req, repo_type, repo_id, None)
                if len(tail) == 2 and tail[0] == "revision" and m == "GET":
                    return self._api_repo_info(req, repo_type, repo_id, unquote(tail[1]))
                if len(tail) >= 2 and tail[0] == "tree" and m == "GET":
                    path = unquote("/".join(tail[2:])).strip("/")
                    return self._api_tree(req, repo_type, repo_id, unquote(tail[1]), path)
                if len(tail) == 2 and tail[0] == "paths-info" and m == "POST":
                    return self._api_paths_info(req, repo_type, repo_id, unquote(tail[1]))
                if tail == ["refs"] and m == "GET":
                    return self._api_refs(req, repo_type, repo_id)
                if len(tail) == 2 and tail[0] == "commits" and m == "GET":
                    return self._api_commits(req, repo_type, repo_id, unquote(tail[1]))
                if len(tail) == 2 and tail[0] == "branch" and m in ("POST", "DELETE"):
                    return self._api_branch(req, repo_type, repo_id, unquote(tail[1]))
                if len(tail) == 2 and tail[0] == "tag" and m in ("POST", "DELETE"):
                    return self._api_tag(req, repo_type, repo_id, unquote(tail[1]))
                if len(tail) == 2 and tail[0] == "preupload" and m == "POST":
                    return self._api_preupload(req, repo_type, repo_id, unquote(tail[1]))
                if len(tail) == 2 and tail[0] == "commit" and m == "POST":
                    return self._api_commit(req, repo_type, repo_id, unquote(tail[1]))
                if tail == ["settings"] and m == "PUT":
                    return self._api_settings(req, repo_type, repo_id)
        raise _HttpError(501, f"FakeHub: route not implemented: {m} {req.path}")

    def _require_write(self, req: _Req) -> None:
        if not req.authorized:
            raise _HttpError(401, "You must be authenticated to write (no token sent)")

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"

    # ---------------------------------------------------------------------------- misc endpoints

    def _whoami(self, req: _Req) -> _Resp:
        if not req.authorized:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return _Resp.of_json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.user,
                "fullname": "Fake User",
                "email": None,
                "emailVerified": False,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": "fake",
                        "role": "write",
                        "createdAt": _now_iso(),
                    },
                },
            }
        )

    def _validate_yaml(self, req: _Req) -> _Resp:
        content = (req.json() or {}).get("content", "")
        errors = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end == -1:
                errors.append({"message": "Unterminated YAML front matter"})
            else:
                try:
                    import yaml

                    meta = yaml.safe_load(content[3:end])
                    if meta is not None and not isinstance(meta, dict):
                        errors.append({"message": "YAML metadata must be a mapping"})
                except ImportError:
                    pass
                except Exception as e:  # yaml.YAMLError
                    errors.append({"message": f"Invalid YAML: {e}"})
        if errors:
            return _Resp.of_json({"errors": errors, "warnings": []}, 400)
        return _Resp.of_json({"errors": [], "warnings": []})

    def _api_create_repo(self, req: _Req) -> _Resp:
        self._require_write(req)
        payload = req.json() or {}
        name, org = payload.get("name"), payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if not name or repo_type not in _URL_PREFIX:
            raise _HttpError(400, "Invalid repo name or type")
        repo_id = f"{org}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return _Resp.of_json(
                    {
                        "error": f"You already created this {repo_type} repo",
                        "url": self._repo_url(repo_type, repo_id),
                    },
                    409,
                )
            self.create_repo(repo_id, repo_type=repo_type, private=private)
        return _Resp.of_json(
            {
                "url": self._repo_url(repo_type, repo_id),
                "name": repo_id,
                "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            }
        )

    def _api_delete_repo(self, req: _Req) -> _Resp:
        self._require_write(req)
        payload = req.json() or {}
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        with self._lock:
            if self._repos.pop((repo_type, repo_id), None) is None:
                raise _HttpError(404, "Repository not found", "RepoNotFound")
        return _Resp(200)

    def _api_settings(self, req: _Req, repo_type: str, repo_id: str) -> _Resp:
        self._require_write(req)
        repo = self._get_repo(repo_type, repo_id, req)
        payload = req.json() or {}
        if "private" in payload:
            repo.private = bool(payload["private"])
        if payload.get("visibility") in ("private", "public"):
            repo.private = payload["visibility"] == "private"
        if "gated" in payload:
            repo.gated = payload["gated"]
        return _Resp.of_json({})

    # ---------------------------------------------------------------------------- read endpoints

    def _api_repo_info(
        self, req: _Req, repo_type: str, repo_id: str, revision: str | None
    ) -> _Resp:
        repo = self._get_repo(repo_type, repo_id, req)
        commit = self._get_commit(repo, revision or "main")
        blobs = _truthy(req.q("blobs"))
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs_sha256:
                    sib["lfs"] = {
                        "sha256": blob.lfs_sha256,
                        "size": blob.size,
                        "pointerSize": blob.pointer_size,
                    }
            siblings.append(sib)
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": _now_iso(repo.created_at),
            "lastModified": _now_iso(commit.date),
            "siblings": siblings,
            "usedStorage": sum(b.size for b in commit.files.values()),
        }
        return _Resp.of_json(info)

    def _entry(
        self, repo: _Repo, commit: _Commit, path: str, blob: _Blob | None, expand: bool
    ) -> dict:
        if blob is not None:
            e: dict[str, Any] = {
                "type": "file",
                "oid": blob.git_oid,
                "size": blob.size,
                "path": path,
            }
            if blob.lfs_sha256:
                e["lfs"] = {
                    "oid": blob.lfs_sha256,
                    "size": blob.size,
                    "pointerSize": blob.pointer_size,
                }
        else:
            under = sorted(
                (p, b.git_oid) for p, b in commit.files.items() if p.startswith(path + "/")
            )
            e = {
                "type": "directory",
                "oid": hashlib.sha1(repr(under).encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        if expand:
            last = self._last_commit(repo, commit, path, is_dir=blob is None)
            e["lastCommit"] = {"id": last.sha, "title": last.title, "date": _now_iso(last.date)}
            if blob is not None:
                e["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        return e

    @staticmethod
    def _snapshot(commit: _Commit, path: str, is_dir: bool) -> Any:
        if not is_dir:
            b = commit.files.get(path)
            return b.git_oid if b else None
        return sorted((p, b.git_oid) for p, b in commit.files.items() if p.startswith(path + "/"))

    def _last_commit(self, repo: _Repo, commit: _Commit, path: str, is_dir: bool) -> _Commit:
        last = commit
        state = self._snapshot(commit, path, is_dir)
        for c in repo.history(commit.sha):
            if self._snapshot(c, path, is_dir) != state:
                break
            last = c
        return last

    @staticmethod
    def _dirs_of(files: dict[str, _Blob]) -> set[str]:
        dirs = set()
        for p in files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _api_tree(self, req: _Req, repo_type: str, repo_id: str, revision: str, path: str) -> _Resp:
        repo = self._get_repo(repo_type, repo_id, req)
        commit = self._get_commit(repo, revision)
        recursive = _truthy(req.q("recursive"))
        expand = _truthy(req.q("expand"))
        dirs = self._dirs_of(commit.files)
        if path and path not in dirs:
            raise _HttpError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        prefix = path + "/" if path else ""
        names = [p for p in list(commit.files) + list(dirs) if p.startswith(prefix)]
        if not recursive:
            names = [p for p in names if "/" not in p[len(prefix) :]]
        # directories first, then files, each sorted: a stable order that pages can cut through
        names.sort(key=lambda p: (p not in dirs, p))
        page_size = 50 if expand else self.tree_page_size
        start = int(req.q("cursor") or 0)
        page = names[start : start + page_size]
        entries = [self._entry(repo, commit, p, commit.files.get(p), expand) for p in page]
        headers = {}
        if start + page_size < len(names):
            params = {k: v[-1] for k, v in req.query.items() if k != "cursor"}
            params["cursor"] = str(start + page_size)
            headers["Link"] = f'<{self.url}{req.path}?{urlencode(params)}>; rel="next"'
        return _Resp.of_json(entries, headers=headers)

    def _api_paths_info(self, req: _Req, repo_type: str, repo_id: str, revision: str) -> _Resp:
        repo = self._get_repo(repo_type, repo_id, req)
        commit = self._get_commit(repo, revision)
        ctype = req.headers.get("Content-Type") or ""
        if "json" in ctype:
            form = req.json() or {}
            paths = form.get("paths", [])
            expand = bool(form.get("expand"))
        else:
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = _truthy((form.get("expand") or ["false"])[-1])
        dirs = self._dirs_of(commit.files)
        out = []
        for p in dict.fromkeys(p.strip("/") for p in paths):
            if p in commit.files:
                out.append(self._entry(repo, commit, p, commit.files[p], expand))
            elif p in dirs:
                out.append(self._entry(repo, commit, p, None, expand))
        return _Resp.of_json(out)

    def _api_refs(self, req: _Req, repo_type: str, repo_id: str) -> _Resp:
        repo = self._get_repo(repo_type, repo_id, req)
        data = {
            "branches": [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                for b, s in sorted(repo.branches.items())
            ],
            "tags": [
                {"name": t, "ref": f"refs/tags/{t}", "targetCommit": s}
                for t, s in sorted(repo.tags.items())
            ],
            "converts": [],
        }
        if _truthy(req.q("include_prs")):
            data["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": s}
                for n, s in sorted(repo.prs.items())
            ]
        return _Resp.of_json(data)

    def _api_commits(self, req: _Req, repo_type: str, repo_id: str, revision: str) -> _Resp:
        repo = self._get_repo(repo_type, repo_id, req)
        commit = self._get_commit(repo, revision)
        out = [
            {
                "id": c.sha,
                "title": c.title,
                "message": c.message,
                "date": _now_iso(c.date),
                "authors": [{"user": self.user, "avatar": ""}],
            }
            for c in repo.history(commit.sha)
        ]
        return _Resp.of_json(out)

    # ---------------------------------------------------------------------------- refs

    def _api_branch(self, req: _Req, repo_type: str, repo_id: str, branch: str) -> _Resp:
        self._require_write(req)
        repo = self._get_repo(repo_type, repo_id, req)
        if req.method == "DELETE":
            if branch not in repo.branches:
                raise _HttpError(404, f"Branch {branch} not found", "RevisionNotFound")
            if branch == "main":
                raise _HttpError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return _Resp(200)
        if branch.startswith("refs/") or not branch:
            raise _HttpError(400, f"Invalid reference for a branch: {branch}")
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
        start = (req.json() or {}).get("startingPoint")
        repo.branches[branch] = self._get_commit(repo, start or "main").sha
        return _Resp(200)

    def _api_tag(self, req: _Req, repo_type: str, repo_id: str, rev_or_tag: str) -> _Resp:
        self._require_write(req)
        repo = self._get_repo(repo_type, repo_id, req)
        if req.method == "DELETE":
            if repo.tags.pop(rev_or_tag, None) is None:
                raise _HttpError(404, f"Tag {rev_or_tag} not found", "RevisionNotFound")
            return _Resp(200)
        tag = (req.json() or {}).get("tag")
        if not tag:
            raise _HttpError(400, "Missing tag name")
        if tag in repo.tags:
            raise _HttpError(409, f"Tag already exists: refs/tags/{tag}")
        repo.tags[tag] = self._get_commit(repo, rev_or_tag).sha
        return _Resp(200)

    # ---------------------------------------------------------------------------- uploads

    def _api_preupload(self, req: _Req, repo_type: str, repo_id: str, revision: str) -> _Resp:
        self._require_write(req)
        repo = self._get_repo(repo_type, repo_id, req)
        create_pr = _truthy(req.q("create_pr"))
        commit = self._get_commit(repo, revision)
        if not create_pr and revision not in repo.branches and not revision.startswith("refs/pr/"):
            raise _HttpError(400, f"Invalid rev id: {revision} is not a branch")
        payload = req.json() or {}
        ignore = [
            ln.strip()
            for ln in (payload.get("gitIgnore") or "").splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
        files = []
        for f in payload.get("files", []):
            path, size = f["path"], int(f["size"])
            sample = base64.b64decode(f.get("sample") or "")
            mode = "lfs" if self._is_lfs(repo, commit.sha, path, size, sample) else "regular"
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.lfs_sha256 if existing.lfs_sha256 else existing.git_oid
            name = path.rsplit("/", 1)[-1]
            should_ignore = any(
                fnmatch.fnmatchcase(path, g.strip("/")) or fnmatch.fnmatchcase(name, g)
                for g in ignore
            )
            files.append(
                {"path": path, "uploadMode": mode, "shouldIgnore": should_ignore, "oid": oid}
            )
        return _Resp.of_json({"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, req: _Req, repo_type: str, repo_id: str) -> _Resp:
        self._require_write(req)
        payload = req.json() or {}
        with self._lock:
            self._get_repo(repo_type, repo_id, req)
            if payload.get("operation") != "upload":
                raise _HttpError(400, "Only the upload operation is supported")
            transfers = payload.get("transfers") or ["basic"]
            use_multipart = self.multipart_chunk_size is not None and "multipart" in transfers
            base = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects"
            objects = []
            for obj in payload.get("objects", []):
                oid, size = obj.get("oid"), obj.get("size")
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if (
                    not isinstance(oid, str)
                    or not _SHA256_RE.match(oid)
                    or not isinstance(size, int)
                    or size < 0
                ):
                    entry["error"] = {"code": 422, "message": "Invalid oid or size"}
                    entry["oid"], entry["size"] = (
                        str(oid),
                        int(size) if isinstance(size, int) else 0,
                    )
                elif f"lfs:{oid}" in self._objects:
                    pass  # already there: no "actions", the client skips the upload
                else:
                    verify = {
                        "href": f"{base}/verify",
                        "header": {"Authorization": "Bearer lfs-verify"},
                    }
                    if use_multipart and size > self.multipart_chunk_size:
                        chunk = self.multipart_chunk_size
                        n_parts = -(-size // chunk)
                        header = {"chunk_size": str(chunk)}
                        header.update(
                            {
                                f"{i:05d}": f"{self.cdn_url}/upload/{oid}/{i}"
                                for i in range(1, n_parts + 1)
                            }
                        )
                        upload = {"href": f"{base}/complete/{oid}", "header": header}
                    else:
                        upload = {"href": f"{self.cdn_url}/upload/{oid}"}
                    entry["actions"] = {"upload": upload, "verify": verify}
                objects.append(entry)
        transfer = "multipart" if use_multipart else "basic"
        return _Resp.of_json(
            {"transfer": transfer, "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _cdn_upload(self, req: _Req, oid: str, part: int | None, drop: bool) -> _Resp:
        if not _SHA256_RE.match(oid):
            raise _HttpError(400, "Invalid oid")
        if part is not None:
            with self._lock:
                if not drop:
                    self._multipart.setdefault(oid, {})[part] = req.body
            return _Resp(200, {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})
        if hashlib.sha256(req.body).hexdigest() != oid:
            raise _HttpError(400, "Uploaded content does not match its sha256 oid")
        with self._lock:
            if not drop:
                self._objects[f"lfs:{oid}"] = req.body
        return _Resp(200, {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})

    def _lfs_complete(self, req: _Req, repo_type: str, repo_id: str, oid: str) -> _Resp:
        payload = req.json() or {}
        with self._lock:
            parts = self._multipart.get(oid, {})
            numbers = [p["partNumber"] for p in payload.get("parts", [])]
            if not numbers or any(n not in parts for n in numbers):
                raise _HttpError(400, "Missing uploaded parts")
            for p in payload["parts"]:
                if p.get("etag", "").strip('"') != hashlib.md5(parts[p["partNumber"]]).hexdigest():
                    raise _HttpError(400, f"ETag mismatch for part {p['partNumber']}")
            data = b"".join(parts[n] for n in sorted(numbers))
            if hashlib.sha256(data).hexdigest() != oid:
                raise _HttpError(400, "Assembled content does not match its sha256 oid")
            self._objects[f"lfs:{oid}"] = data
            self._multipart.pop(oid, None)
        return _Resp.of_json({})

    def _lfs_verify(self, req: _Req, repo_type: str, repo_id: str) -> _Resp:
        payload = req.json() or {}
        oid, size = payload.get("oid"), payload.get("size")
        with self._lock:
            data = self._objects.get(f"lfs:{oid}")
        if data is None:
            raise _HttpError(404, f"LFS object {oid} not found")
        if size is not None and len(data) != size:
            raise _HttpError(422, f"LFS object {oid} has size {len(data)}, not {size}")
        return _Resp.of_json({})

    def _api_commit(self, req: _Req, repo_type: str, repo_id: str, revision: str) -> _Resp:
        self._require_write(req)
        repo = self._get_repo(repo_type, repo_id, req)
        create_pr = _truthy(req.q("create_pr"))
        lines = [json.loads(ln) for ln in req.body.decode().splitlines() if ln.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        base = self._get_commit(repo, revision)
        is_pr_ref = re.fullmatch(r"refs/pr/(\d+)", revision)
        if not create_pr and revision not in repo.branches and not is_pr_ref:
            raise _HttpError(400, f"Invalid rev id: {revision} is not a branch")
        parent_commit = header.get("parentCommit")
        if parent_commit and not create_pr and not base.sha.startswith(parent_commit):
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        if parent_commit and create_pr:
            base = self._get_commit(repo, parent_commit)
        tree = dict(base.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, "Only base64 file content is supported")
                data = base64.b64decode(value["content"])
                if len(data) > 10 * _MIB:
                    raise _HttpError(
                        400,
                        "Your push was rejected because it contains files larger than 10 MiB. "
                        f"Offending files: - {path}",
                    )
                tree[path] = self._store_regular(data)
            elif key == "lfsFile":
                oid = value.get("oid")
                stored = self._objects.get(f"lfs:{oid}")
                if stored is None:
                    raise _HttpError(
                        400,
                        "Your push was rejected because an LFS pointer pointed to a file "
                        f"that does not exist. Offending file: - {path} ({oid})",
                    )
                if value.get("size") is not None and int(value["size"]) != len(stored):
                    raise _HttpError(400, f"LFS object size mismatch for {path}")
                tree[path] = self._lfs_blob(oid, len(stored))
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise _HttpError(
                        404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                    )
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                removed = [p for p in tree if p.startswith(prefix)]
                if not removed:
                    raise _HttpError(
                        404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                    )
                for p in removed:
                    del tree[p]
            else:
                raise _HttpError(400, f"Unknown commit operation: {key}")
        title, description = header.get("summary") or "", header.get("description") or ""
        prefix_url = self._repo_url(repo_type, repo_id)
        pr_url = None
        if create_pr:
            number = max(repo.prs, default=0) + 1
            repo.prs[number] = self._new_commit(repo, tree, title, description, parent=base.sha)
            pr_url = f"{prefix_url}/discussions/{number}"
            sha = repo.prs[number]
        elif is_pr_ref:
            number = int(is_pr_ref.group(1))
            sha = repo.prs[number] = self._new_commit(
                repo, tree, title, description, parent=base.sha
            )
        else:
            sha = self._new_commit(repo, tree, title, description, parent=base.sha, branch=revision)
        return _Resp.of_json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{prefix_url}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    # ---------------------------------------------------------------------------- downloads

    def _served_bytes(self, blob: _Blob) -> bytes:
        with self._lock:
            return self._corrupted.get(blob.key, self._objects[blob.key])

    @staticmethod
    def _ranged(req: _Req, data: bytes, headers: dict[str, str]) -> _Resp:
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
        spec = req.headers.get("Range")
        size = len(data)
        if not spec:
            return _Resp(200, headers, data)
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
        if not m or (not m.group(1) and not m.group(2)):
            # unsupported (e.g. multi-range): ignore the header, as many servers do
            return _Resp(200, headers, data)
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:
            start, end = max(size - int(m.group(2)), 0), size - 1
        if start >= size or end < start:
            headers["Content-Range"] = f"bytes */{size}"
            return _Resp(416, headers, b"")
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return _Resp(206, headers, data[start : end + 1])

    def _resolve(self, req: _Req, repo_type: str, repo_id: str, revision: str, path: str) -> _Resp:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id, req)
            commit = self._get_commit(repo, revision)
            blob = commit.files.get(path)
        base_headers = {"X-Repo-Commit": commit.sha}
        if blob is None:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", base_headers)
        if blob.lfs_sha256 is None:
            return self._ranged(
                req, self._served_bytes(blob), {**base_headers, "ETag": f'"{blob.git_oid}"'}
            )
        linked = {
            **base_headers,
            "X-Linked-Etag": f'"{blob.lfs_sha256}"',
            "X-Linked-Size": str(blob.size),
        }
        if self.lfs_redirect:
            location = (
                f"{self.cdn_url}/lfs/{blob.lfs_sha256}?filename={quote(path.rsplit('/', 1)[-1])}"
            )
            return _Resp(302, {**linked, "ETag": f'"{blob.git_oid}"', "Location": location}, b"")
        return self._ranged(
            req, self._served_bytes(blob), {**linked, "ETag": f'"{blob.lfs_sha256}"'}
        )

    def _cdn_download(self, req: _Req, oid: str) -> _Resp:
        with self._lock:
            key = f"lfs:{oid}"
            if key not in self._objects:
                raise _HttpError(404, "NoSuchKey")
            data = self._corrupted.get(key, self._objects[key])
        return self._ranged(req, data, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})


# --------------------------------------------------------------------------------------------------
# Client environment
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeHubEnv:
    home: Path
    cache_dir: Path
    endpoint: str | None
    token: str


def fake_hub_env(
    monkeypatch: Any,
    tmp_path: Path,
    hub: FakeHub | None = None,
    *,
    token: str = TEST_TOKEN,
    offline: bool = False,
) -> FakeHubEnv:
    """Point huggingface_hub at a temporary HF_HOME (and at `hub`, if given), with Xet off.

    huggingface_hub reads its environment once, at import time, into `huggingface_hub.constants`
    (see constants.py), so setting variables in a running test is not enough: this sets both the
    variables (for subprocesses and late readers) and the already-computed constants:

    * HF_HOME / HF_HUB_CACHE / HF_XET_CACHE / HF_ASSETS_CACHE / token paths -> under `tmp_path`;
    * HF_HUB_DISABLE_XET -> True.  Xet is a *client* decision: `is_xet_available()`
      (utils/_runtime.py) is `not constants.HF_HUB_DISABLE_XET and hf_xet importable`, and when it
      is true `upload_folder` goes through the Xet pipeline (hf_api.py `upload_folder` ->
      `_upload_pipeline.pipelined_upload`) and `create_commit` uploads via `_upload_xet_files`
      without asking the server.  No server response can switch that off;
    * HF_HUB_DISABLE_TELEMETRY -> True: otherwise building the user-agent calls `detect_agent()`,
      which fetches `{constants.ENDPOINT}/api/agent-harnesses` once per process
      (utils/_detect_agent.py) and would add a stray request to the counts;
    * progress bars off (they would only clutter captured output);
    * HF_HUB_OFFLINE -> `offline` (use `set_offline` to flip it inside a test);
    * HF_TOKEN -> `token` (read at call time by `get_token()`), for calls that don't pass one;
    * with a hub: HF_ENDPOINT, `constants.ENDPOINT`, `constants.HUGGINGFACE_CO_URL_TEMPLATE` (used
      by `hf_hub_url`) and the endpoint of the module-level `huggingface_hub.hf_api.api` instance
      behind the top-level helpers (`huggingface_hub.list_repo_files(...)` etc.), which was built
      at import time.  Passing `endpoint=` explicitly everywhere is still the robust choice.

    `monkeypatch` undoes everything at teardown.
    """
    from huggingface_hub import constants
    from huggingface_hub import hf_api as hf_api_module
    from huggingface_hub.utils import _detect_agent

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_TOKEN": token,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "HF_DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)

    consts = {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_OFFLINE": offline,
        "HF_DEBUG": False,
    }
    for name, value in consts.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    # Progress bars: the env var is also copied at import (utils/tqdm.py), and calling
    # `disable_progress_bars()` would warn if it was set then; patch the module global instead.
    monkeypatch.setattr(
        importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True
    )

    endpoint = None
    if hub is not None:
        endpoint = hub.url
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(hf_api_module.api, "endpoint", endpoint)
    return FakeHubEnv(home=home, cache_dir=cache, endpoint=endpoint, token=token)


def set_offline(monkeypatch: Any, offline: bool = True) -> None:
    """Flip huggingface_hub's offline mode inside a test (env var and the import-time constant)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def iter_fake_hub(monkeypatch: Any, tmp_path: Path, **hub_kwargs: Any) -> Iterator[FakeHub]:
    """Generator usable as a pytest fixture body: a started `FakeHub` with `fake_hub_env` applied.

    In a conftest::

        @pytest.fixture
        def fake_hub(monkeypatch, tmp_path):
            yield from iter_fake_hub(monkeypatch, tmp_path)
    """
    from huggingface_hub import HfFileSystem
    from huggingface_hub.utils import _http

    with FakeHub(**hub_kwargs) as hub:
        fake_hub_env(monkeypatch, tmp_path, hub)
        try:
            yield hub
        finally:
            # HfFileSystem instances are cached per (thread, endpoint, token); drop them, and drop the
            # shared httpx2 client's pooled keep-alive connections to this (about to stop) server.
            HfFileSystem.clear_instance_cache()
            _http.close_session()
