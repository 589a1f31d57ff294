"""A real ``carbond run`` process on the embedded SQLite store, read back with ``carbond export``."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import defaultdict

import pytest

from carbond.intensity import load_table
from tests.conftest import wait_for

DE = load_table().lookup("DE")


def test_run_region_de_writes_host_points_with_traceable_co2(carbond):
    proc = carbond("run", "--store", carbond.store, "--region", "DE", "--interval", "0.5", "--duration", "5")
    assert proc.returncode == 0, proc.stderr
    hosts = carbond.export("host")
    assert len(hosts) >= 8
    for p in hosts:
        f = p["fields"]
        assert p["tags"]["region"] == "DE"
        assert p["tags"]["intensity_source"] == "table"
        assert f["energy_j"] > 0
        assert f["intensity_g_per_kwh"] == DE.intensity_g_per_kwh  # the DE row of the bundled table
        assert p["tags"]["intensity_source"] == DE.provider
        assert f["co2_g"] == pytest.approx(f["energy_j"] / 3.6e6 * f["pue"] * f["intensity_g_per_kwh"], rel=1e-12)
        assert f["water_l"] == pytest.approx(
            f["energy_j"] / 3.6e6 * (f["wue_site_l_per_kwh"] + f["pue"] * f["wue_source_l_per_kwh"]), rel=1e-12)
        assert all(isinstance(v, float) for v in f.values())
    times = [p["time_ns"] for p in hosts]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_simulated_gpus_device_points_and_host_equals_sum_of_devices(carbond):
    proc = carbond("run", "--store", carbond.store, "--interval", "0.5", "--duration", "4", "--simulate-gpus", "2")
    assert proc.returncode == 0, proc.stderr
    devices = carbond.export("device")
    by_time: dict[int, dict[str, dict]] = defaultdict(dict)
    for p in devices:
        by_time[p["time_ns"]][p["tags"]["device"]] = p
    hosts = {p["time_ns"]: p for p in carbond.export("host")}
    assert len(hosts) >= 6
    assert set(by_time) == set(hosts)
    for t, host in hosts.items():
        devs = by_time[t]
        assert {"gpu0", "gpu1", "cpu0", "ram"} <= set(devs)
        assert devs["gpu0"]["tags"]["source"] == "simulated"
        assert devs["gpu1"]["tags"]["kind"] == "gpu"
        assert devs["cpu0"]["tags"]["source"] in ("counter", "power", "model")
        assert devs["ram"]["tags"]["source"] in ("counter", "model")
        total = sum(d["fields"]["energy_j"] for d in devs.values())
        assert host["fields"]["energy_j"] == pytest.approx(total, rel=1e-12, abs=1e-12)
        # a simulated H100 swings between ~350 and ~600 W: the energy is real integration, not a constant
        gpu_w = devs["gpu0"]["fields"]["power_w"]
        assert 100 < gpu_w < 700
        assert devs["gpu0"]["fields"]["memory_used_bytes"] > 0


def test_sigterm_stops_cleanly_and_flushes_every_point(carbond):
    proc = carbond.start("run", "--store", carbond.store, "--interval", "0.2", "--socket", carbond.socket,
                         "--simulate-gpus", "1")
    try:
        status = wait_for(lambda: carbond.status(min_ticks=5), timeout_s=60)
        assert status["store"] == carbond.store
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    m = re.search(r"stopped after (\d+) ticks; (\d+) points written", err)
    assert m, err
    ticks, written = int(m.group(1)), int(m.group(2))
    hosts = carbond.export("host")
    everything = carbond("export", "--store", carbond.store, check=True).stdout.splitlines()
    assert len(hosts) == ticks - 1  # every tick after the baseline, the one at the stop included
    assert len(everything) == written  # nothing left behind in memory
    selfm = carbond.export("carbond")
    assert selfm[-1]["time_ns"] == hosts[-1]["time_ns"]  # the final tick wrote its self-metrics too
    assert not os.path.exists(carbond.socket)


def test_status_and_devices_from_a_running_daemon(carbond):
    proc = carbond.start("run", "--store", carbond.store, "--interval", "0.2", "--socket", carbond.socket,
                         "--simulate-gpus", "2", "--region", "FR")
    try:
        doc = wait_for(lambda: carbond.status(min_ticks=3), timeout_s=60)
        last = doc["last_tick"]
        fr = load_table().lookup("FR")
        assert last["zone"] == "FR" and last["intensity_g_per_kwh"] == fr.intensity_g_per_kwh and last["basis"] == fr.basis
        assert {d["device"] for d in last["devices"]} >= {"gpu0", "gpu1", "cpu0", "ram"}
        assert last["power_w"] == pytest.approx(sum(d["power_w"] for d in last["devices"]), rel=1e-9)
        text = carbond("status", "--socket", carbond.socket, check=True).stdout
        assert "gCO2e/kWh" in text and "gpu1" in text
        devs = json.loads(carbond("devices", "--json", "--socket", carbond.socket, check=True).stdout)
        assert devs["origin"] == "daemon"
        assert {d["device"]: d["source"] for d in devs["devices"]}["gpu0"] == "simulated"
        # a second daemon on the same socket is refused, the first keeps running
        second = carbond("run", "--store", f"sqlite://{carbond.tmp}/other.db", "--socket", carbond.socket,
                         "--duration", "1")
        assert second.returncode == 1 and "already listening" in second.stderr
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_status_without_daemon_is_a_clear_runtime_error(carbond):
    r = carbond("status", "--socket", str(carbond.tmp / "run" / "nobody.sock"))
    assert r.returncode == 1
    assert "no carbond daemon" in r.stderr


def test_devices_probe_without_daemon(carbond):
    r = carbond("devices", "--json", "--simulate-gpus", "3", check=True)
    doc = json.loads(r.stdout)
    assert doc["origin"] == "probe"
    assert [d["device"] for d in doc["devices"] if d["kind"] == "gpu"] == ["gpu0", "gpu1", "gpu2"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "lp"])
def test_export_formats_agree(carbond, fmt):
    carbond("run", "--store", carbond.store, "--interval", "0.3", "--duration", "1.5", check=True)
    jsonl = carbond.export("host")
    out = carbond("export", "--store", carbond.store, "--measurement", "host", "--format", fmt, check=True).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    if fmt == "csv":
        header, rows = lines[0].split(","), lines[1:]
        assert header[:2] == ["measurement", "time"]
        assert len(rows) == len(jsonl)
        col = header.index("energy_j")
        assert [float(r.split(",")[col]) for r in rows] == [p["fields"]["energy_j"] for p in jsonl]
    elif fmt == "lp":
        assert len(lines) == len(jsonl)
        for line, p in zip(lines, jsonl, strict=True):
            assert line.startswith("host,basis=")
            assert line.endswith(f" {p['time_ns']}")
            assert f"energy_j={p['fields']['energy_j']!r}" in line or f"energy_j={p['fields']['energy_j']:.0f}" in line
    else:
        assert len(lines) == len(jsonl)


def test_export_time_range(carbond):
    carbond("run", "--store", carbond.store, "--interval", "0.3", "--duration", "1.5", check=True)
    everything = carbond.export("host")
    assert carbond("export", "--store", carbond.store, "--since", "-1h", check=True).stdout.count("\n") >= len(everything)
    r = carbond("export", "--store", carbond.store, "--until", "2000-01-01")
    assert r.returncode == 0 and r.stdout == "" and "no points" in r.stderr


def test_kill_9_loses_no_tick_the_journal_is_replayed_at_the_next_start(carbond):
    # flushes far apart: everything the first daemon measured is only in its journal when it dies
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "3600"
    proc = carbond.start("run", "--store", carbond.store, "--interval", "0.2", "--socket", carbond.socket)
    try:
        status = wait_for(lambda: carbond.status(min_ticks=8), timeout_s=60)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    ticks_seen = status["stats"]["ticks"]
    assert not carbond.db.exists() or carbond.export("host") == []  # nothing had been flushed
    journal = carbond.tmp / "c.db.journal"
    assert any(journal.iterdir())
    second = carbond("run", "--store", carbond.store, "--interval", "0.2", "--duration", "0.5",
                     "--socket", carbond.socket)
    assert second.returncode == 0, second.stderr
    assert "replayed" in second.stderr
    hosts = carbond.export("host")
    first_run = [p for p in hosts if p["time_ns"] <= status["last_tick"]["time_ns"]]
    assert len(first_run) >= ticks_seen - 1  # every interval the status had reported is in the store
    assert [p.name for p in journal.iterdir()] == []
