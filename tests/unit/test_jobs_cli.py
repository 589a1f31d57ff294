"""``carbond jobs``: folding ``run`` points into one line per run, across hosts and processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbond.jobs_cli import collect, reduce_points, summarize
from carbond.store.base import make_point
from carbond.store.sqlite import SqliteStore

S = 1_000_000_000


def run_point(run: str, host: str, t_s: float, status: str = "running", **fields: float):
    tags = {"host": host, "project": "p", "job": "j", "phase": "training", "run": run, "status": status}
    return make_point("run", tags, {"duration_s": fields.pop("duration_s", t_s), **fields}, int(t_s * S))


def test_latest_point_per_host_and_hosts_summed():
    points = [
        run_point("a", "h1", 10, energy_j=10.0, co2_g=1.0, unit_samples=100.0, metric_loss=0.9),
        run_point("a", "h1", 20, "finished", energy_j=20.0, co2_g=2.0, unit_samples=200.0, metric_loss=0.5),
        run_point("a", "h2", 15, energy_j=5.0, co2_g=0.5, unit_samples=50.0, metric_loss=0.7),
    ]
    (a,) = summarize(reduce_points(reversed(points)))  # any order
    assert a.hosts == ["h1", "h2"] and a.status == "running"  # h2 has not finished
    assert a.totals["energy_j"] == 25.0 and a.totals["co2_g"] == 2.5
    assert a.units == {"samples": 250.0} and a.metrics == {"loss": 0.5}  # metrics: the latest point's
    assert a.started_ns == 0 and a.ended_ns == 20 * S and a.duration_s == 20.0


def test_a_terminal_status_wins_a_tie_and_failed_wins_across_hosts():
    points = [run_point("a", "h1", 10, "finished", energy_j=3.0), run_point("a", "h1", 10, "running", energy_j=3.0),
              run_point("a", "h2", 12, "failed", energy_j=1.0)]
    (a,) = summarize(reduce_points(points))
    assert a.status == "failed" and a.totals["energy_j"] == 4.0


def test_in_process_points_of_one_run_add_up():
    points = [run_point("b", "h1", 10, "finished", duration_s=5, energy_j=2.0, unit_samples=3.0, in_process=1.0),
              run_point("b", "h1", 12, "finished", duration_s=10, energy_j=4.0, metric_acc=0.8, in_process=1.0),
              run_point("b", "h1", 13, "finished", duration_s=1, unit_samples=1.0, in_process=1.0)]
    (b,) = summarize(reduce_points(points))
    assert b.totals == {"energy_j": 6.0} and b.units == {"samples": 4.0} and b.metrics == {"acc": 0.8}
    assert b.started_ns == 2 * S and b.ended_ns == 13 * S and b.status == "finished"


def test_live_runs_replace_their_hosts_stored_state(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    try:
        store.write([run_point("c", "h1", 10, energy_j=1.0), run_point("c", "h2", 10, energy_j=2.0)])
        live = [{"run": "c", "job": "j", "project": "p", "phase": "training", "status": "running", "duration_s": 30.0,
                 "energy_j": 5.0, "co2_g": 0.1, "units": {"tokens": 7}, "metrics": {}, "hosts": ["h1"]}]
        (c,) = collect(store, None, None, live, now_ns=40 * S)
    finally:
        store.close()
    assert c.live and c.totals["energy_j"] == 7.0 and c.units == {"tokens": 7.0} and c.hosts == ["h1", "h2"]


def test_many_runs_through_the_store(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    try:
        points = []
        for i in range(2000):
            host = f"h{i % 3}"
            points += [run_point(f"r{i}", host, 1000 + i, duration_s=1.0, energy_j=1.0),
                       run_point(f"r{i}", host, 2000 + i, "finished", duration_s=1001.0, energy_j=float(i))]
        store.write(points)
        runs = collect(store, None, None)
        assert len(runs) == 2000 and all(r.status == "finished" for r in runs)
        assert sum(r.totals["energy_j"] for r in runs) == pytest.approx(sum(range(2000)))
        assert [r.run for r in runs[:3]] == ["r0", "r1", "r2"]  # oldest first
        recent = collect(store, 2999 * S, None)  # the time window selects points, then runs
        assert [r.run for r in recent] == ["r999", *[f"r{i}" for i in range(1000, 2000)]][: len(recent)]
        assert len(recent) == 1001
    finally:
        store.close()
