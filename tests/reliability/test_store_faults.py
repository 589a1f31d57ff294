"""A real ``carbond run`` delivering to a real InfluxDB 1.6.7 while the store misbehaves.

Every test says what it injected and ends by counting what arrived: one ``host`` point per
measured tick, each device at exactly those times, once each, in order (``assert_ticks_exact``),
or — where points are lost on purpose (401, spool budget) — exactly how many, counted by the
daemon in its status and ``carbond`` self-metrics.
"""

from __future__ import annotations

import itertools
import json
import random
import time

import pytest

from tests.conftest import wait_for
from tests.reliability.harness import DEVICES_2_GPUS, assert_ticks_exact, count, count_all, proxied_url, stored

S = 1_000_000_000


def test_influxdb_stopped_killed_and_down_across_a_daemon_restart_every_tick_arrives_once(influxd_factory, live_daemons):
    """Injected: InfluxDB stopped (SIGTERM) for ~2 s, then killed (SIGKILL) for ~2 s, then stopped
    while the daemon itself is stopped (its drain fails, the points stay in the spool) and started
    again after the daemon's restart. Asserted: across both daemon lives, exactly one host point per
    measured tick (both lives' own tick counts), every device at those times, no duplicates, in order."""
    server = influxd_factory()
    server.create_database("carbond")
    d = live_daemons(server.url("carbond"))
    d.env["CARBOND_STORE_DRAIN_TIMEOUT_S"] = "2"
    d.start()
    wait_for(lambda: count(server, "carbond", "host") >= 4, timeout_s=60)
    for down in (server.stop, server.kill):
        down()
        n = d.ticks()
        d.wait_ticks(n + 8)  # 2 s of ticks while it is down
        server.start()
        d.wait_delivered()
    server.stop()
    d.wait_ticks(d.ticks() + 4)
    first = d.stop()
    assert first.returncode == 0, first.stderr
    assert "not yet delivered" in first.stderr  # the drain could not reach it: the points stay in the spool
    d.start()  # InfluxDB still down: the spool from the first life waits
    d.wait_ticks(6)
    server.start()
    d.wait_delivered()
    second = d.stop()
    assert second.returncode == 0, second.stderr
    assert_ticks_exact(server, "carbond", (first.ticks - 1) + (second.ticks - 1))
    assert "Traceback" not in first.stderr + second.stderr


def test_influxdb_slower_than_the_store_timeout_every_tick_arrives_once(influx_db, faulty_proxy, live_daemons):
    """Injected: for ~3 s every write is forwarded to InfluxDB (which stores it) but answered 1.5 s late,
    past CARBOND_STORE_TIMEOUT_S=0.5: the daemon sees timeouts and sends the same batches again.
    Asserted: timeouts were counted (write_errors), the retried batches were sent more than once, and
    InfluxDB holds exactly one host point per measured tick and each device once at those times."""
    faults = faulty_proxy(influx_db.server)
    d = live_daemons(proxied_url(faults, influx_db.name))
    d.env["CARBOND_STORE_TIMEOUT_S"] = "0.5"
    d.start()
    wait_for(lambda: faults.statuses()[204] >= 2, timeout_s=60)
    faults.delay_s = 1.5
    n = d.ticks()
    d.wait_ticks(n + 12)
    faults.delay_s = 0.0
    doc = d.wait_delivered()
    assert doc["delivery"]["write_errors"] >= 1
    stopped = d.stop()
    assert stopped.returncode == 0, stopped.stderr
    sent = [line for s in faults.writes for line in s.lines if line.startswith("host,")]
    assert len(sent) > len(set(sent))  # the same lines went twice (the first answer came too late)
    assert_ticks_exact(influx_db.server, influx_db.name, stopped.ticks - 1)


FAULTS = {
    # status: (answers injected, headers, body, which writes: all, or only batches of more than 4 lines)
    413: (2, {}, b'{"error":"Request Entity Too Large"}', lambda lines: len(lines) > 4),
    429: (3, {"Retry-After": "1"}, b'{"error":"slow down"}', lambda _lines: True),
    500: (3, {}, b'{"error":"internal error"}', lambda _lines: True),
    503: (2, {}, b"service unavailable", lambda _lines: True),
}


@pytest.mark.parametrize("status", sorted(FAULTS))
def test_retryable_answers_every_tick_arrives_once(influx_db, faulty_proxy, live_daemons, status):
    """Injected: the proxy in front of the real InfluxDB answers writes with 413 (the next 2 batches
    of more than 4 lines: the daemon must split them), 429 with Retry-After: 1 (3 writes), 500 (3)
    or 503 (2). Asserted: the proxy gave exactly those answers, nothing was dead-lettered or dropped,
    and InfluxDB holds exactly one host point per measured tick, each device at those times, once."""
    n_faults, headers, body, when = FAULTS[status]
    faults = faulty_proxy(influx_db.server)
    d = live_daemons(proxied_url(faults, influx_db.name))
    d.start()
    wait_for(lambda: faults.statuses()[204] >= 1, timeout_s=60)
    faults.answer_next(n_faults, status, {"Content-Type": "application/json", **headers}, body, when)
    wait_for(lambda: faults.pending() == 0, timeout_s=90)
    d.wait_ticks(d.ticks() + 2)
    doc = d.wait_delivered()
    assert doc["delivery"]["dead_letter_points"] == 0 and doc["delivery"]["dropped_points"] == 0
    assert doc["delivery"]["write_errors"] == n_faults
    stopped = d.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert faults.statuses()[status] == n_faults
    if status == 413:  # the refused batches went through in halves
        first_413 = next(i for i, s in enumerate(faults.writes) if s.status == 413)
        assert any(s.status == 204 and len(s.lines) <= 4 for s in faults.writes[first_413:])
    assert_ticks_exact(influx_db.server, influx_db.name, stopped.ticks - 1)


def test_401_dead_letters_exactly_the_refused_points_and_the_rest_arrives(influx_db, faulty_proxy, live_daemons):
    """Injected: the next 3 writes answered 401 "authorization failed" (a credential rotated, then fixed).
    Asserted: the daemon dead-lettered exactly the lines of those 3 requests — its status and the
    dead-letter file say the same number, the file holds exactly those lines — nothing was retried
    (each refused line was sent once), and stored + dead-lettered host points = the ticks measured,
    with no point both stored and dead-lettered."""
    faults = faulty_proxy(influx_db.server)
    d = live_daemons(proxied_url(faults, influx_db.name))
    spool = d.carbond.tmp / "spool.db"
    d.env["CARBOND_STORE_SPOOL_PATH"] = str(spool)
    d.start()
    wait_for(lambda: faults.statuses()[204] >= 1, timeout_s=60)
    faults.answer_next(3, 401, {"Content-Type": "application/json"}, b'{"error":"authorization failed"}')
    wait_for(lambda: faults.pending() == 0, timeout_s=60)
    d.wait_ticks(d.ticks() + 4)
    doc = d.wait_delivered()
    refused = faults.lines_answered(401)
    assert refused and doc["delivery"]["dead_letter_points"] == len(refused)
    stopped = d.stop()
    assert stopped.returncode == 0, stopped.stderr
    dead = [json.loads(line) for line in spool.with_name("spool.dead-letter.jsonl").read_text().splitlines()]
    assert sorted(x["line"] for x in dead) == sorted(refused)
    assert {x["status"] for x in dead} == {401} and {x["reason"] for x in dead} == {"unauthorized"}
    assert len(refused) == len(set(refused))  # a 401 is not retried
    carbond_points = stored(influx_db.server, influx_db.name, "carbond")
    assert carbond_points[-1].fields["dead_letter_points"] == len(refused)  # the final self-metrics say so too
    dead_host_times = {int(line.rsplit(" ", 1)[1]) for line in refused if line.startswith("host,")}
    stored_host_times = {p.time_ns for p in stored(influx_db.server, influx_db.name, "host")}
    assert not dead_host_times & stored_host_times
    assert len(dead_host_times) + len(stored_host_times) == stopped.ticks - 1
    stored_devices = count(influx_db.server, influx_db.name, "device")
    dead_devices = sum(1 for line in refused if line.startswith("device,"))
    assert stored_devices + dead_devices == (stopped.ticks - 1) * len(DEVICES_2_GPUS)


def test_spool_budget_exhausted_drops_are_counted_exactly_and_the_rest_arrives(influxd_factory, live_daemons):
    """Injected: CARBOND_STORE_SPOOL_MAX_BYTES=6000 (a few seconds of points) and InfluxDB stopped for
    ~4 s, so the spool must drop its oldest points. Asserted: points stored in InfluxDB + the daemon's
    dropped_points (status and the final ``carbond`` self-metrics point, which agree) = every point the
    daemon wrote, exactly; the dropped host points are one contiguous stretch of the outage (the oldest
    first); everything measured after the drops arrives."""
    server = influxd_factory()
    server.create_database("carbond")
    d = live_daemons(server.url("carbond"))
    d.env["CARBOND_STORE_SPOOL_MAX_BYTES"] = "6000"
    d.start()
    wait_for(lambda: count(server, "carbond", "host") >= 4, timeout_s=60)
    server.stop()
    wait_for(lambda: (d.status() or {"delivery": {}})["delivery"].get("dropped_points", 0) > 0, timeout_s=60)
    d.wait_ticks(d.ticks() + 8)
    server.start()
    doc = d.wait_delivered()
    dropped = doc["delivery"]["dropped_points"]
    assert dropped > 0
    stopped = d.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert "DROPPED" in stopped.stderr
    assert count_all(server, "carbond") + dropped == stopped.written
    last_self = stored(server, "carbond", "carbond")[-1]
    assert last_self.fields["dropped_points"] == dropped
    hosts = stored(server, "carbond", "host")
    gaps = [(a.time_ns, b.time_ns) for a, b in itertools.pairwise(hosts)
            if b.time_ns - a.time_ns > b.fields["interval_s"] * S + 0.2 * S]
    assert len(gaps) == 1, gaps  # one stretch lost: the oldest points of the outage


@pytest.mark.slow
def test_a_minute_of_mixed_store_faults_every_tick_arrives_once(influx_db, faulty_proxy, live_daemons):
    """Injected, for 60 s (seeded, reproducible): each write has a 30% chance of one of 413 (batches of
    more than 4 lines), 429 (Retry-After 0-2 s), 500, 502, 503, or an answer 1.5 s past a 0.5 s store
    timeout (stored but unacknowledged). Asserted: no dead letters, no drops, and exactly one host point
    per measured tick, each device at those times, once, in order."""
    rng = random.Random(20261130)
    faults = faulty_proxy(influx_db.server)
    d = live_daemons(proxied_url(faults, influx_db.name))
    d.env["CARBOND_STORE_TIMEOUT_S"] = "0.5"
    d.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if faults.pending() == 0:
            kind = rng.choice([413, 429, 500, 502, 503, "slow", None, None])
            if kind == "slow":
                faults.delay_s = 1.5
            else:
                faults.delay_s = 0.0
                if kind == 413:
                    faults.answer_next(1, 413, body=b'{"error":"too large"}', when=lambda lines: len(lines) > 4)
                elif kind is not None:
                    faults.answer_next(1, kind, {"Retry-After": str(rng.randint(0, 2))} if kind == 429 else {})
        time.sleep(rng.uniform(0.2, 1.0))
    faults.delay_s = 0.0
    faults.clear()
    doc = d.wait_delivered(timeout_s=180)
    assert doc["delivery"]["dead_letter_points"] == 0 and doc["delivery"]["dropped_points"] == 0
    stopped = d.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert_ticks_exact(influx_db.server, influx_db.name, stopped.ticks - 1)
