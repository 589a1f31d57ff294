"""The v2 path: influxdb-client's WriteApi to a real ``/api/v2/write`` (VictoriaMetrics), read back via export."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes import influx_servers
from fakes.influx_proxy import FaultProxy
from fakes.influx_servers import VictoriaMetrics

from carbond.store import open_store
from carbond.store.base import make_point
from carbond.store.delivery import DeliveryOptions, SpooledStore, SpoolOptions
from carbond.store.errors import BatchTooLargeError, RejectedWriteError, RetryableWriteError
from carbond.store.influx import InfluxStore

pytest.importorskip("influxdb_client")

MS = 1_000_000
T0_MS = 1_700_000_000_000  # VictoriaMetrics keeps milliseconds
ROOT = Path(__file__).parents[2]
victoria = influx_servers.victoria  # fixture


def _points(n: int, run: str):
    return [make_point("device", {"host": "h", "device": f"gpu{g}", "run": run},
                       {"power_w": 100.0 + i + g / 4, "energy_j": 1.5 * i}, (T0_MS + i * 1000) * MS)
            for i in range(n) for g in range(2)]


def test_spooled_v2_writes_through_influxdb_client_and_read_back(victoria: VictoriaMetrics, tmp_path: Path):
    proxy = FaultProxy(victoria.base_url)  # only to look at the requests
    try:
        url = f"influxdb+v2://127.0.0.1:{proxy.port}/carbond?org=acme"
        store = open_store(url, token="t0k3n-secret", spool=SpoolOptions(tmp_path / "spool.db"))
        assert isinstance(store, SpooledStore)
        store.write(_points(50, "v2-basic"))
        assert store.wait_empty(60)
        assert store.counters().delivered_points == 100
        store.close()
        writes = proxy.writes()
        assert writes and all(w.path == "/api/v2/write" for w in writes)
        w = writes[0]
        assert w.headers.get("Authorization") == "Token t0k3n-secret"
        assert "org=acme" in w.query and "bucket=carbond" in w.query and "precision=ns" in w.query
        assert w.headers.get("Content-Encoding") == "gzip" and gzip.decompress(w.body).startswith(b"device,")
    finally:
        proxy.close()
    series = victoria.export('{__name__="device_power_w",run="v2-basic"}')
    by_device = {s["metric"]["device"]: s for s in series}
    assert sorted(by_device) == ["gpu0", "gpu1"]
    gpu1 = by_device["gpu1"]
    assert gpu1["metric"]["host"] == "h"
    assert gpu1["timestamps"] == [T0_MS + i * 1000 for i in range(50)]
    assert gpu1["values"] == [100.0 + i + 0.25 for i in range(50)]
    energy = victoria.export('{__name__="device_energy_j",run="v2-basic",device="gpu0"}')
    assert energy[0]["values"] == [1.5 * i for i in range(50)]


@pytest.mark.parametrize(("status", "headers", "expected", "reason"), [
    (401, {}, RejectedWriteError, "unauthorized"),
    (404, {}, RejectedWriteError, "database_not_found"),
    (413, {}, BatchTooLargeError, "too_large"),
    (429, {"Retry-After": "7"}, RetryableWriteError, "rate_limited"),
    (503, {}, RetryableWriteError, "server_error"),
    (422, {}, RejectedWriteError, "http_422"),
])
def test_v2_http_errors_are_classified_once(victoria, status, headers, expected, reason):
    proxy = FaultProxy(victoria.base_url)
    body = b'{"code":"x","message":"bucket \\"carbond\\" not found"}' if status == 404 else b'{"code":"x","message":"no"}'
    proxy.fault = lambda req: (status, {"Content-Type": "application/json", **headers}, body)
    store = InfluxStore(f"influxdb+v2://127.0.0.1:{proxy.port}/carbond?org=acme", token="tok")
    try:
        with pytest.raises(expected) as info:
            store.write(_points(1, "err"))
        assert info.value.reason == reason and info.value.status == status
        assert info.value.__cause__ is not None  # the client's ApiException is kept
        if status == 429:
            assert info.value.retry_after_s == 7.0
        assert proxy.count("POST", "/api/v2/write") == 1  # the client did not retry on its own
    finally:
        store.close()
        proxy.close()


def test_v2_unreachable_is_retryable(tmp_path):
    from fakes.influx_servers import free_port

    store = InfluxStore(f"influxdb+v2://127.0.0.1:{free_port()}/carbond?org=acme", token="tok", timeout_s=2)
    with pytest.raises(RetryableWriteError) as info:
        store.write(_points(1, "x"))
    assert info.value.reason in ("connection", "timeout")
    store.close()


def test_v2_outage_replays_from_the_spool(tmp_path, victoria):
    proxy = FaultProxy(victoria.base_url)
    down = [True]
    proxy.fault = lambda req: (503, {}, b"down") if down[0] and req.path == "/api/v2/write" else None
    try:
        opts = SpoolOptions(tmp_path / "spool.db", delivery=DeliveryOptions(backoff_initial_s=0.05, backoff_max_s=0.2))
        store = open_store(f"influxdb+v2://127.0.0.1:{proxy.port}/carbond?org=acme", token="tok", spool=opts)
        store.write(_points(20, "v2-outage"))
        from tests.conftest import wait_for

        wait_for(lambda: store.counters().write_errors >= 2, 30)
        down[0] = False
        assert store.wait_empty(60)
        store.close()
    finally:
        proxy.close()
    assert len(victoria.export('{__name__="device_power_w",run="v2-outage"}')[0]["values"]) == 20


def test_influxdb_client_is_imported_only_for_v2_urls():
    code = textwrap.dedent("""
        import sys
        from carbond.store import open_store
        v1 = open_store("influxdb+v1://127.0.0.1:9/db")
        assert "influxdb_client" not in sys.modules
        try:
            v1.write_lines(["m v=1 1"])
        except Exception:
            pass
        assert "influxdb_client" not in sys.modules
        v2 = open_store("influxdb+v2://127.0.0.1:9/b?org=o", token="t")
        assert "influxdb_client" not in sys.modules   # not even at open: only at the first write
        try:
            v2.write_lines(["m v=1 1"])
        except Exception:
            pass
        assert "influxdb_client" in sys.modules
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_v2_reads_use_influxql_over_the_v1_compatibility_api(victoria):
    """2.x/3.x answer ``/query`` with the bucket as ``db`` and the token; VictoriaMetrics does not, so a canned answer."""
    proxy = FaultProxy(victoria.base_url)
    answer = {"results": [{"statement_id": 0, "series": [{"name": "host", "columns": ["time", "energy_j"],
                                                           "values": [[0, 42.0]]}]}]}
    proxy.fault = lambda req: (200, {"Content-Type": "application/json"}, json.dumps(answer).encode()) \
        if req.path == "/query" else None
    store = InfluxStore(f"influxdb+v2://127.0.0.1:{proxy.port}/carbond?org=acme", token="tok-123")
    try:
        from carbond.store.base import Query, Row

        assert store.query(Query("host", ("energy_j",), "sum")) == [Row(None, {}, {"energy_j": 42.0})]
        (req,) = [r for r in proxy.requests if r.path == "/query"]
        assert req.headers["Authorization"] == "Token tok-123" and "db=carbond" in req.query and "epoch=ns" in req.query
        assert b"SELECT+sum" in req.body
    finally:
        store.close()
        proxy.close()
