"""Spool → InfluxDB 1.6.7 (a real ``influxd``): delivery, outage, restart, classified errors, store init."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fakes import influx_servers
from fakes.influx_proxy import FaultProxy
from fakes.influx_servers import ADMIN_PASSWORD, ADMIN_USER, Influxd, free_port

from carbond.store import open_store
from carbond.store.base import Point, make_point
from carbond.store.delivery import DeliveryOptions, SpooledStore, SpoolOptions, dead_letter_path_for
from carbond.store.errors import RetryableWriteError
from carbond.store.influx import InfluxStore
from carbond.store.influx_init import init_influx
from tests.conftest import wait_for

S = 1_000_000_000
T0 = 1_700_000_000 * S
QUICK = DeliveryOptions(batch_points=500, backoff_initial_s=0.05, backoff_max_s=0.5)
ROOT = Path(__file__).parents[2]
influx_server, influx_db, influxd_factory = influx_servers.influx_server, influx_servers.influx_db, influx_servers.influxd_factory


def tick_points(i: int, n_gpus: int = 2) -> list[Point]:
    """One tick of daemon-like points at ``T0 + i`` seconds."""
    t = T0 + i * S
    pts = [make_point("device", {"host": "h", "device": f"gpu{g}", "kind": "gpu", "source": "counter"},
                      {"power_w": 100.0 + g + i % 7, "energy_j": 100.0 + i}, t) for g in range(n_gpus)]
    pts.append(make_point("host", {"host": "h", "region": "DE"}, {"energy_j": 10.0 * n_gpus + i, "co2_g": 0.5}, t))
    return pts


def spooled(url: str, tmp: Path, *, start: bool = True, **kw: object) -> SpooledStore:
    opts = SpoolOptions(tmp / "spool.db", delivery=kw.pop("delivery", QUICK), **kw)  # type: ignore[arg-type]
    if not start:
        return SpooledStore.open(InfluxStore(url), opts, start=False)
    store = open_store(url, spool=opts)
    assert isinstance(store, SpooledStore)
    return store


def stored(server: Influxd, db: str, measurement: str) -> list[list]:
    s = server.series(f'SELECT * FROM "{measurement}" GROUP BY *', db)
    return sorted([tuple(sorted(x["tags"].items())), *v] for x in s for v in x["values"])


class Recording(InfluxStore):
    """Remembers the lines of every acknowledged write, in order."""

    acked: list[str]

    def write_lines(self, lines: Sequence[str]) -> None:
        super().write_lines(lines)
        self.__dict__.setdefault("acked", []).extend(lines)


def test_delivery_lands_every_point_and_export_reads_them_back(influx_db, tmp_path):
    store = spooled(influx_db.url, tmp_path)
    written = [p for i in range(300) for p in tick_points(i)]
    for i in range(300):
        store.write(written[i * 3:(i + 1) * 3])
    assert store.wait_empty(60)
    assert store.counters().delivered_points == 900 and store.counters().write_errors == 0
    key = lambda p: (p.time_ns, p.measurement, sorted(p.tags.items()))  # noqa: E731
    assert sorted(store.scan(None), key=key) == sorted(written, key=key)
    store.close()
    proc = subprocess.run([sys.executable, "-m", "carbond", "export", "--store", influx_db.url, "--measurement", "host",
                           "--format", "jsonl"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")})
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(r["time_ns"], r["fields"]) for r in rows] == [(p.time_ns, dict(p.fields)) for p in written if p.measurement == "host"]


@pytest.mark.parametrize("outage_s", [1.0, pytest.param(60.0, marks=pytest.mark.slow)])
def test_outage_every_point_arrives_once_in_order(influxd_factory, tmp_path, outage_s):
    server = influxd_factory()
    db = server.create_database("carbond")
    sink = Recording(server.url(db))
    spool_opts = SpoolOptions(tmp_path / "spool.db", delivery=QUICK)
    store = SpooledStore.open(sink, spool_opts)
    stop_writing = threading.Event()
    ticks = []

    def writer() -> None:
        i = 0
        while not stop_writing.is_set():
            store.write(tick_points(i))
            ticks.append(i)
            i += 1
            time.sleep(0.005 if outage_s < 10 else 0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: store.counters().delivered_points > 100, 60)
        server.stop()  # the outage
        errors_before = store.counters().write_errors
        wait_for(lambda: store.counters().write_errors > errors_before and store.counters().spool_points > 300, 60)
        time.sleep(outage_s)
        server.start()
        wait_for(lambda: store.counters().delivered_points > 0 and len(ticks) > 600, 60)
    finally:
        stop_writing.set()
        thread.join()
    assert store.wait_empty(120)
    c = store.counters()
    n = len(ticks) * 3
    assert c.delivered_points == n and c.dropped_points == 0 and c.dead_letter_points == 0
    assert 1 <= c.write_errors < 20 + 4 * outage_s  # capped backoff (0.5 s here): no retry storm
    assert server.count(db, "device") == 2 * len(ticks) and server.count(db, "host") == len(ticks)
    times = [int(line.rsplit(" ", 1)[1]) for line in sink.acked]
    assert times == sorted(times) and len(set(sink.acked)) == n  # in order; each point acknowledged once
    store.close()


def test_kill_9_during_outage_then_the_spool_replays(influxd_factory, tmp_path):
    port = free_port()
    url = f"influxdb+v1://127.0.0.1:{port}/carbond"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from integration.test_influx_v1 import tick_points, spooled
        from pathlib import Path
        store = spooled({url!r}, Path({str(tmp_path)!r}))
        for i in range(200):
            store.write(tick_points(i))
        assert store.counters().spool_points == 600
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    server = influxd_factory(port=port)
    server.create_database("carbond")
    store = spooled(url, tmp_path)  # a fresh process would do exactly this at start
    assert store.wait_empty(60)
    assert server.count("carbond", "device") == 400 and server.count("carbond", "host") == 200
    store.close()


@pytest.fixture
def proxy_to(request) -> Iterator:
    proxies: list[FaultProxy] = []

    def make(server: Influxd) -> FaultProxy:
        proxies.append(FaultProxy(server.base_url))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def _proxied_url(proxy: FaultProxy, db: str, user: str = "", password: str = "") -> str:
    auth = f"{user}:{password}@" if user else ""
    return f"influxdb+v1://{auth}127.0.0.1:{proxy.port}/{db}"


def test_type_conflict_is_dead_lettered_once_and_the_rest_continues(influx_db, tmp_path, proxy_to, caplog):
    server = influx_db.server
    body = f"device,host=h,device=gpu0 power_w=5i {T0}\n".encode()  # an integer field (types are per shard)
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{server.base_url}/write?db={influx_db.name}", data=body), timeout=30)
    proxy = proxy_to(server)
    caplog.set_level(logging.ERROR, "carbond.store.delivery")
    store = spooled(_proxied_url(proxy, influx_db.name), tmp_path, delivery=DeliveryOptions(batch_points=3), start=False)
    for i in range(4):
        store.write([make_point("host", {"host": "h"}, {"energy_j": float(i)}, T0 + i * S)])  # 4 fine points
    store.write(tick_points(10))  # 2 conflicting device points + 1 host point
    for i in range(20, 26):
        store.write([make_point("host", {"host": "h"}, {"energy_j": float(i)}, T0 + i * S)])
    store.delivery.start()  # batches: [h0 h1 h2] [h3 gpu0 gpu1] [h10 h20 h21] [h22 h23 h24] [h25]
    assert store.wait_empty(60)
    c = store.counters()
    dead = [json.loads(x) for x in dead_letter_path_for(tmp_path / "spool.db").read_text().splitlines()]
    assert {d["reason"] for d in dead} == {"type_conflict"} and all(d["status"] == 400 for d in dead)
    assert any("field type conflict" in d["error"] for d in dead)
    assert any(d["line"].startswith("device,") for d in dead)
    assert c.dead_letter_points == len(dead) and c.write_errors >= 1
    assert server.count(influx_db.name, "host") == 11  # every host point, also the one in the partial write
    assert len(dead) == 3 and proxy.count("POST", "/write") == 5  # 13 points in batches of 3, each sent once
    assert len([r for r in caplog.records if "dead-letter" in r.getMessage()]) == 1
    store.close()


def test_401_is_dead_lettered_without_retries_and_no_secret_leaks(influxd_factory, tmp_path, caplog):
    server = influxd_factory(auth=True)
    server.create_database("carbond")
    proxy = FaultProxy(server.base_url)
    caplog.set_level(logging.DEBUG)
    try:
        store = spooled(_proxied_url(proxy, "carbond", "carbond", "wrong-Pa55"), tmp_path,
                        delivery=DeliveryOptions(batch_points=100), start=False)
        for i in range(10):
            store.write(tick_points(i))
        store.delivery.start()
        assert store.wait_empty(60)
        c = store.counters()
        assert c.dead_letter_points == 30 and c.delivered_points == 0
        assert proxy.count("POST", "/write") == 1  # one batch, one request: no retry storm
        text = dead_letter_path_for(tmp_path / "spool.db").read_text()
        assert '"reason":"unauthorized"' in text and "wrong-Pa55" not in text
        assert "wrong-Pa55" not in caplog.text and "unauthorized" in caplog.text
        store.close()
        good = spooled(server.url("carbond", user=ADMIN_USER, password=ADMIN_PASSWORD), tmp_path / "good")
        good.write(tick_points(0))
        assert good.wait_empty(60) and good.counters().delivered_points == 3
        good.close()
    finally:
        proxy.close()


def test_413_from_the_real_server_splits_the_batch(influxd_factory, tmp_path):
    server = influxd_factory(max_body_size=1500)  # 1.x limits the gzip body
    server.create_database("carbond")
    proxy = FaultProxy(server.base_url)
    try:
        store = spooled(_proxied_url(proxy, "carbond"), tmp_path, delivery=DeliveryOptions(batch_points=300), start=False)
        for i in range(100):
            store.write(tick_points(i))
        store.delivery.start()
        assert store.wait_empty(60)
        statuses = [status for _, status in proxy.answers]
        assert 413 in statuses and store.counters().dead_letter_points == 0
        assert server.count("carbond", "device") == 200 and server.count("carbond", "host") == 100
        assert len(statuses) < 40  # halves, not a storm
        store.close()
    finally:
        proxy.close()


def test_429_retry_after_is_honoured_and_5xx_backs_off(influx_db, tmp_path, proxy_to):
    proxy = proxy_to(influx_db.server)
    script = iter([(429, {"Retry-After": "1"}, b'{"error":"slow down"}'), (503, {}, b"unavailable")])

    def fault(req):
        if req.path == "/write":
            return next(script, None)
        return None

    proxy.fault = fault
    store = spooled(_proxied_url(proxy, influx_db.name), tmp_path)
    store.write(tick_points(0))
    assert store.wait_empty(60)
    writes = proxy.writes()
    assert [s for r, s in proxy.answers if r.path == "/write"] == [429, 503, 204]
    assert writes[1].time_s - writes[0].time_s >= 0.95  # Retry-After: 1
    assert writes[0].body == writes[2].body or gzip.decompress(writes[0].body) == gzip.decompress(writes[2].body)
    assert influx_db.server.count(influx_db.name, "device") == 2
    store.close()


def test_unreachable_at_start_keeps_spooling_with_one_warning(influxd_factory, tmp_path, caplog):
    port = free_port()
    caplog.set_level(logging.WARNING, "carbond.store.delivery")
    store = spooled(f"influxdb+v1://127.0.0.1:{port}/carbond", tmp_path,
                    delivery=DeliveryOptions(backoff_initial_s=0.02, backoff_max_s=0.1), create_database=True)
    for i in range(50):
        store.write(tick_points(i))
        time.sleep(0.01)
    wait_for(lambda: store.counters().write_errors >= 3, 30)
    assert store.counters().spool_points == 150
    warnings = [r for r in caplog.records if "cannot deliver" in r.getMessage()]
    assert len(warnings) == 1 and "connection" in warnings[0].getMessage()
    server = influxd_factory(port=port)  # the server appears; create_database makes the database
    assert store.wait_empty(60)
    assert server.count("carbond", "device") == 100
    assert "resumed" in caplog.text
    store.close()


def test_missing_database_without_create_flag_is_dead_lettered(influx_server, tmp_path):
    store = spooled(influx_server.url("never_created"), tmp_path)
    store.write(tick_points(0))
    assert store.wait_empty(60)
    assert store.counters().dead_letter_points == 3
    assert '"reason":"database_not_found"' in dead_letter_path_for(tmp_path / "spool.db").read_text()
    store.close()


def test_store_init_is_idempotent_and_its_rollups_work(influx_server, tmp_path):
    store = InfluxStore(influx_server.url("init_test"))
    first = init_influx(store)
    assert first[0] == "database init_test: created" and "retention policy autogen: updated" in first[1]
    assert all(line.endswith("created") for line in first[3:])
    second = init_influx(store)
    assert all(": exists" in line for line in second), second
    rps = {v[0]: v[1] for v in influx_server.series('SHOW RETENTION POLICIES ON "init_test"', "")[0]["values"]}
    assert rps == {"autogen": "720h0m0s", "carbond_1h": "0s"}
    cqs = [v[0] for s in influx_server.series("SHOW CONTINUOUS QUERIES", "") if s["name"] == "init_test" for v in s["values"]]
    assert sorted(cqs) == sorted(f"carbond_{m}_1h" for m in ("device", "host", "job", "run", "carbond"))
    # run the host rollup's SELECT ... INTO by hand over two recent hours of points
    now_h = time.time_ns() // (3600 * S) * 3600 * S
    store.write([make_point("host", {"host": "h", "region": "DE"}, {"energy_j": 1.0, "power_w": float(i)},
                            now_h - 2 * 3600 * S + i * 600 * S) for i in range(12)])
    influx_server.query('SELECT sum("energy_j") AS "energy_j", mean("power_w") AS "power_w" INTO '
                        '"init_test"."carbond_1h"."host" FROM "init_test"."autogen"."host" '
                        f"WHERE time >= {now_h - 2 * 3600 * S} AND time < {now_h} GROUP BY time(1h), *", "init_test")
    rolled = influx_server.series('SELECT * FROM "carbond_1h"."host"', "init_test")[0]["values"]
    assert [(v[1], v[3]) for v in rolled] == [(6, 2.5), (6, 8.5)]
    store.close()


def test_https_url_verifies_the_server_and_delivers(influxd_factory, tmp_path):
    cert, key = influx_servers.self_signed_certificate(tmp_path)
    server = influxd_factory(tls=(cert, key))
    server.create_database("carbond")
    trusted = open_store(server.url("carbond", host="localhost"), ca_file=str(cert),
                         spool=SpoolOptions(tmp_path / "spool.db", delivery=QUICK))
    trusted.write(tick_points(0))
    assert trusted.wait_empty(60)
    assert [p.time_ns for p in trusted.scan("host")] == [T0]
    trusted.close()
    untrusted = InfluxStore(server.url("carbond", host="localhost"))  # the system CAs do not know this certificate
    with pytest.raises(RetryableWriteError, match=r"(?i)certificate"):
        untrusted.write(tick_points(1))
    untrusted.close()
