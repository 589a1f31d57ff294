"""A real `carbond run` process delivering to a real InfluxDB 1.6.7: counts, read-back, outages, kill -9."""

from __future__ import annotations

import json
import re
import signal
from collections import defaultdict

import pytest
from fakes import influx_servers
from fakes.influx_servers import free_port

from tests.conftest import wait_for

influx_server, influx_db, influxd_factory = influx_servers.influx_server, influx_servers.influx_db, influx_servers.influxd_factory
N_DEVICES = 4  # cpu0, ram, gpu0, gpu1


def _ticks(stderr: str) -> tuple[int, int]:
    m = re.search(r"stopped after (\d+) ticks; (\d+) points written", stderr)
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


def _export(carbond, url: str, measurement: str) -> list[dict]:
    out = carbond("export", "--store", url, "--measurement", measurement, "--format", "jsonl", check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _check_points(carbond, url: str, ticks: int) -> None:
    """Exactly one host point per measured tick, N devices each, host = Σ devices, in order."""
    hosts = _export(carbond, url, "host")
    devices = _export(carbond, url, "device")
    assert len(hosts) == ticks - 1
    assert len(devices) == (ticks - 1) * N_DEVICES
    by_time: dict[int, float] = defaultdict(float)
    for d in devices:
        by_time[d["time_ns"]] += d["fields"]["energy_j"]
    times = [h["time_ns"] for h in hosts]
    assert times == sorted(times) and len(set(times)) == len(times)
    for h in hosts:
        f = h["fields"]
        assert f["energy_j"] == pytest.approx(by_time[h["time_ns"]], rel=1e-9)
        assert f["co2_g"] == pytest.approx(f["energy_j"] / 3.6e6 * f["pue"] * f["intensity_g_per_kwh"], rel=1e-9)


def test_run_lands_exactly_the_expected_points_and_export_reads_them_back(carbond, influx_db):
    r = carbond("run", "--store", influx_db.url, "--interval", "0.25", "--duration", "3", "--simulate-gpus", "2",
                "--socket", carbond.socket)
    assert r.returncode == 0, r.stderr
    ticks, written = _ticks(r.stderr)
    _check_points(carbond, influx_db.url, ticks)
    # the same values InfluxQL returns directly
    raw = influx_db.server.series('SELECT "energy_j", "co2_g" FROM "host"', influx_db.name)[0]["values"]
    exported = _export(carbond, influx_db.url, "host")
    assert [(row[0], row[1], row[2]) for row in raw] == [
        (p["time_ns"], p["fields"]["energy_j"], p["fields"]["co2_g"]) for p in exported]
    assert influx_db.server.count(influx_db.name, "carbond", "rss_bytes") >= 1
    every = carbond("export", "--store", influx_db.url, "--format", "lp", check=True).stdout.splitlines()
    assert len(every) == written


@pytest.mark.parametrize("outage_s", [3, pytest.param(60, marks=pytest.mark.slow)])
def test_outage_mid_run_every_tick_arrives_once_in_order(carbond, influxd_factory, outage_s):
    server = influxd_factory()
    server.create_database("carbond")
    url = server.url("carbond")
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.5"
    proc = carbond.start("run", "--store", url, "--interval", "0.25", "--simulate-gpus", "2", "--socket", carbond.socket)
    try:
        wait_for(lambda: server.count("carbond", "host") >= 4, timeout_s=60)
        server.stop()  # the outage
        before = carbond.status(1)["stats"]["ticks"]
        wait_for(lambda: carbond.status(before + 4 * outage_s), timeout_s=outage_s * 3 + 60)  # ticks while it is down
        server.start()
        after = carbond.status(1)["stats"]["ticks"]
        wait_for(lambda: server.count("carbond", "host") >= after - 1, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    ticks, _ = _ticks(err)
    _check_points(carbond, url, ticks)


def test_kill_9_during_an_outage_then_restart_loses_nothing(carbond, influxd_factory):
    server = influxd_factory()
    server.create_database("carbond")
    url = server.url("carbond")
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.5"
    proc = carbond.start("run", "--store", url, "--interval", "0.25", "--simulate-gpus", "2", "--socket", carbond.socket)
    try:
        wait_for(lambda: server.count("carbond", "host") >= 2, timeout_s=60)
        server.stop()
        status = wait_for(lambda: carbond.status(12), timeout_s=60)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    measured = status["stats"]["ticks"] - 1
    last_seen = status["last_tick"]["time_ns"]
    server.start()
    second = carbond("run", "--store", url, "--interval", "0.25", "--duration", "1", "--simulate-gpus", "2",
                     "--socket", carbond.socket)
    assert second.returncode == 0, second.stderr
    hosts = _export(carbond, url, "host")
    first_run = [h for h in hosts if h["time_ns"] <= last_seen]
    assert len(first_run) >= measured  # every tick the status had reported survived kill -9 + outage
    times = [h["time_ns"] for h in hosts]
    assert len(set(times)) == len(times)


def test_unreachable_url_at_start_runs_and_spools_with_one_warning(carbond):
    url = f"influxdb+v1://127.0.0.1:{free_port()}/carbond"
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.3"
    carbond.env["CARBOND_STORE_DRAIN_TIMEOUT_S"] = "1"
    r = carbond("run", "--store", url, "--interval", "0.2", "--duration", "2.5", "--socket", carbond.socket)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line and "127.0.0.1" in line]
    assert 1 <= len(warnings) <= 2, r.stderr  # said once (and perhaps once more at stop), not per retry
    assert "spool" in r.stderr.lower()
