"""The InfluxDB store: 1.x (``influxdb+v1[s]://``) and 2.x / 3.x / Cloud (``influxdb+v2[s]://``).

- Writes: 1.x ``POST /write?db=&rp=&precision=ns`` with a gzip line-protocol body over urllib3;
  2.x/3.x through influxdb-client's ``WriteApi`` (imported only for v2 URLs).
- Reads: InfluxQL over ``/query`` for every version (2.x and 3.x answer it through their
  v1-compatibility API, the bucket standing in for the database).
- Errors: classified once (:mod:`carbond.store.errors`); the spool's delivery acts on them.

Constructing a store does no network I/O: an unreachable server at start is found by the
first write, which the delivery retries.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from carbond.errors import UsageError
from carbond.store import influxql
from carbond.store.base import Point, Query, Row
from carbond.store.errors import RejectedWriteError
from carbond.store.influx_http import InfluxHttp
from carbond.store.lineprotocol import encode
from carbond.store.urls import StoreUrl, parse_store_url


class InfluxStore:
    """A :class:`~carbond.store.base.Store` on InfluxDB. ``write_lines`` is what the delivery calls."""

    def __init__(self, url: StoreUrl | str, *, token: str = "", timeout_s: float = 10.0, ca_certs: str | None = None) -> None:
        self.target = parse_store_url(url) if isinstance(url, str) else url
        if self.target.kind != "influxdb":
            raise UsageError(f"store {self.target.redacted()}: not an InfluxDB URL")
        self.url = self.target.redacted()
        self._token = token
        self._timeout_s = timeout_s
        self._ca_certs = ca_certs
        self._http = InfluxHttp(self.target, token=token, timeout_s=timeout_s, ca_certs=ca_certs)
        self._v2: Any = None

    @property
    def database(self) -> str:
        return self.target.database

    # --- writes ---------------------------------------------------------------------------
    def write(self, points: Iterable[Point]) -> None:
        """Encode and send now (no spool). Raises a classified WriteError."""
        lines = [line for line in map(encode, points) if line is not None]
        if lines:
            self.write_lines(lines)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Send line-protocol lines (no trailing newlines) in one request."""
        body = ("\n".join(lines) + "\n").encode()
        if self.target.version == 1:
            self._http.write(body, database=self.target.database, rp=self.target.rp)
            return
        if self._v2 is None:
            from carbond.store.influx_v2 import V2Writer

            self._v2 = V2Writer(self.target, token=self._token, timeout_s=self._timeout_s, ca_certs=self._ca_certs)
        self._v2.write(body)

    def create_database(self) -> None:
        """``CREATE DATABASE`` on 1.x (idempotent). 2.x buckets are not created by carbond."""
        if self.target.version != 1:
            raise RejectedWriteError(f"{self.url}: bucket {self.target.database!r} not found; create it with "
                                     f"`influx bucket create -n {self.target.database} -o {self.target.org}`",
                                     reason="database_not_found", status=404)
        self._http.query(f"CREATE DATABASE {influxql.ident(self.target.database)}")

    def ping(self) -> str:
        return self._http.ping()

    # --- reads ----------------------------------------------------------------------------
    def execute(self, statement: str) -> list[list[dict[str, Any]]]:
        """Run InfluxQL (``;``-separated statements) on the URL's database: the series of each statement."""
        return self._http.query(statement, self.target.database)

    def _query(self, statement: str) -> list[dict[str, Any]]:
        return self.execute(statement)[0]

    def query(self, q: Query) -> list[Row]:
        return influxql.rows(q, self._query(influxql.select_statement(q, self.target.rp)))

    def measurements(self) -> list[str]:
        return influxql.names(self._query("SHOW MEASUREMENTS"))

    def _scan_one(self, measurement: str, since_ns: int | None, until_ns: int | None) -> Iterator[Point]:
        fields = influxql.field_keys(self._query(f"SHOW FIELD KEYS FROM {influxql.source(measurement, self.target.rp)}"))
        if not fields:
            return iter(())
        statement = influxql.scan_statement(measurement, since_ns, until_ns, self.target.rp)
        return influxql.scan_points(measurement, fields, self._http.query_chunks(statement, self.target.database))

    def scan(self, measurement: str | None, since_ns: int | None = None, until_ns: int | None = None) -> Iterator[Point]:
        """Points in time order (ties by measurement, then tags), streamed in chunks."""
        if measurement:
            yield from self._scan_one(measurement, since_ns, until_ns)
            return
        streams = [self._scan_one(m, since_ns, until_ns) for m in self.measurements()]
        yield from heapq.merge(*streams, key=lambda p: (p.time_ns, p.measurement, influxql.tags_json(p.tags)))

    def close(self) -> None:
        if self._v2 is not None:
            self._v2.close()
            self._v2 = None
        self._http.close()
