"""The InfluxDB 1.x HTTP API over urllib3: ``/write``, ``/query`` (also 2.x/3.x v1-compat), ``/ping``.

Credentials travel only in the ``Authorization`` header (HTTP Basic for 1.x user/password,
``Token`` for 2.x/3.x), never in a URL, so they appear in no log line and no error.
Every call has a timeout; urllib3 never retries on its own (the delivery decides).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import urllib3

from carbond.errors import StoreError
from carbond.store.errors import classify_status, classify_transport, server_message
from carbond.store.urls import StoreUrl

_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class InfluxHttp:
    def __init__(self, url: StoreUrl, *, token: str = "", timeout_s: float = 10.0, query_timeout_s: float = 120.0,
                 ca_certs: str | None = None, gzip_level: int = 1) -> None:
        self.target = url
        self.where = url.redacted()
        self._gzip_level = gzip_level
        self._headers: dict[str, str] = {"User-Agent": "carbond"}
        if url.username:
            pair = f"{url.username}:{url.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif token:
            self._headers["Authorization"] = f"Token {token}"
        self._write_timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)
        self._query_timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=query_timeout_s)
        kwargs: dict[str, Any] = {"ca_certs": ca_certs} if ca_certs else {}
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=4, retries=False, **kwargs)

    def _url(self, path: str, params: dict[str, str]) -> str:
        return f"{self.target.base_url}{path}?{urlencode({k: v for k, v in params.items() if v})}"

    # --- writes ---------------------------------------------------------------------------
    def write(self, body: bytes, *, database: str, rp: str = "") -> None:
        """POST line protocol (``precision=ns``, gzip). Raises a classified WriteError."""
        payload = gzip.compress(body, compresslevel=self._gzip_level) if self._gzip_level else body
        headers = dict(self._headers, **{"Content-Type": "text/plain; charset=utf-8"})
        if self._gzip_level:
            headers["Content-Encoding"] = "gzip"
        url = self._url("/write", {"db": database, "rp": rp, "precision": "ns"})
        try:
            resp = self._pool.request("POST", url, body=payload, headers=headers, timeout=self._write_timeout,
                                      preload_content=True, redirect=False)
        except _TRANSPORT_ERRORS as exc:
            raise classify_transport(exc, self.where) from exc
        if resp.status in (200, 204):
            return
        raise classify_status(resp.status, server_message(resp.data, resp.headers), self.where, resp.headers)

    # --- queries --------------------------------------------------------------------------
    def _query_request(self, statement: str, database: str, params: dict[str, str], stream: bool) -> Any:
        url = self._url("/query", {"db": database, "epoch": "ns", **params})
        headers = dict(self._headers, **{"Content-Type": "application/x-www-form-urlencoded"})
        try:
            resp = self._pool.request("POST", url, body=urlencode({"q": statement}), headers=headers,
                                      timeout=self._query_timeout, preload_content=not stream, redirect=False)
        except _TRANSPORT_ERRORS as exc:
            raise StoreError(f"store {self.where}: query failed: {classify_transport(exc, self.where)}") from exc
        if resp.status != 200:
            data = resp.data if not stream else resp.read()
            raise StoreError(f"store {self.where}: query failed: HTTP {resp.status}: "
                             f"{server_message(data, resp.headers)}")
        return resp

    def query(self, statement: str, database: str = "") -> list[dict[str, Any]]:
        """Run InfluxQL; the ``series`` of each statement (an error in any statement raises)."""
        resp = self._query_request(statement, database, {}, stream=False)
        try:
            doc = json.loads(resp.data)
        except ValueError as exc:
            raise StoreError(f"store {self.where}: query answer is not JSON") from exc
        return [_statement_series(r, self.where) for r in doc.get("results", [])] or [[]]

    def query_chunks(self, statement: str, database: str = "", chunk_size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
        """Stream a single-statement query (``chunked=true``): the series of each chunk, in order."""
        resp = self._query_request(statement, database, {"chunked": "true", "chunk_size": str(chunk_size)}, stream=True)
        buffer = b""
        try:
            for data in resp.stream(1 << 16):
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield from _chunk_series(line, self.where)
            if buffer.strip():
                yield from _chunk_series(buffer, self.where)
        except _TRANSPORT_ERRORS as exc:
            raise StoreError(f"store {self.where}: query failed: {classify_transport(exc, self.where)}") from exc
        finally:
            resp.release_conn()

    def ping(self) -> str:
        """The server's version (``X-Influxdb-Version``); raises a classified WriteError when down."""
        try:
            resp = self._pool.request("GET", f"{self.target.base_url}/ping", headers=self._headers,
                                      timeout=self._write_timeout, redirect=False)
        except _TRANSPORT_ERRORS as exc:
            raise classify_transport(exc, self.where) from exc
        if resp.status not in (200, 204):
            raise classify_status(resp.status, server_message(resp.data, resp.headers), self.where, resp.headers)
        return resp.headers.get("X-Influxdb-Version", "")

    def close(self) -> None:
        self._pool.clear()


def _statement_series(result: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if result.get("error"):
        raise StoreError(f"store {where}: query failed: {result['error']}")
    return list(result.get("series", []))


def _chunk_series(line: bytes, where: str) -> Iterator[list[dict[str, Any]]]:
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise StoreError(f"store {where}: query answer is not JSON") from exc
    if doc.get("error"):
        raise StoreError(f"store {where}: query failed: {doc['error']}")
    for r in doc.get("results", []):
        yield _statement_series(r, where)
