"""SQLite rollups of ``run`` points: the runs they give equal the runs the raw points give."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbond.jobs_cli import reduce_points, summarize
from carbond.reports import rollup
from carbond.reports.sources import Selection, run_points
from carbond.store.base import make_point
from carbond.store.sqlite import SqliteStore

S = 1_000_000_000
H = 3600 * S
T0 = 1_700_000_000 * S // H * H  # hour-aligned


def point(run: str, host: str, t_ns: int, status: str = "running", project: str = "p", **fields: float):
    tags = {"host": host, "project": project, "job": "j" + run, "phase": "training", "run": run, "status": status}
    return make_point("run", tags, {"duration_s": fields.pop("duration_s", 60.0), **fields}, t_ns)


def as_dicts(points) -> dict[str, dict]:
    out = {}
    for r in summarize(reduce_points(points)):
        out[r.run] = {"hosts": r.hosts, "status": r.status, "started": r.started_ns, "ended": r.ended_ns,
                      "totals": r.totals, "units": r.units, "metrics": r.metrics}
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for run, w in want.items():
        g = got[run]
        assert (g["hosts"], g["status"], g["started"], g["ended"]) == (w["hosts"], w["status"], w["started"], w["ended"]), run
        for key in ("totals", "units", "metrics"):
            assert g[key] == pytest.approx(w[key], rel=1e-12), (run, key)


def raw(store: SqliteStore, sel: Selection) -> dict:
    return as_dicts(p for p in store.scan("run", sel.since_ns, sel.until_ns) if sel.matches(p.tags))


def rolled(store: SqliteStore, sel: Selection, refresh: bool = True) -> dict:
    return as_dicts(run_points(store, sel, refresh=refresh))


def test_fold_per_hour_and_edges(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    pts = []
    for i in range(1, 400):  # 6.6 h of a run, one point a minute, over hour boundaries
        pts.append(point("a", "h1", T0 + i * 60 * S, duration_s=i * 60.0, energy_j=i * 10.0, co2_g=i * 1.0, unit_samples=i))
    pts.append(point("a", "h1", T0 + 400 * 60 * S, "finished", duration_s=24000.0, energy_j=4000.0, co2_g=400.0,
                     metric_acc=0.9))
    pts.append(point("b", "h2", T0 + 30 * 60 * S, "finished", duration_s=5.0, energy_j=3.0, in_process=1.0, unit_samples=2.0))
    pts.append(point("b", "h2", T0 + 31 * 60 * S, "finished", duration_s=7.0, energy_j=4.0, in_process=1.0))
    pts.append(point("c", "h1", T0 + 90 * 60 * S, project="q", energy_j=1.0))
    store.write(pts)
    for sel in (Selection(), Selection(T0 + 17 * 60 * S, T0 + 200 * 60 * S + 7), Selection(None, T0 + 3 * H),
                Selection(T0 + 2 * H, None), Selection(T0 + 10 * S, T0 + 20 * S), Selection(where=(("project", ("p",)),)),
                Selection(T0, T0 + 45 * 60 * S, (("run", ("b", "c")),))):
        want = raw(store, sel)
        assert_same(rolled(store, sel, refresh=False), want)  # no rollups yet: raw points
        assert_same(rolled(store, sel), want)  # refreshed: rollups + edges
    assert rollup.watermark(store._db) == len(pts)
    n_rollup = store._db.execute("SELECT COUNT(*) FROM rollup_run_1h").fetchone()[0]
    assert n_rollup < 8 * 8  # a handful of fields per series and hour, not one row per point
    store.close()


def test_points_written_after_a_refresh_are_read_raw_then_folded(tmp_path: Path):
    store = SqliteStore(tmp_path / "s.db")
    store.write([point("a", "h", T0 + i * 600 * S, duration_s=i * 600.0, energy_j=float(i)) for i in range(1, 10)])
    rollup.refresh(store.path)
    store.write([point("a", "h", T0 + i * 600 * S, duration_s=i * 600.0, energy_j=float(i)) for i in range(10, 20)])
    assert rolled(store, Selection(), refresh=False)["a"]["totals"] == {"energy_j": 19.0}  # the tail, raw
    stats = rollup.refresh(store.path, chunk_rows=3)
    assert stats.rows_scanned == 10 and stats.chunks == 4
    assert rolled(store, Selection(), refresh=False)["a"]["totals"] == {"energy_j": 19.0}
    rollup.reset(store.path)
    assert rollup.watermark(store._db) == 0
    store.close()


def test_a_store_that_cannot_be_written_is_read_from_the_rollups_and_the_raw_tail(tmp_path: Path, monkeypatch):
    store = SqliteStore(tmp_path / "s.db")
    store.write([point("a", "h", T0 + i * 600 * S, energy_j=float(i)) for i in range(1, 10)])
    rollup.refresh(store.path)
    store.write([point("a", "h", T0 + 10 * 600 * S, "finished", energy_j=10.0)])
    store.close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(rollup, "refresh", refuse)
    ro = SqliteStore(tmp_path / "s.db", readonly=True)
    (run,) = summarize(reduce_points(run_points(ro, Selection())))
    assert run.status == "finished" and run.totals == {"energy_j": 10.0}
    ro.close()


events = st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["h1", "h2"]), st.integers(0, 5 * 3600),
    st.sampled_from(["running", "finished", "failed"]), st.booleans(), st.floats(0, 1e6, allow_nan=False)),
    min_size=1, max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events, lo=st.one_of(st.none(), st.integers(0, 5 * 3600)), span=st.integers(1, 6 * 3600),
       open_end=st.booleans(), split=st.integers(0, 60))
def test_rollups_equal_raw_points(tmp_path_factory, events, lo, span, open_end, split):
    store = SqliteStore(tmp_path_factory.mktemp("r") / "s.db")
    pts, seen = [], set()
    for run, host, t_s, status, in_process, energy in events:
        if (run, host, status, t_s) in seen:  # one point per series and time (a merge is a replay: same values)
            continue
        seen.add((run, host, status, t_s))
        extra = {"in_process": 1.0} if in_process else {}
        pts.append(point(run, host, T0 + t_s * S, status, duration_s=float(t_s % 900), energy_j=energy, co2_g=energy / 7,
                         unit_samples=float(t_s), metric_acc=energy / 1e6, **extra))
    store.write(pts[:split])
    rollup.refresh(store.path, chunk_rows=7)
    store.write(pts[split:])  # some folded, some only raw
    since = None if lo is None else T0 + lo * S
    until = None if open_end or since is None else since + span * S
    sel = Selection(since, until)
    assert_same(rolled(store, sel, refresh=False), raw(store, sel))
    assert_same(rolled(store, sel), raw(store, sel))
    store.close()
