"""Prometheus /metrics of a real `carbond run` writing to a real InfluxDB 1.6.7: the counters agree with
the store, the exposition format parses, and a stuck scraper blocks neither the ticks nor other scrapes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import defaultdict

import pytest
from fakes import influx_servers
from fakes.influx_servers import free_port

from tests.conftest import wait_for

influx_server, influx_db = influx_servers.influx_server, influx_servers.influx_db

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
JOB = f"prom-job-{uuid.uuid4().hex[:6]}"  # unique: another copy of this suite may run on the machine
BURN = "import time\nt = time.process_time() + 1.5\nwhile time.process_time() < t: pass"


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Strict enough for the text format 0.0.4: TYPE before samples, no duplicate series, numbers parse."""
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge") and name not in typed, line
            typed[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        assert name in typed, f"{name} has no TYPE line before its samples"
        if typed[name] == "counter":
            assert name.endswith("_total"), name
        labels = tuple(LABEL.findall(labels_text))
        assert ",".join(f'{k}="{v}"' for k, v in labels) == labels_text, line
        series = families.setdefault(name, {})
        assert labels not in series, f"duplicate series: {line}"
        series[labels] = float(value)
    return families


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def _status(carbond) -> dict | None:
    r = carbond("status", "--json", "--socket", carbond.socket)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _by(series: dict, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in series.items():
        out[dict(labels)[label]] += value
    return out


def test_counters_agree_with_the_store_and_a_stuck_scraper_blocks_nothing(carbond, influx_db):
    port = free_port()
    carbond.env.update({"CARBOND_PROMETHEUS_LISTEN": f"127.0.0.1:{port}", "CARBOND_STORE_FLUSH_INTERVAL_S": "0.5"})
    proc = carbond.start("run", "--store", influx_db.url, "--interval", "0.25", "--simulate-gpus", "2",
                         "--socket", carbond.socket)
    stuck = socket.socket()
    try:
        wait_for(lambda: _status(carbond), timeout_s=60)
        tracked = subprocess.run([sys.executable, "-m", "carbond", "track", "--job", JOB, "--project", "prom",
                                  "--phase", "training", "--socket", carbond.socket, "--", sys.executable, "-c", BURN],
                                 env=carbond.env, capture_output=True, text=True, timeout=120)
        assert tracked.returncode == 0, tracked.stderr
        stuck.connect(("127.0.0.1", port))  # connects and never sends a request
        ticks = _status(carbond)["stats"]["ticks"]
        wait_for(lambda: _status(carbond)["stats"]["ticks"] >= ticks + 4, timeout_s=60)  # ticks go on
        metrics = parse(_scrape(port))  # and other scrapes are answered
        last_tick_ns = round(metrics["carbond_last_tick_timestamp_seconds"][()] * 1e9)
        # the store catches up with the scraped tick (flushed every 0.5 s)
        wait_for(lambda: influx_db.server.series(f'SELECT count("energy_j") FROM "host" WHERE time >= {last_tick_ns - 10**6}',
                                                 influx_db.name), timeout_s=60)
    finally:
        proc.send_signal(signal.SIGTERM)  # with the stuck scraper still connected
        _, err = proc.communicate(timeout=120)
        stuck.close()
    assert proc.returncode == 0, err

    upto = f"time <= {last_tick_ns + 10**6}"  # the scraped tick and every one before it; the next is 0.25 s later
    store = {}
    for row in influx_db.server.series(f'SELECT sum("energy_j") FROM "device" WHERE {upto} GROUP BY "device"',
                                       influx_db.name):
        store[row["tags"]["device"]] = row["values"][0][1]
    energy = _by(metrics["carbond_energy_joules_total"], "device")
    assert set(energy) == set(store) == {"cpu0", "ram", "gpu0", "gpu1"}
    for device, joules in store.items():
        assert energy[device] == pytest.approx(joules, rel=1e-9)

    def total(measurement: str, field: str, where: str = "") -> float:
        rows = influx_db.server.series(f'SELECT sum("{field}") FROM "{measurement}" WHERE {upto}{where}', influx_db.name)
        return rows[0]["values"][0][1]

    assert sum(metrics["carbond_co2_grams_total"].values()) == pytest.approx(total("host", "co2_g"), rel=1e-9)
    assert sum(metrics["carbond_water_litres_total"].values()) == pytest.approx(total("host", "water_l"), rel=1e-9)
    assert sum(metrics["carbond_embodied_grams_total"].values()) == pytest.approx(total("host", "embodied_g"), rel=1e-9)
    # the daemon attributes every tagged process on the machine (other tests' too): look at ours
    runs = {labels: j for labels, j in metrics["carbond_run_energy_joules_total"].items() if dict(labels)["job"] == JOB}
    (labels, run_j), = runs.items()
    run = dict(labels)
    assert (run["job"], run["project"], run["phase"]) == (JOB, "prom", "training")
    assert run_j > 0 and run_j == pytest.approx(total("job", "energy_j", f" AND \"run\" = '{run['run']}'"), rel=1e-9)
    co2 = metrics["carbond_run_co2_grams_total"][labels]
    assert co2 == pytest.approx(total("job", "co2_g", f" AND \"run\" = '{run['run']}'"), rel=1e-9)
    # gauges: the last tick's values
    assert set(_by(metrics["carbond_power_watts"], "device")) == {"cpu0", "ram", "gpu0", "gpu1"}
    (intensity_labels, intensity), = metrics["carbond_intensity_grams_per_kwh"].items()
    assert intensity > 0 and dict(intensity_labels)["intensity_source"] == "table"
    assert metrics["carbond_ticks_total"][()] >= ticks + 4
    assert metrics["carbond_runs_active"][()] >= 0
    assert list(metrics["carbond_build_info"]) == [(("version", _status_version(carbond)),)]


def _status_version(carbond) -> str:
    return carbond("--version", check=True).stdout.split()[-1]


def test_listen_address_in_use_is_a_clear_config_error(carbond):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        carbond.env["CARBOND_PROMETHEUS_LISTEN"] = f"127.0.0.1:{taken.getsockname()[1]}"
        r = carbond("run", "--store", carbond.store, "--socket", carbond.socket, "--duration", "1")
    assert r.returncode == 2 and "[prometheus] listen" in r.stderr and "cannot listen" in r.stderr


def test_off_by_default(carbond):
    r = carbond("run", "--store", carbond.store, "--socket", carbond.socket, "--duration", "0.5")
    assert r.returncode == 0 and "Prometheus" not in r.stderr
