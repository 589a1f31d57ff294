"""Time-varying intensity in a running daemon: hour boundaries, live providers, failures, forecast."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carbond.config import load_settings
from carbond.daemon import Daemon
from carbond.sensors import build_sensors
from carbond.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.fakes.intensity_apis import EM_TOKEN, FakeIntensityApis


def _series(path: Path, rows: list[tuple[datetime, float]]) -> Path:
    path.write_text("time,intensity_g_per_kwh\n" + "".join(f"{t:%Y-%m-%dT%H:%M:%SZ},{v}\n" for t, v in rows))
    return path


def test_series_provider_changes_at_the_hour_boundary(tmp_path: Path):
    h10 = datetime(2026, 11, 30, 10, tzinfo=UTC)
    series = _series(tmp_path / "s.csv", [(h10, 200.0), (h10 + timedelta(hours=1), 500.0)])
    settings = load_settings(env={"HOME": str(tmp_path)}, flags={
        "intensity.provider": "series", "intensity.series_file": str(series),
        "store.url": f"sqlite://{tmp_path}/c.db", "daemon.socket": str(tmp_path / "s.sock"), "sensors.nvml": False,
        "daemon.simulate_gpus": 1, "region.zone": "DE"}).settings
    walls = iter(int((h10 + timedelta(minutes=59, seconds=s)).timestamp() * 1e9) for s in (57, 58, 59, 60, 61, 62))
    daemon = Daemon(settings, build_sensors(settings), SqliteStore(tmp_path / "c.db"), wall_ns=lambda: next(walls))
    for _ in range(6):
        daemon.tick()
    assert daemon.flush()
    hosts = [p for p in SqliteStore(tmp_path / "c.db", readonly=True).scan("host")]
    assert len(hosts) == 5
    for p in hosts:
        hour_start = datetime.fromtimestamp(p.time_ns / 1e9, UTC).replace(minute=0, second=0, microsecond=0)
        expected = 200.0 if hour_start == h10 else 500.0
        assert p.fields["intensity_g_per_kwh"] == expected
        assert p.tags["intensity_source"] == "series"
        assert p.fields["co2_g"] == pytest.approx(p.fields["energy_j"] / 3.6e6 * p.fields["pue"] * expected, rel=1e-12)
    assert [p.fields["intensity_g_per_kwh"] for p in hosts] == [200.0, 200.0, 500.0, 500.0, 500.0]


def test_forecast_picks_the_known_best_window_from_a_series(carbond):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    values = [400.0] * 30
    values[7], values[8] = 90.0, 110.0  # the best 2-hour window starts 7 hours from the current hour
    series = _series(carbond.tmp / "f.csv", [(now + timedelta(hours=i), v) for i, v in enumerate(values)])
    carbond.env.update({"CARBOND_INTENSITY_PROVIDER": "series", "CARBOND_INTENSITY_SERIES_FILE": str(series)})
    doc = json.loads(carbond("forecast", "--duration", "2h", "--within", "24h", "--json", check=True).stdout)
    best = datetime.fromisoformat(doc["best"]["start"])
    assert best == now + timedelta(hours=7)
    assert doc["best"]["mean_g_per_kwh"] == pytest.approx(100.0)
    text = carbond("forecast", "--duration", "2h", "--within", "24h", check=True).stdout
    assert f"{best:%Y-%m-%d %H:%M}" in text and "saves" in text


def test_malformed_series_is_exit_2_naming_the_line(carbond):
    bad = carbond.tmp / "bad.csv"
    bad.write_text("time,intensity_g_per_kwh\n2026-11-30T10:00:00Z,200\n2026-11-30T11:00:00Z,lots\n")
    carbond.env.update({"CARBOND_INTENSITY_PROVIDER": "series", "CARBOND_INTENSITY_SERIES_FILE": str(bad)})
    r = carbond("run", "--store", carbond.store, "--duration", "1")
    assert r.returncode == 2 and "line 3" in r.stderr and "'lots'" in r.stderr


def test_missing_api_key_is_a_clear_error_at_start(carbond):
    carbond.env.update({"CARBOND_INTENSITY_PROVIDER": "electricitymaps"})
    r = carbond("run", "--store", carbond.store, "--region", "DE", "--duration", "1")
    assert r.returncode == 2
    assert "token" in r.stderr.lower() and "CARBOND_ELECTRICITYMAPS_TOKEN" in r.stderr


@pytest.mark.parametrize("mode", ["500", "429", "malformed", "hang", "401"])
def test_daemon_keeps_ticking_on_the_table_when_the_provider_fails(carbond, mode):
    api = FakeIntensityApis(now=datetime.now(UTC))
    api.mode = mode
    try:
        carbond.env.update({"CARBOND_INTENSITY_PROVIDER": "electricitymaps", "CARBOND_INTENSITY_API_URL": api.url,
                            "CARBOND_ELECTRICITYMAPS_TOKEN": EM_TOKEN, "CARBOND_INTENSITY_TIMEOUT_S": "0.5"})
        proc = carbond.start("run", "--store", carbond.store, "--region", "DE", "--interval", "0.2",
                             "--socket", carbond.socket)
        try:
            wait_for(lambda: api.data_requests() >= 1, timeout_s=60)
            status = wait_for(lambda: _status_after(carbond, 10), timeout_s=60)
            assert status["last_tick"]["intensity_source"] == "table"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        api.close()
    assert proc.returncode == 0, err
    hosts = carbond.export("host")
    assert len(hosts) >= 10 and {p["tags"]["intensity_source"] for p in hosts} == {"table"}
    assert "intensity" in err.lower()  # the failure was reported


def test_daemon_uses_the_live_value_of_the_current_hour(carbond):
    api = FakeIntensityApis(now=datetime.now(UTC), value=lambda t: 123.0)
    try:
        carbond.env.update({"CARBOND_INTENSITY_PROVIDER": "electricitymaps", "CARBOND_INTENSITY_API_URL": api.url,
                            "CARBOND_ELECTRICITYMAPS_TOKEN": EM_TOKEN})
        proc = carbond.start("run", "--store", carbond.store, "--region", "DE", "--interval", "0.2",
                             "--socket", carbond.socket)
        try:
            status = wait_for(lambda: (s := _status_after(carbond, 3)) and
                              s["last_tick"]["intensity_source"] == "electricitymaps" and s, timeout_s=60)
            assert status["last_tick"]["intensity_g_per_kwh"] == 123.0
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        api.close()
    live = [p for p in carbond.export("host") if p["tags"]["intensity_source"] == "electricitymaps"]
    assert live and all(p["fields"]["intensity_g_per_kwh"] == 123.0 for p in live)
    assert all(("auth-token", EM_TOKEN) in r[3].items() for r in api.requests)


def _status_after(carbond, ticks: int):
    doc = carbond.status(ticks)
    return doc if doc and doc["last_tick"] else None
