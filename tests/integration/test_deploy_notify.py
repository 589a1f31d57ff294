"""A real `carbond run` under a systemd-like environment: sd_notify READY/WATCHDOG/STOPPING on a real
NOTIFY_SOCKET, STATE_DIRECTORY/RUNTIME_DIRECTORY honoured, and SIGHUP reloads without losing a point."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator

import pytest
from fakes.notify_socket import NotifySocket

from tests.conftest import wait_for


@pytest.fixture
def notify(tmp_path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def _status(carbond, socket_path: str) -> dict | None:
    r = carbond("status", "--json", "--socket", socket_path)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return err


def _ticks(err: str) -> int:
    m = re.search(r"stopped after (\d+) ticks", err)
    assert m, err
    return int(m.group(1))


def test_ready_watchdog_status_and_stopping_reach_the_notify_socket(carbond, notify, tmp_path):
    state, runtime = tmp_path / "state", tmp_path / "runtime"
    state.mkdir()
    runtime.mkdir()
    carbond.env.update({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000", "STATE_DIRECTORY": str(state),
                        "RUNTIME_DIRECTORY": str(runtime), "CARBOND_STORE_FLUSH_INTERVAL_S": "0.5"})
    started = time.monotonic()
    proc = carbond.start("run", "--interval", "0.25", "--simulate-gpus", "1")  # no --store, no --socket: the unit's way
    try:
        ready = wait_for(lambda: notify.with_key("READY", "1"), timeout_s=60)
        assert "STATUS" in ready[0] and "every 0.25s" in ready[0]["STATUS"]
        wait_for(lambda: len(notify.with_key("WATCHDOG", "1")) >= 3, timeout_s=60)
        sock = runtime / "carbond.sock"
        assert sock.is_socket()  # RUNTIME_DIRECTORY gives the socket
        doc = wait_for(lambda: _status(carbond, str(sock)), timeout_s=60)
        assert doc["store"] == f"sqlite://{state}/carbond.db"  # STATE_DIRECTORY gives the store
        wait_for(lambda: any("W," in m.get("STATUS", "") for m in notify.snapshot()), timeout_s=60)  # live status
    finally:
        err = _stop(proc)
    lifetime = time.monotonic() - started
    wait_for(lambda: notify.with_key("STOPPING", "1"), timeout_s=30)
    order = notify.keys_in_order("READY", "STOPPING")
    assert order[0] == "READY" and order[-1] == "STOPPING"
    pings = len(notify.with_key("WATCHDOG", "1"))
    assert pings <= lifetime / 0.5 + 1  # at most once per half of WATCHDOG_USEC
    assert (state / "carbond.db").exists() and not (runtime / "carbond.sock").exists()
    assert "stopped after" in err


def test_a_short_watchdog_is_extended_to_three_ticks(carbond, notify):
    carbond.env.update({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "500000"})
    proc = carbond.start("run", "--store", carbond.store, "--socket", carbond.socket, "--interval", "1")
    try:
        extended = wait_for(lambda: notify.with_key("WATCHDOG_USEC"), timeout_s=60)
        assert extended[0]["WATCHDOG_USEC"] == "3000000"
    finally:
        err = _stop(proc)
    assert "shorter than three ticks" in err


CONFIG = """\
[daemon]
interval_s = {interval}
host = "{host}"
[store]
flush_interval_s = 0.5
[region]
zone = "{zone}"
"""


def test_sighup_reloads_live_settings_and_loses_no_point(carbond, notify, tmp_path):
    conf = tmp_path / "carbond.toml"
    conf.write_text(CONFIG.format(interval=0.25, host="node-a", zone="DE"))
    carbond.env["NOTIFY_SOCKET"] = notify.path
    proc = carbond.start("run", "--config", str(conf), "--store", carbond.store, "--socket", carbond.socket,
                         "--simulate-gpus", "1")
    try:
        wait_for(lambda: notify.with_key("READY"), timeout_s=60)
        wait_for(lambda: (_status(carbond, carbond.socket) or {}).get("stats", {}).get("ticks", 0) >= 6, timeout_s=60)
        conf.write_text(CONFIG.format(interval=0.5, host="node-b", zone="FR"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: notify.keys_in_order("READY", "RELOADING")[-2:] == ["RELOADING", "READY"], timeout_s=60)
        doc = wait_for(lambda: (d := _status(carbond, carbond.socket)) and d["last_tick"].get("zone") == "FR" and d,
                       timeout_s=60)
        assert doc["interval_s"] == 0.5 and doc["host"] == "node-a"  # the host tag waits for a restart
        # a broken file: the reload is refused, the daemon carries on with what it runs
        conf.write_text("[daemon\n")
        before = len(notify.with_key("READY"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(notify.with_key("READY")) > before, timeout_s=60)
        ticks = _status(carbond, carbond.socket)["stats"]["ticks"]
        wait_for(lambda: _status(carbond, carbond.socket)["stats"]["ticks"] >= ticks + 2, timeout_s=60)
    finally:
        err = _stop(proc)
    assert "daemon.host changed in the configuration; it takes effect at the next restart" in err
    assert "reload: daemon.interval_s 0.25 → 0.5" in err and "reload: region.zone 'DE' → 'FR'" in err
    assert "reload failed, the running configuration stays" in err and "not valid TOML" in err
    hosts = carbond.export("host")
    assert len(hosts) == _ticks(err) - 1  # every tick across both reloads reached the store
    assert {h["tags"]["host"] for h in hosts} == {"node-a"}
    regions = [h["tags"]["region"] for h in hosts]
    switch = regions.index("FR")
    assert switch > 0 and set(regions[:switch]) == {"DE"} and set(regions[switch:]) == {"FR"}
    gaps = [b["time_ns"] - a["time_ns"] for a, b in zip(hosts[switch:], hosts[switch + 1:], strict=False)]
    assert gaps and sorted(gaps)[len(gaps) // 2] > 0.4e9  # ticks every 0.5 s after the reload (median)
