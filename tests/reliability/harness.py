"""The reliability suite's harness (its fixtures are registered by ``conftest.py`` next to it).

- :class:`LiveDaemon`: a real ``python -m carbond run`` process (stderr to a file, so a chatty
  daemon can never block on a full pipe), its status read over the real socket, stopped with
  SIGTERM (its own "stopped after N ticks; M points written" line is the ground truth) or
  killed with SIGKILL.
- :class:`Faults`: what the fault-injecting proxy (``tests/fakes/influx_proxy.py``) does to each
  ``/write`` in front of a real InfluxDB 1.6.7 — answer the next N with a status, delay the
  answer past the client's timeout, or hold a request in flight — and every write it saw,
  decoded into lines, with the status it got.
- :func:`assert_ticks_exact`: the check every daemon-level test ends with — exactly one ``host``
  point per measured tick, every device series at exactly those times, no two points of a
  series at one time, times strictly increasing, and each host point the sum of its devices.

Long variants are marked ``@pytest.mark.slow`` and skipped unless ``CARBOND_SLOW=1`` or
``-m slow`` is given (the default run of this directory stays under about three minutes).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import influx_servers
from fakes.influx_proxy import Answer, FaultProxy, Request
from fakes.influx_servers import Influxd

from carbond import ipc
from carbond.errors import CarbondError
from tests.conftest import Carbond, wait_for

influx_server, influx_db, influxd_factory = influx_servers.influx_server, influx_servers.influx_db, influx_servers.influxd_factory

DEVICES_2_GPUS = ("cpu0", "gpu0", "gpu1", "ram")  # CARBOND_SENSORS_NVML=false, --simulate-gpus 2, no RAPL here


def slow_enabled(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return bool(os.environ.get("CARBOND_SLOW")) or ("slow" in expr and "not slow" not in expr)


@pytest.fixture(autouse=True)
def _long_variants_only_when_asked(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slow") and not slow_enabled(request.config):
        pytest.skip("long variant: run with CARBOND_SLOW=1 (or -m slow)")


# --- the daemon -----------------------------------------------------------------------------------
@dataclass
class Stopped:
    ticks: int  # ticks of this life, the baseline included: ticks - 1 intervals were measured
    written: int  # points this life moved from its journal into the store (or the spool in front of it)
    stderr: str
    returncode: int


class LiveDaemon:
    """One ``carbond run`` process after another on the same state (journal, spool, socket)."""

    def __init__(self, carbond: Carbond, url: str, *, interval_s: float | None = 0.25, gpus: int = 2,
                 args: Sequence[str] = (), flush_interval_s: float | None = 0.5) -> None:
        """``interval_s`` / ``flush_interval_s`` None: leave them to the config file (a flag or the environment
        would override it, and a reload could not change them)."""
        self.carbond = carbond
        self.url = url
        self.socket = carbond.socket
        interval = ["--interval", str(interval_s)] if interval_s is not None else []
        self.args = ["run", "--store", url, *interval, "--simulate-gpus", str(gpus), "--socket", self.socket, *args]
        if flush_interval_s is not None:
            carbond.env.setdefault("CARBOND_STORE_FLUSH_INTERVAL_S", str(flush_interval_s))
        self.proc: subprocess.Popen | None = None
        self.started_ns = 0
        self.lives = 0
        self._log: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return self.carbond.env

    def start(self, wait: bool = True) -> LiveDaemon:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.lives += 1
        self._log = self.carbond.tmp / f"daemon-{self.lives}.log"
        self.started_ns = time.time_ns()
        with self._log.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "carbond", *self.args], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ticks(2)
        return self

    def stderr(self) -> str:
        return self._log.read_text(errors="replace") if self._log and self._log.exists() else ""

    def status(self) -> dict[str, Any] | None:
        try:
            return ipc.request(self.socket, "status", timeout_s=20)
        except (CarbondError, OSError, ValueError):
            return None

    def ticks(self) -> int:
        doc = self.status()
        return doc["stats"]["ticks"] if doc else 0

    def wait_ticks(self, n: int, timeout_s: float = 90) -> dict[str, Any]:
        """Wait until this life has made ``n`` ticks (the baseline counts); its status then."""
        def ready() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.stderr()[-3000:]}")
            doc = self.status()
            return doc if doc and doc["stats"]["ticks"] >= n else None
        return wait_for(ready, timeout_s=timeout_s, interval_s=0.05)  # type: ignore[return-value]

    def wait_delivered(self, timeout_s: float = 120) -> dict[str, Any]:
        """Wait until nothing waits in the journal or the spool (every point so far is in the store)."""
        def empty() -> dict[str, Any] | None:
            doc = self.status()
            if not doc:
                return None
            spool = doc["delivery"].get("spool_points", 0)
            return doc if spool == 0 and doc["stats"]["pending_points"] == 0 else None
        return wait_for(empty, timeout_s=timeout_s, interval_s=0.1)  # type: ignore[return-value]

    def cli_status(self) -> dict[str, Any]:
        """``carbond status --json`` (the real CLI, as a user would ask)."""
        r = self.carbond("status", "--json", "--socket", self.socket, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)

    def stop(self, timeout_s: float = 120) -> Stopped:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"the daemon did not stop within {timeout_s}s:\n{self.stderr()[-3000:]}") from None
        err = self.stderr()
        m = re.search(r"stopped after (\d+) ticks; (\d+) points written", err)
        assert m, err[-3000:]
        return Stopped(int(m.group(1)), int(m.group(2)), err, self.proc.returncode)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def live_daemons(carbond: Carbond) -> Iterator[Callable[..., LiveDaemon]]:
    made: list[LiveDaemon] = []

    def make(url: str, **kw: Any) -> LiveDaemon:
        d = LiveDaemon(carbond, url, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


# --- the fault-injecting proxy ---------------------------------------------------------------------
def body_lines(req: Request) -> list[str]:
    body = req.body
    if req.headers.get("Content-Encoding", "").lower() == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return [line for line in body.decode().split("\n") if line]


@dataclass
class Seen:
    lines: list[str]
    status: int
    time_s: float


class Faults:
    """The proxy's behaviour for ``/write`` (everything else passes). Thread-safe."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.lock = threading.Lock()
        self.writes: list[Seen] = []
        self._answers: list[tuple[Callable[[list[str]], bool], Answer]] = []  # answered in order, once each
        self.delay_s = 0.0  # forward, then answer this much later (past the client's timeout)
        self.hold_s = 0.0  # hold a write this long before forwarding it
        self.in_flight = threading.Event()  # set when a held write arrives
        self.held: list[list[str]] = []  # the lines of each held write
        proxy.fault = self

    def answer_next(self, n: int, status: int, headers: dict[str, str] | None = None, body: bytes = b"",
                    when: Callable[[list[str]], bool] = lambda _lines: True) -> None:
        """Answer the next ``n`` writes for which ``when(lines)`` holds with ``status`` (no forwarding)."""
        with self.lock:
            self._answers.extend([(when, (status, headers or {"Content-Type": "application/json"}, body))] * n)

    def clear(self) -> None:
        """Answers not given yet are forgotten: every write passes from now on."""
        with self.lock:
            self._answers.clear()

    def pending(self) -> int:
        with self.lock:
            return len(self._answers)

    def statuses(self) -> Counter[int]:
        with self.lock:
            return Counter(s.status for s in self.writes)

    def lines_answered(self, status: int) -> list[str]:
        with self.lock:
            return [line for s in self.writes if s.status == status for line in s.lines]

    def __call__(self, req: Request) -> Answer | None:
        if req.path != "/write":
            return None
        lines = body_lines(req)
        with self.lock:
            hit = next((i for i, (when, _) in enumerate(self._answers) if when(lines)), None)
            answer = self._answers.pop(hit)[1] if hit is not None else None
            delay_s, hold_s = self.delay_s, self.hold_s
        if answer is None:
            if hold_s:
                with self.lock:
                    self.held.append(lines)
                self.in_flight.set()
                time.sleep(hold_s)
            answer = self.proxy._forward(req, req.path + (f"?{req.query}" if req.query else ""))
            if delay_s:
                time.sleep(delay_s)
        with self.lock:
            self.writes.append(Seen(lines, answer[0], time.monotonic()))
        return answer


@pytest.fixture
def faulty_proxy() -> Iterator[Callable[[Influxd], Faults]]:
    proxies: list[FaultProxy] = []

    def make(server: Influxd) -> Faults:
        proxy = FaultProxy(server.base_url)
        proxies.append(proxy)
        return Faults(proxy)

    yield make
    for p in proxies:
        p.close()


def proxied_url(faults: Faults, database: str) -> str:
    return f"influxdb+v1://127.0.0.1:{faults.proxy.port}/{database}"


# --- what arrived ----------------------------------------------------------------------------------
@dataclass
class Stored:
    tags: dict[str, str]
    time_ns: int
    fields: dict[str, float] = field(default_factory=dict)


def stored(server: Influxd, database: str, measurement: str) -> list[Stored]:
    """Every point of a measurement, read back from InfluxDB with InfluxQL (tags, time, non-null fields)."""
    out: list[Stored] = []
    for s in server.series(f'SELECT * FROM "{measurement}" GROUP BY *', database):
        cols = s["columns"]
        for row in s["values"]:
            fields = {c: v for c, v in zip(cols[1:], row[1:], strict=True) if v is not None}
            out.append(Stored(dict(s.get("tags") or {}), int(row[0]), fields))
    out.sort(key=lambda p: (p.time_ns, sorted(p.tags.items())))
    return out


def assert_ticks_exact(server: Influxd, database: str, measured: int | None, devices: Sequence[str] = DEVICES_2_GPUS,
                       *, since_ns: int = 0, until_ns: int | None = None) -> list[int]:
    """Exactly ``measured`` host points in [since_ns, until_ns], each device at exactly those times, once each.

    ``measured`` None checks everything but the count. Returns the host points' times (strictly increasing).
    """
    def inside(p: Stored) -> bool:
        return p.time_ns >= since_ns and (until_ns is None or p.time_ns <= until_ns)

    hosts = [p for p in stored(server, database, "host") if inside(p)]
    times = [p.time_ns for p in hosts]
    assert measured is None or len(times) == measured, f"{len(times)} host points stored, {measured} ticks measured"
    assert len(set(times)) == len(times), "two host points at one time"
    assert times == sorted(times)
    per_device: dict[str, list[int]] = defaultdict(list)
    energy_at: dict[int, float] = defaultdict(float)
    for d in stored(server, database, "device"):
        if inside(d):
            per_device[d.tags["device"]].append(d.time_ns)
            energy_at[d.time_ns] += d.fields["energy_j"]
    assert sorted(per_device) == sorted(devices)
    for name, ts in per_device.items():
        assert len(ts) == len(set(ts)), f"{name}: two points at one time"
        assert sorted(ts) == times, f"{name}: {len(ts)} points, {len(times)} host points"
    for h in hosts:
        assert h.fields["energy_j"] == pytest.approx(energy_at[h.time_ns], rel=1e-9, abs=1e-9)
        assert h.fields["energy_j"] >= 0
    return times


def count(server: Influxd, database: str, measurement: str, fld: str = "energy_j") -> int:
    return server.count(database, measurement, fld)


def count_all(server: Influxd, database: str) -> int:
    """Points in every measurement (``job`` and ``run`` too: a daemon adopts env-tagged processes of anything on the
    machine); per measurement the largest per-field count, as every point has the measurement's always-set fields."""
    total = 0
    for s in server.series("SHOW MEASUREMENTS", database):
        for (name,) in s["values"]:
            counts = server.series(f'SELECT count(*) FROM "{name}"', database)
            total += max(int(v) for v in counts[0]["values"][0][1:] if v is not None) if counts else 0
    return total
