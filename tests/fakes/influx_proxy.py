"""A small fault-injecting HTTP proxy on 127.0.0.1 in front of a real server.

Every request is counted (by method and path). A ``fault`` callable sees each request and
either answers it itself (status, headers, body) or lets it through to the upstream server::

    proxy = FaultProxy(upstream="http://127.0.0.1:8086")
    proxy.fault = lambda req: (429, {"Retry-After": "1"}, b"slow down") if req.path == "/write" else None
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]
    body: bytes
    time_s: float


Answer = tuple[int, dict[str, str], bytes]


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.fault: Callable[[Request], Answer | None] = lambda _req: None
        self.requests: list[Request] = []
        self.answers: list[tuple[Request, int]] = []  # each request with the status it got
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                req = Request(self.command, path, query, dict(self.headers.items()), body, time.monotonic())
                with proxy._lock:
                    proxy.requests.append(req)
                    proxy.counts[f"{self.command} {path}"] += 1
                answer = proxy.fault(req) or proxy._forward(req, self.path)
                status, headers, payload = answer
                with proxy._lock:
                    proxy.answers.append((req, status))
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def _forward(self, req: Request, raw_path: str) -> Answer:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(req.method, raw_path, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        except OSError as exc:
            return 502, {"Content-Type": "text/plain"}, f"proxy: upstream unreachable: {exc}".encode()
        finally:
            conn.close()

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.counts[f"{method} {path}"]

    def writes(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path in ("/write", "/api/v2/write")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
