"""A loopback fake of the Hugging Face Hub's HTTP API, driven by the real huggingface_hub client.

``FakeHub`` runs two real HTTP/1.1 servers on 127.0.0.1 (port 0), each in a thread:

* the **hub** (``hub.url``): the ``/api/...`` endpoints relabel-store's reads and pushes use, and
  ``/datasets/{repo}/resolve/{rev}/{path}`` downloads;
* the **cdn** (``hub.cdn_url``): where LFS objects are uploaded to and downloaded from. It is a
  separate *origin* on purpose: the real Hub answers ``/resolve`` of an LFS file with a 302 to
  another host, and the token must never follow that redirect.

It implements what the product exercises, for dataset repos (and file downloads from model repos,
``/{repo}/resolve/{rev}/{path}``, where timm's pretrained weights live): repo info at a revision,
create repo, create branch, recursive tree listing (paginated like the Hub), paths-info,
preupload, the LFS batch API with basic transfer and verify, NDJSON commits, YAML validation of
the dataset card, and downloads with ``Range`` (206, and 416 outside the file) and cross-origin
redirects. Xet is never offered; :func:`fake_hub_env` also switches it off in the client.
Repos live in memory with git-like history: every commit has a 40-hex sha and a full file map,
regular files have git blob ids, LFS files sha256 oids.

Test hooks: the request log (``hub.requests``, ``hub.count()``, ``hub.bytes_sent()``,
``hub.reset_log()``), ``hub.corrupt()`` (serve other bytes than stored), ``hub.add_fault()``
(error statuses, connections cut mid-body, lost uploads, rewritten ranges), and direct seeding
with ``hub.commit_files()``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import socket
import threading
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

TEST_TOKEN = "hf_fake_test_token"

# huggingface_hub 2.4 uploads LFS content with `http_backoff("PUT", url, data=<file object>)`, and
# httpx2 deprecates raw bytes in `data=` with a DeprecationWarning ("Use 'content=<...>' ..."). The
# warning comes from the client library, not from our code; under `filterwarnings = error` it is
# filtered narrowly wherever a test pushes through the client's non-Xet LFS upload.
HTTPX2_DATA_DEPRECATION_FILTER = (
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"
)

_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SEND_CHUNK = 64 * 1024
#: What the Hub commits into every new repo.
GITATTRIBUTES = b"*.zst filter=lfs diff=lfs merge=lfs -text\n"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------------------------------
# In-memory repos
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


@dataclass
class _Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, _Blob]] = field(default_factory=dict)  # sha -> file map
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Branch name or full commit sha -> commit sha."""
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


# --------------------------------------------------------------------------------------------------
# Request log and fault injection
# --------------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the fake saw it. `bytes_sent` counts response body bytes that actually
    went out (a client that stops reading and closes the connection cuts it short)."""

    server: str  # "hub" or "cdn"
    method: str
    path: str  # unquoted path, without the query string
    range: str | None
    status: int
    bytes_sent: int
    authorized: bool
    fault: str | None = None  # "status", "abort", "drop", "range" when a fault rule fired

    def __repr__(self) -> str:
        rng = f" range={self.range}" if self.range else ""
        flt = f" fault={self.fault}" if self.fault else ""
        return f"<{self.server} {self.method} {self.path} -> {self.status} ({self.bytes_sent} B){rng}{flt}>"


@dataclass
class Fault:
    """A rule that breaks matching requests. Created by `FakeHub.add_fault`.

    A request matches when every given criterion holds: `method`, `path` (substring of the
    unquoted path), `server` ("hub"/"cdn") and `match` (a predicate on the `RequestRecord`, before
    status and bytes are known). The first `skip` matching requests pass, then the next `times`
    ones (forever if None) get, by priority:

    * `rewrite_range`: the request's ``Range`` header is replaced by `rewrite_range(range)` and
      answered truthfully for that range (a server returning another part of the file);
    * `drop=True` (LFS upload PUTs): a 200 answer, but the bytes are thrown away (a lost upload);
    * `abort=True`: the connection is closed -- for a GET after the headers and half the body,
      otherwise before any answer;
    * `stall_s`: the answer pauses that long after the headers and half the body (a download
      in progress, for a process to be killed in the middle of);
    * else an error answer with `status`.

    `hits` counts the requests the rule broke.
    """

    method: str | None = None
    path: str | None = None
    server: str | None = None
    match: Callable[[RequestRecord], bool] | None = None
    status: int = 500
    abort: bool = False
    drop: bool = False
    rewrite_range: Callable[[str | None], str] | None = None
    stall_s: float = 0.0
    skip: int = 0
    times: int | None = 1
    hits: int = 0
    seen: int = 0

    def _fire(self, rec: RequestRecord) -> bool:
        """Called under the hub lock for each request; True if this rule breaks it."""
        if (
            (self.method is not None and rec.method != self.method.upper())
            or (self.server is not None and rec.server != self.server)
            or (self.path is not None and self.path not in rec.path)
            or (self.match is not None and not self.match(rec))
        ):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.hits >= self.times):
            return False
        self.hits += 1
        return True


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers=None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


@dataclass
class _Req:
    server: str
    method: str
    path: str  # raw (still quoted) path
    segments: list[str]
    query: dict[str, list[str]]
    headers: Any
    range: str | None
    body: bytes
    authorized: bool

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

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
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: FakeHub, role: str) -> None:
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
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def _handle(self) -> None:
        self.server.hub._dispatch(self)

    do_GET = do_HEAD = do_POST = do_PUT = _handle


# --------------------------------------------------------------------------------------------------
# The fake hub
# --------------------------------------------------------------------------------------------------


class FakeHub:
    """In-memory Hugging Face Hub served over real HTTP on 127.0.0.1 (see the module docstring).

    ``tree_page_size``: entries per ``/tree`` page (the Hub uses 1000); smaller values exercise
    the client's ``Link: rel="next"`` pagination. Files are LFS when their first 512 bytes hold a
    NUL byte (binary) or they are 10 MiB or more, as on the Hub.
    """

    def __init__(self, *, tree_page_size: int = 1000) -> None:
        self.tree_page_size = tree_page_size
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._objects: dict[str, bytes] = {}  # blob key -> bytes
        self._corrupted: dict[str, bytes] = {}  # blob key -> bytes served instead
        self._log: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self._counter = itertools.count()
        self.errors: list[str] = []  # tracebacks of exceptions raised inside the fake
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.url = ""
        self.cdn_url = ""

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = _Server(self, role)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop both servers, close open keep-alive connections and join the server threads."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
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

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

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
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (server is None or r.server == server)
            and (status is None or r.status == status)
            and (path is None or path in r.path)
        ]

    def count(self, method=None, path=None, server=None, status=None) -> int:
        """Number of logged requests matching all given filters (`path`: a substring)."""
        return len(self._select(method, path, server, status))

    def bytes_sent(self, method=None, path=None, server=None) -> int:
        """Response body bytes sent to requests matching the filters."""
        return sum(r.bytes_sent for r in self._select(method, path, server))

    # ---------------------------------------------------------------------------- faults

    def add_fault(self, **kwargs: Any) -> Fault:
        """Register a `Fault` (see its docstring) and return it. Rules are checked in the order
        they were added; the first that fires handles the request."""
        fault = Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def corrupt(self, repo_id: str, path: str, *, revision: str = "main", data=None) -> None:
        """Serve other bytes for that file from now on (listing, ETag and size unchanged).

        Default: the stored bytes with a few bytes flipped (same length). Keyed by content, so
        every path and revision holding the same blob is affected.
        """
        with self._lock:
            blob = self._blob(repo_id, revision, path)
            if data is None:
                flipped = bytearray(self._objects[blob.key])
                for pos in {0, len(flipped) // 2, len(flipped) - 1}:
                    flipped[pos] ^= 0xFF
                data = bytes(flipped)
            self._corrupted[blob.key] = data

    def uncorrupt(self) -> None:
        with self._lock:
            self._corrupted.clear()

    # ---------------------------------------------------------------------------- direct access

    def create_repo(self, repo_id: str, *, private: bool = False) -> str:
        """Create a dataset repo with the Hub's initial commit (a `.gitattributes`)."""
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"repo {repo_id} exists")
            repo = self._repos[repo_id] = _Repo(repo_id, private)
            files = {".gitattributes": self._store(GITATTRIBUTES, lfs=False)}
            return self._new_commit(repo, files, parent=None, branch="main")

    def commit_files(
        self, repo_id: str, files: dict[str, bytes | None], *, branch: str = "main"
    ) -> str:
        """Commit directly (no HTTP): path -> bytes (None deletes); creates the repo if needed.
        Returns the new commit sha."""
        with self._lock:
            if repo_id not in self._repos:
                self.create_repo(repo_id)
            repo = self._repos[repo_id]
            parent = repo.branches.get(branch)
            tree = dict(repo.commits[parent]) if parent else {}
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = self._store(data, lfs=self._is_lfs(len(data), data[:512]))
            return self._new_commit(repo, tree, parent=parent, branch=branch)

    def file_bytes(self, repo_id: str, path: str, *, revision: str = "main") -> bytes:
        """The bytes stored for a file (not a corrupted override)."""
        with self._lock:
            return self._objects[self._blob(repo_id, revision, path).key]

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha a branch points to."""
        with self._lock:
            sha = self._repos[repo_id].resolve(revision)
            if sha is None:
                raise KeyError(revision)
            return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, dict]:
        """path -> {"size", "lfs"} at a revision."""
        with self._lock:
            tree = self._repos[repo_id].commits[self.head(repo_id, revision)]
            return {p: {"size": b.size, "lfs": b.lfs_sha256 is not None} for p, b in tree.items()}

    def is_private(self, repo_id: str) -> bool:
        with self._lock:
            return self._repos[repo_id].private

    # ---------------------------------------------------------------------------- storage

    def _is_lfs(self, size: int, sample: bytes) -> bool:
        return size >= 10 << 20 or b"\0" in sample

    def _store(self, data: bytes, *, lfs: bool) -> _Blob:
        if not lfs:
            blob = _Blob(size=len(data), git_oid=_git_blob_oid(data))
            self._objects[blob.key] = data
            return blob
        oid = hashlib.sha256(data).hexdigest()
        self._objects[f"lfs:{oid}"] = data
        return self._lfs_blob(oid, len(data))

    @staticmethod
    def _lfs_blob(oid: str, size: int) -> _Blob:
        pointer = _LFS_POINTER.format(oid=oid, size=size).encode()
        return _Blob(size, _git_blob_oid(pointer), lfs_sha256=oid, pointer_size=len(pointer))

    def _new_commit(
        self, repo: _Repo, files: dict[str, _Blob], *, parent: str | None, branch: str
    ) -> str:
        seed = f"{repo.repo_id}\n{parent}\n{sorted(files)}\n{next(self._counter)}\n{id(self)}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = dict(files)
        repo.branches[branch] = sha
        return sha

    def _repo(self, repo_id: str, req: _Req | None = None) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and req is not None and not req.authorized):
            raise _HttpError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _tree(self, repo: _Repo, revision: str) -> tuple[str, dict[str, _Blob]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]

    def _blob(self, repo_id: str, revision: str, path: str) -> _Blob:
        return self._repos[repo_id].commits[self.head(repo_id, revision)][path]

    # ---------------------------------------------------------------------------- dispatch

    def _dispatch(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        auth = h.headers.get("Authorization") or ""
        rec = RequestRecord(
            server=h.server.role,
            method=h.command,
            path=unquote(split.path),
            range=h.headers.get("Range"),
            status=0,
            bytes_sent=0,
            authorized=auth.lower().startswith("bearer ") and bool(auth[7:].strip()),
        )
        try:
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length) if length else b""
        except (OSError, ValueError):
            h.close_connection = True
            return
        with self._lock:
            fault = next((f for f in self._faults if f._fire(rec)), None)
        req = _Req(
            server=rec.server,
            method=rec.method,
            path=split.path,
            segments=split.path.split("/")[1:],
            query=parse_qs(split.query, keep_blank_values=True),
            headers=h.headers,
            range=rec.range,
            body=body,
            authorized=rec.authorized,
        )
        abort = fault is not None and fault.abort and fault.rewrite_range is None
        if fault is not None and fault.rewrite_range is not None:
            req.range = fault.rewrite_range(req.range)
            rec.fault = "range"
        if abort and rec.method != "GET":
            self._cut(h, rec)
            return
        stall = fault.stall_s if fault is not None else 0.0
        if fault is not None and not (abort or stall or fault.drop or fault.rewrite_range):
            rec.fault = "status"
            resp = self._error(fault.status, "Injected failure (FakeHub)", None)
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
                    self.errors.append(f"{rec.method} {split.path}\n{tb}")
                resp = self._error(500, "FakeHub internal error: " + tb.splitlines()[-1], None)
        if abort and len(resp.body) < 2:  # nothing to cut in half: drop the connection
            self._cut(h, rec)
            return
        body_out = resp.body[: len(resp.body) // 2] if abort else resp.body
        if rec.method == "HEAD":  # the headers of the GET, no body
            body_out = b""
        rec.fault = "abort" if abort else rec.fault
        rec.status = resp.status
        # Logged before sending: a client that got the answer always finds its entry in the log.
        with self._lock:
            self._log.append(rec)
        try:
            h.send_response(resp.status)
            for name, value in {"Content-Length": str(len(resp.body)), **resp.headers}.items():
                h.send_header(name, value)
            h.end_headers()
            half = len(body_out) // 2 if stall else 0
            for part in (body_out[:half], body_out[half:]):
                for i in range(0, len(part), _SEND_CHUNK):
                    chunk = part[i : i + _SEND_CHUNK]
                    # Counted before the write returns: the client may read the bytes (and the
                    # test check the count) before this thread runs again. A failed write
                    # takes its chunk back out.
                    rec.bytes_sent += len(chunk)
                    try:
                        h.wfile.write(chunk)
                    except OSError:
                        rec.bytes_sent -= len(chunk)
                        raise
                h.wfile.flush()
                if half:
                    self._stopping.wait(stall)
                    half = 0
        except OSError:  # the client went away
            h.close_connection = True
            return
        if abort:
            self._cut(h, None)

    def _cut(self, h: _Handler, rec: RequestRecord | None) -> None:
        """Close the connection (logging `rec` as aborted, when given)."""
        if rec is not None:
            rec.fault = "abort"
            with self._lock:
                self._log.append(rec)
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _error(status: int, message: str, code: str | None, headers=None) -> _Resp:
        extra = {"X-Error-Message": message.replace("\n", " ")[:1000], **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        return _Resp.of_json({"error": message}, status, extra)

    def _route(self, req: _Req, drop: bool) -> _Resp:
        seg, m = req.segments, req.method
        if req.server == "cdn":
            if len(seg) == 2 and seg[0] == "lfs" and m == "GET":
                return self._cdn_download(req, seg[1])
            if len(seg) == 2 and seg[0] == "upload" and m == "PUT":
                return self._cdn_upload(req, seg[1], drop)
        elif seg[:1] == ["api"]:
            return self._route_api(req, seg[1:])
        elif seg[:1] == ["datasets"] and len(seg) >= 3:
            repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
            if seg[2].endswith(".git") and seg[3:6] == ["info", "lfs", "objects"] and m == "POST":
                repo_id = repo_id[: -len(".git")]
                if seg[6:] == ["batch"]:
                    return self._lfs_batch(req, repo_id)
                if seg[6:] == ["verify"]:
                    return self._lfs_verify(req)
            if len(seg) >= 6 and seg[3] == "resolve" and m in ("GET", "HEAD"):
                return self._resolve(req, repo_id, unquote(seg[4]), unquote("/".join(seg[5:])))
        elif len(seg) >= 5 and seg[2] == "resolve" and m in ("GET", "HEAD"):  # a model repo's file
            repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
            return self._resolve(req, repo_id, unquote(seg[3]), unquote("/".join(seg[4:])))
        raise _HttpError(501, f"FakeHub {req.server}: not implemented: {m} {req.path}")

    def _route_api(self, req: _Req, seg: list[str]) -> _Resp:
        m = req.method
        if seg == ["validate-yaml"] and m == "POST":
            return _Resp.of_json({"errors": [], "warnings": []})
        if seg == ["repos", "create"] and m == "POST":
            return self._api_create_repo(req)
        if len(seg) >= 5 and seg[0] == "datasets":
            repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
            action, rev, rest = seg[3], unquote(seg[4]), unquote("/".join(seg[5:])).strip("/")
            with self._lock:
                if action == "revision" and m == "GET":
                    return self._api_repo_info(req, repo_id, rev)
                if action == "tree" and m == "GET":
                    return self._api_tree(req, repo_id, rev, rest)
                if action == "paths-info" and m == "POST":
                    return self._api_paths_info(req, repo_id, rev)
                if action == "branch" and m == "POST":
                    return self._api_branch(req, repo_id, rev)
                if action == "preupload" and m == "POST":
                    return self._api_preupload(req, repo_id, rev)
                if action == "commit" and m == "POST":
                    return self._api_commit(req, repo_id, rev)
        raise _HttpError(501, f"FakeHub: not implemented: {m} {req.path}")

    def _require_write(self, req: _Req) -> None:
        if not req.authorized:
            raise _HttpError(401, "You must be authenticated to write (no token sent)")

    # ---------------------------------------------------------------------------- repos

    def _api_create_repo(self, req: _Req) -> _Resp:
        self._require_write(req)
        payload = req.json() or {}
        if payload.get("type") != "dataset" or not payload.get("name"):
            raise _HttpError(400, "FakeHub serves dataset repos only")
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        url = f"{self.url}/datasets/{repo_id}"
        with self._lock:
            if repo_id in self._repos:
                return _Resp.of_json({"error": "You already created this repo", "url": url}, 409)
            self.create_repo(repo_id, private=payload.get("visibility") == "private")
        return _Resp.of_json({"url": url, "name": repo_id})

    def _api_repo_info(self, req: _Req, repo_id: str, revision: str) -> _Resp:
        repo = self._repo(repo_id, req)
        sha, _ = self._tree(repo, revision)
        return _Resp.of_json({"id": repo_id, "sha": sha, "private": repo.private})

    def _api_branch(self, req: _Req, repo_id: str, branch: str) -> _Resp:
        self._require_write(req)
        repo = self._repo(repo_id, req)
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
        start = (req.json() or {}).get("startingPoint") or "main"
        repo.branches[branch] = self._tree(repo, start)[0]
        return _Resp(200)

    @staticmethod
    def _entry(path: str, blob: _Blob | None) -> dict:
        if blob is None:
            return {"type": "directory", "oid": "0" * 40, "size": 0, "path": path}
        e: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs_sha256:
            e["lfs"] = {"oid": blob.lfs_sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        return e

    @staticmethod
    def _folders(tree: dict[str, _Blob]) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in tree for i in range(1, p.count("/") + 1)}

    def _api_tree(self, req: _Req, repo_id: str, revision: str, path: str) -> _Resp:
        _, tree = self._tree(self._repo(repo_id, req), revision)
        folders = self._folders(tree)
        if path and path not in folders:
            raise _HttpError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        prefix = f"{path}/" if path else ""
        names = [p for p in [*tree, *folders] if p.startswith(prefix)]
        if not _truthy(req.q("recursive")):
            names = [p for p in names if "/" not in p[len(prefix) :]]
        names.sort(key=lambda p: (p not in folders, p))  # folders first: a stable paging order
        start = int(req.q("cursor") or 0)
        page = names[start : start + self.tree_page_size]
        headers = {}
        if start + self.tree_page_size < len(names):
            params = {k: v[-1] for k, v in req.query.items() if k != "cursor"}
            params["cursor"] = str(start + self.tree_page_size)
            headers["Link"] = f'<{self.url}{req.path}?{urlencode(params)}>; rel="next"'
        return _Resp.of_json([self._entry(p, tree.get(p)) for p in page], headers=headers)

    def _api_paths_info(self, req: _Req, repo_id: str, revision: str) -> _Resp:
        _, tree = self._tree(self._repo(repo_id, req), revision)
        form = parse_qs(req.body.decode(), keep_blank_values=True)
        folders = self._folders(tree)
        paths = dict.fromkeys(p.strip("/") for p in form.get("paths", []))
        return _Resp.of_json(
            [self._entry(p, tree.get(p)) for p in paths if p in tree or p in folders]
        )

    # ---------------------------------------------------------------------------- uploads

    def _api_preupload(self, req: _Req, repo_id: str, revision: str) -> _Resp:
        self._require_write(req)
        sha, tree = self._tree(self._repo(repo_id, req), revision)
        files = []
        for f in (req.json() or {}).get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            lfs = self._is_lfs(int(f["size"]), sample)
            old = tree.get(f["path"])
            oid = None if old is None else (old.lfs_sha256 or old.git_oid)
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return _Resp.of_json({"files": files, "commitOid": sha})

    def _lfs_batch(self, req: _Req, repo_id: str) -> _Resp:
        self._require_write(req)
        payload = req.json() or {}
        base = f"{self.url}/datasets/{repo_id}.git/info/lfs/objects"
        objects = []
        with self._lock:
            self._repo(repo_id, req)
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], obj["size"]
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if f"lfs:{oid}" not in self._objects:  # else: no actions, the client skips it
                    entry["actions"] = {
                        "upload": {"href": f"{self.cdn_url}/upload/{oid}"},
                        "verify": {"href": f"{base}/verify"},
                    }
                objects.append(entry)
        return _Resp.of_json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _cdn_upload(self, req: _Req, oid: str, drop: bool) -> _Resp:
        if not _SHA256_RE.match(oid) or hashlib.sha256(req.body).hexdigest() != oid:
            raise _HttpError(400, "Uploaded content does not match its sha256 oid")
        with self._lock:
            if not drop:
                self._objects[f"lfs:{oid}"] = req.body
        return _Resp(200)

    def _lfs_verify(self, req: _Req) -> _Resp:
        payload = req.json() or {}
        with self._lock:
            data = self._objects.get(f"lfs:{payload.get('oid')}")
        if data is None or len(data) != payload.get("size"):
            raise _HttpError(404, f"LFS object {payload.get('oid')} not found")
        return _Resp.of_json({})

    def _api_commit(self, req: _Req, repo_id: str, branch: str) -> _Resp:
        self._require_write(req)
        repo = self._repo(repo_id, req)
        lines = [json.loads(ln) for ln in req.body.decode().splitlines() if ln.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The commit payload must start with a header line")
        if branch not in repo.branches:
            raise _HttpError(400, f"Invalid rev id: {branch} is not a branch")
        parent = repo.branches[branch]
        tree = dict(repo.commits[parent])
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                tree[path] = self._store(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                stored = self._objects.get(f"lfs:{value.get('oid')}")
                if stored is None:
                    raise _HttpError(400, f"LFS pointer to a missing object: {path}")
                tree[path] = self._lfs_blob(value["oid"], len(stored))
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise _HttpError(404, f"No such file: {path}", "EntryNotFound")
            else:
                raise _HttpError(400, f"Unknown commit operation: {key}")
        sha = self._new_commit(repo, tree, parent=parent, branch=branch)
        url = f"{self.url}/datasets/{repo_id}/commit/{sha}"
        return _Resp.of_json({"success": True, "commitOid": sha, "commitUrl": url})

    # ---------------------------------------------------------------------------- downloads

    def _served_bytes(self, blob: _Blob) -> bytes:
        with self._lock:
            return self._corrupted.get(blob.key, self._objects[blob.key])

    @staticmethod
    def _ranged(req: _Req, data: bytes, headers: dict[str, str]) -> _Resp:
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", req.range or "")
        if not m or not (m.group(1) or m.group(2)):
            return _Resp(200, headers, data)  # no (or an unsupported) Range: the whole file
        size = len(data)
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:
            start, end = max(size - int(m.group(2)), 0), size - 1
        if start >= size or end < start:
            return _Resp(416, {**headers, "Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return _Resp(206, headers, data[start : end + 1])

    def _resolve(self, req: _Req, repo_id: str, revision: str, path: str) -> _Resp:
        with self._lock:
            sha, tree = self._tree(self._repo(repo_id, req), revision)
            blob = tree.get(path)
        headers = {"X-Repo-Commit": sha}
        if blob is None:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        if blob.lfs_sha256 is None:
            return self._ranged(req, self._served_bytes(blob), {**headers, "ETag": blob.git_oid})
        name = quote(path.rsplit("/", 1)[-1])
        location = f"{self.cdn_url}/lfs/{blob.lfs_sha256}?filename={name}"
        # What a client's HEAD reads from the redirect, since it does not follow it to the cdn.
        linked = {"X-Linked-Etag": f'"{blob.lfs_sha256}"', "X-Linked-Size": str(blob.size)}
        return _Resp(302, {**headers, **linked, "Location": location})

    def _cdn_download(self, req: _Req, oid: str) -> _Resp:
        with self._lock:
            if f"lfs:{oid}" not in self._objects:
                raise _HttpError(404, "NoSuchKey")
        return self._ranged(req, self._served_bytes(self._lfs_blob(oid, 0)), {})


# --------------------------------------------------------------------------------------------------
# Client environment
# --------------------------------------------------------------------------------------------------


def fake_hub_env(monkeypatch: Any, tmp_path: Path, hub: FakeHub) -> None:
    """Point huggingface_hub (and relabel-store's cache) at `hub` and `tmp_path`.

    huggingface_hub derives a few settings from the environment once, at import
    (`huggingface_hub.constants`); for this process they are set where they are read, and the
    variables too (for subprocesses, which import afresh):

    * HF_ENDPOINT: `constants.ENDPOINT` and the download URL template derived from it;
    * HF_HUB_DISABLE_XET: otherwise `create_commit` uploads through Xet when `hf_xet` is
      importable, a client-side decision no server answer can change;
    * HF_HUB_DISABLE_TELEMETRY: otherwise building the user agent fetches a registry of agent
      harnesses from the endpoint, a stray request in the counts;
    * HF_HUB_OFFLINE off (:func:`set_offline` turns it on);
    * HF_TOKEN (read at call time), HF_HOME and RELABEL_STORE_CACHE under `tmp_path`, so nothing
      is read from or written to the user's caches.

    `monkeypatch` undoes everything at teardown.
    """
    from huggingface_hub import constants

    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_TOKEN": TEST_TOKEN,
        "HF_HOME": str(tmp_path / "hf_home"),
        "RELABEL_STORE_CACHE": str(tmp_path / "relabel-cache"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def set_offline(monkeypatch: Any, offline: bool = True) -> None:
    """Flip huggingface_hub's offline mode inside a test (env var and the import-time constant)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def iter_fake_hub(monkeypatch: Any, tmp_path: Path, **hub_kwargs: Any) -> Generator[FakeHub]:
    """A started `FakeHub` with `fake_hub_env` applied, as a pytest fixture body::

    @pytest.fixture
    def hub(monkeypatch, tmp_path):
        yield from iter_fake_hub(monkeypatch, tmp_path)
    """
    from huggingface_hub.utils import close_session

    with FakeHub(**hub_kwargs) as hub:
        fake_hub_env(monkeypatch, tmp_path, hub)
        try:
            yield hub
        finally:
            close_session()  # the shared client's keep-alive connections to this server
