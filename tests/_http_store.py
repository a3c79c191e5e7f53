"""A loopback HTTP server for a store folder (fsspec's HTTP backend reads it), with basic auth
and faults: a stall mid-body, or a connection dropped mid-body."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class HttpStore:
    root: Path
    user: str = "reader"
    password: str = "hunter2-s3cret"
    stall_s: float = 0.0  # pause this long after half the body of every GET of a shard
    drop: bool = False  # close the connection after half the body of every GET of a shard
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def start(self) -> HttpStore:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _authorized(self) -> bool:
                want = base64.b64encode(f"{owner.user}:{owner.password}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {want}"

            def _answer(self, body: bool) -> None:
                owner.requests.append(f"{self.command} {self.path}")
                if not self._authorized():
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = owner.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                start, stop = 0, len(data)
                rng = self.headers.get("Range")
                if rng:
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start, stop = int(a), min(int(b) + 1 if b else len(data), len(data))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(stop - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                part = data[start:stop]
                shard = "/c." in self.path and self.path.split("/")[-2] in ("indices", "values")
                if shard and (owner.stall_s or owner.drop):
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    if owner.drop:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    owner._stop.wait(owner.stall_s)
                    return
                self.wfile.write(part)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
