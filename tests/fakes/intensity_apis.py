"""A local HTTP server answering like Electricity Maps v3, the GB Carbon Intensity API and WattTime v3.

One server speaks all three (their paths do not overlap), bound to 127.0.0.1 on a port the
kernel picks. Answers follow each API's documented JSON shape, computed from ``value(t)``
(g/kWh for the hour or half hour starting at ``t``) around the fake's ``now``. Switch
``mode`` to make every data request fail the way real services do:

- ``ok``; ``401``; ``429`` (with ``retry_after``); ``500``/``503``;
- ``malformed`` (200 with a body that is not JSON); ``shape`` (200, JSON of the wrong shape);
- ``hang`` (no answer until ``close()`` or ``release.set()``: the client's timeout fires first);
- ``drop`` (the connection closes without an answer).

``requests`` records (method, path, query, headers with lower-case names) of every request, so tests can check the
auth headers and that ticks never reach the network.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

EM_TOKEN = "em-test-token"
WT_USER, WT_PASSWORD = "wt-user", "wt-pass"
LB_PER_MWH_PER_G_PER_KWH = 1 / 0.45359237


def default_value(t: datetime) -> float:
    """A day shape: 100 + 10 × the hour of the day (UTC)."""
    return 100.0 + 10.0 * t.hour


def iso_em(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def iso_uk(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")


def parse_uk(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)


def parse_iso(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def floor(t: datetime, step_s: int) -> datetime:
    return datetime.fromtimestamp(int(t.timestamp() // step_s) * step_s, UTC)


class FakeIntensityApis:
    def __init__(self, now: datetime, value: Callable[[datetime], float] = default_value) -> None:
        self.now = now
        self.value = value
        self.mode = "ok"
        self.retry_after: str | None = "120"
        self.requests: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = []
        self.release = threading.Event()
        self.logins = 0
        self.valid_tokens: set[str] = set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left: nothing to report

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), name="fake-intensity-apis",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def data_requests(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r[1] != "/login")

    # --- plumbing -------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query)
        with self._lock:
            self.requests.append(("GET", parts.path, query, {k.lower(): v for k, v in h.headers.items()}))
        if parts.path == "/login":
            return self._login(h)
        if self.mode != "ok":
            return self._fail(h)
        try:
            status, body = self._route(parts.path, query, h.headers)
        except (KeyError, ValueError) as exc:
            status, body = 400, {"message": f"bad request: {exc}"}
        self._send(h, status, json.dumps(body).encode())

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _fail(self, h: BaseHTTPRequestHandler) -> None:
        mode = self.mode
        if mode == "hang":
            self.release.wait(30)
            self._send(h, 503, b'{"message": "too late"}')
        elif mode == "drop":
            h.close_connection = True
            h.connection.close()
        elif mode == "malformed":
            self._send(h, 200, b'{"zone": "DE", "carbonIntensity": ')
        elif mode == "shape":
            self._send(h, 200, b'{"message": "an unexpected but valid JSON document", "data": 42}')
        elif mode == "429":
            self._send(h, 429, b'{"message": "rate limited"}', {"Retry-After": self.retry_after} if self.retry_after else {})
        else:
            self._send(h, int(mode), json.dumps({"message": f"HTTP {mode}"}).encode())

    def _login(self, h: BaseHTTPRequestHandler) -> None:
        expected = "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
        if h.headers.get("Authorization") != expected or self.mode == "401":
            return self._send(h, 401, b'{"message": "invalid credentials"}')
        with self._lock:
            self.logins += 1
            token = f"wt-token-{self.logins}"
            self.valid_tokens.add(token)
        self._send(h, 200, json.dumps({"token": token}).encode())

    def _route(self, path: str, q: dict[str, list[str]], headers: Any) -> tuple[int, Any]:
        if path.startswith("/v3/carbon-intensity/"):
            if headers.get("auth-token") != EM_TOKEN:
                return 401, {"message": "auth-token missing or wrong"}
            return 200, self._em(path.rsplit("/", 1)[1], q)
        if path.startswith("/v3/"):
            auth = headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.valid_tokens:
                return 401, {"message": "token missing, wrong or expired"}
            return 200, self._wt(path.rsplit("/", 1)[1], q)
        if path.startswith("/intensity/") or path.startswith("/regional/intensity/"):
            return 200, self._uk(path)
        return 404, {"message": f"no route {path}"}

    # --- Electricity Maps v3 ----------------------------------------------------------------
    def _em_entry(self, zone: str, t: datetime) -> dict[str, Any]:
        return {"zone": zone, "carbonIntensity": round(self.value(t)), "datetime": iso_em(t),
                "updatedAt": iso_em(self.now), "createdAt": iso_em(t), "emissionFactorType": "lifecycle",
                "isEstimated": t >= floor(self.now, 3600), "estimationMethod": None}

    def _em(self, endpoint: str, q: dict[str, list[str]]) -> dict[str, Any]:
        zone = q["zone"][0]
        hour = floor(self.now, 3600)
        if endpoint == "latest":
            return self._em_entry(zone, hour)
        if endpoint == "history":
            return {"zone": zone, "history": [self._em_entry(zone, hour - timedelta(hours=h)) for h in range(23, -1, -1)]}
        if endpoint == "past-range":
            start, end = parse_iso(q["start"][0]), parse_iso(q["end"][0])
            hours = int((end - floor(start, 3600)).total_seconds() // 3600)
            return {"zone": zone, "data": [self._em_entry(zone, floor(start, 3600) + timedelta(hours=h)) for h in range(hours)]}
        if endpoint == "forecast":
            n = int(q.get("horizonHours", ["24"])[0])
            return {"zone": zone, "forecast": [{"carbonIntensity": round(self.value(hour + timedelta(hours=h))),
                                                "datetime": iso_em(hour + timedelta(hours=h))} for h in range(n)],
                    "updatedAt": iso_em(self.now)}
        raise KeyError(endpoint)

    # --- GB Carbon Intensity ---------------------------------------------------------------------
    def _uk_periods(self, start: datetime, end: datetime, regional: bool) -> list[dict[str, Any]]:
        out = []
        t = floor(start, 1800)
        while t < end:
            v = round(self.value(t))
            intensity: dict[str, Any] = {"forecast": v, "index": "moderate"}
            if not regional:
                intensity["actual"] = v if t + timedelta(minutes=30) <= self.now else None
            item: dict[str, Any] = {"from": iso_uk(t), "to": iso_uk(t + timedelta(minutes=30)), "intensity": intensity}
            if regional:
                item["generationmix"] = [{"fuel": "gas", "perc": 40.0}, {"fuel": "wind", "perc": 60.0}]
            out.append(item)
            t += timedelta(minutes=30)
        return out

    def _uk(self, path: str) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        regional = parts[0] == "regional"
        if regional:
            parts = parts[1:]
        start = parse_uk(parts[1])
        end = start + timedelta(hours=48) if parts[2] == "fw48h" else parse_uk(parts[2])
        periods = self._uk_periods(start, end, regional)
        if not regional:
            return {"data": periods}
        region = int(parts[4])
        return {"data": {"regionid": region, "dnoregion": "UKPN London", "shortname": "London", "data": periods}}

    # --- WattTime v3 ------------------------------------------------------------------------------
    def _wt_points(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        t, out = floor(start, 300), []
        while t < end:
            out.append({"point_time": t.isoformat(), "value": round(self.value(t) * 2 * LB_PER_MWH_PER_G_PER_KWH, 3),
                        "version": "3.2"})
            t += timedelta(minutes=5)
        return out

    def _wt(self, endpoint: str, q: dict[str, list[str]]) -> dict[str, Any]:
        meta = {"region": q["region"][0], "signal_type": q["signal_type"][0], "units": "lbs_co2_per_mwh",
                "data_point_period_seconds": 300, "model": {"date": "2026-03-01"}}
        if endpoint == "forecast":
            start = floor(self.now, 300)
            end = start + timedelta(hours=int(q.get("horizon_hours", ["24"])[0]))
            return {"data": self._wt_points(start, end), "meta": {**meta, "generated_at": self.now.isoformat()}}
        if endpoint == "historical":
            return {"data": self._wt_points(parse_iso(q["start"][0]), parse_iso(q["end"][0])), "meta": meta}
        raise KeyError(endpoint)


@pytest.fixture
def intensity_apis() -> Iterator[FakeIntensityApis]:
    api = FakeIntensityApis(now=datetime(2026, 11, 30, 10, 20, tzinfo=UTC))
    yield api
    api.close()
