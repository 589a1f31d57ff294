"""The report data layer: aggregated store answers → run summaries → pandas frames.

Runs are folded exactly as ``carbond jobs`` folds them (:func:`carbond.jobs_cli.reduce_points`
and :func:`~carbond.jobs_cli.summarize`), from the few points that decide each run's state
(:func:`carbond.reports.sources.run_points`): per series and hour on SQLite, per series on
InfluxDB. A run counts whole when any of its points falls in the range, with its totals as of
its last point before ``until`` (the semantics of ``carbond jobs --since/--until``).

The cumulative-CO2 timeline is built from the same points in one pass: per run and host,
the latest cumulative ``co2_g`` of each UTC hour, turned into hourly increments (in-process
points add their own totals), so its last value equals the table's total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from carbond.jobs_cli import STATUS_RANK, RunSummary, reduce_points, summarize
from carbond.reports import sources
from carbond.reports.progress import NoProgress, Progress
from carbond.reports.rollup import HOUR_NS
from carbond.reports.sources import Selection
from carbond.store.base import Point, Query

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunData", "Selection", "load", "query_frame", "runs_frame", "timeline_frame"]


@dataclass(frozen=True)
class RunData:
    runs: tuple[RunSummary, ...]
    timeline: tuple[tuple[int, float], ...] = ()  # (time ns, cumulative co2_g): 0 at the first hour's start, then hour ends


class _HourlyCo2:
    """Per (run, host) the latest cumulative co2_g of each hour; in-process totals per hour."""

    def __init__(self) -> None:
        self.daemon: dict[tuple[str, str], dict[int, tuple[int, int, float]]] = defaultdict(dict)
        self.in_process: dict[int, float] = defaultdict(float)
        self.in_process_keys: set[tuple[str, str]] = set()

    def add(self, p: Point) -> None:
        co2 = p.fields.get("co2_g")
        run = p.tags.get("run")
        if co2 is None or not run:
            return
        hour = (p.time_ns // HOUR_NS) * HOUR_NS
        if p.fields.get("in_process"):
            self.in_process[hour] += co2
            self.in_process_keys.add((run, p.tags.get("host", "")))
            return
        hours = self.daemon[(run, p.tags.get("host", ""))]
        candidate = (p.time_ns, STATUS_RANK.get(p.tags.get("status", ""), 0), co2)
        current = hours.get(hour)
        if current is None or candidate[:2] >= current[:2]:
            hours[hour] = candidate

    def cumulative(self) -> tuple[tuple[int, float], ...]:
        increments: dict[int, float] = defaultdict(float)
        for hours in self.daemon.values():
            previous = 0.0
            for hour in sorted(hours):
                value = hours[hour][2]
                increments[hour] += value - previous
                previous = value
        for hour, value in self.in_process.items():
            increments[hour] += value
        hours = sorted(increments)
        out, total = [(hours[0], 0.0)] if hours else [], 0.0
        for hour in hours:
            total += increments[hour]
            out.append((hour + HOUR_NS, total))
        return tuple(out)


def _tee(points: Iterable[Point], acc: _HourlyCo2) -> Iterator[Point]:
    for p in points:
        acc.add(p)
        yield p


def load(store: Any, sel: Selection, *, timeline: bool = False, progress: Progress | None = None,
         refresh: bool = True) -> RunData:
    """The selected runs (oldest first) and, with ``timeline``, the cumulative CO2 per hour."""
    progress = progress or NoProgress()
    acc = _HourlyCo2()
    runs = summarize(reduce_points(_tee(sources.run_points(store, sel, progress, refresh=refresh), acc)))
    if not timeline or not runs:
        return RunData(tuple(runs))
    if sources.is_influx(store):  # the per-series answer has one point per series: ask for the hours
        acc.daemon.clear()
        lo = sel.since_ns if sel.since_ns is not None else min(r.started_ns or 0 for r in runs)
        hi = sel.until_ns if sel.until_ns is not None else max(r.ended_ns or 0 for r in runs) + 1
        progress.stage("carbond: asking InfluxDB for hourly CO2")
        for run, host, hour, co2 in sources.influx_hourly_co2(store, Selection(lo, hi, sel.where)):
            if (run, host) not in acc.in_process_keys:  # those are counted from their own points
                acc.daemon[(run, host)][hour] = (hour, 0, co2)
    return RunData(tuple(runs), acc.cumulative())


# --- frames ---------------------------------------------------------------------------------------------------


def runs_frame(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """One row per run: identity, status, hosts, duration_s, energy_j, co2_g, water_l, embodied_g,
    ``source_<source>_j`` (joules by how they were known), ``unit_<name>``, ``metric_<name>`` and ``tag_<name>`` columns."""
    import pandas as pd

    rows = []
    for r in runs:
        t = r.totals
        row: dict[str, Any] = {
            "run": r.run, "job": r.job, "project": r.project, "phase": r.phase, "status": r.status,
            "hosts": ",".join(r.hosts), "started_ns": r.started_ns, "ended_ns": r.ended_ns, "duration_s": r.duration_s,
            "energy_j": t.get("energy_j", 0.0), "co2_g": t.get("co2_g", 0.0), "water_l": t.get("water_l", 0.0),
            "embodied_g": t.get("embodied_g", 0.0),
        }
        row.update({k: v for k, v in t.items() if k.startswith("source_")})
        row.update({f"unit_{k}": v for k, v in r.units.items()})
        row.update({f"metric_{k}": v for k, v in r.metrics.items()})
        row.update({f"tag_{k}": v for k, v in r.tags.items()})
        rows.append(row)
    columns = ["run", "job", "project", "phase", "status", "hosts", "started_ns", "ended_ns", "duration_s", "energy_j",
               "co2_g", "water_l", "embodied_g"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*columns, *(k for row in rows for k in row)])))


def timeline_frame(timeline: Sequence[tuple[int, float]]) -> pd.DataFrame:
    """``time`` (UTC) and cumulative ``co2_kg``."""
    import pandas as pd

    return pd.DataFrame({"time": pd.to_datetime([t for t, _ in timeline], unit="ns", utc=True),
                         "co2_kg": [v / 1000.0 for _, v in timeline]})


def query_frame(store: Any, q: Query) -> pd.DataFrame:
    """Any store query (aggregated in the store) as a frame: ``time`` when bucketed, the group tags, the fields."""
    import pandas as pd

    rows = store.query(q)
    data: dict[str, list[Any]] = {}
    if q.every_s:
        data["time"] = [r.time_ns for r in rows]
    for tag in q.group_by:
        data[tag] = [r.tags.get(tag, "") for r in rows]
    for f in q.fields:
        data[f] = [r.values.get(f) for r in rows]
    frame = pd.DataFrame(data, columns=list(data))
    if q.every_s:
        frame["time"] = pd.to_datetime(frame["time"], unit="ns", utc=True)
    return frame
