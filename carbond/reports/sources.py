"""Where reports read ``run`` points from, per store — always aggregated where the store can.

- SQLite: the hourly rollups (:mod:`carbond.reports.rollup`), refreshed first when the file is
  writable; raw points only for partial hours and for what the rollups have not folded yet.
- InfluxDB: server-side ``last()`` per series (``SELECT last("duration_s"), <fields> ... GROUP BY *``
  returns the whole latest point of each series with its own time), the in-process points
  (``WHERE "in_process" = 1``), and hourly ``last("co2_g")`` per run and host for the timeline.
- Anything else with ``scan``: the raw points, filtered here.

A :class:`Selection` is a time range plus tag filters (``tag in values``, ANDed across tags).
Stdlib only.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from carbond.errors import StoreError
from carbond.reports import rollup
from carbond.reports.progress import NoProgress, Progress
from carbond.store import influxql
from carbond.store.base import Point

log = logging.getLogger(__name__)
IN_PROCESS = '"in_process" = 1'


@dataclass(frozen=True)
class Selection:
    since_ns: int | None = None
    until_ns: int | None = None
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (tag, allowed values)

    def matches(self, tags: Any) -> bool:
        return all(tags.get(key, "") in values for key, values in self.where)


def sqlite_path(store: Any) -> Any:
    from carbond.store.sqlite import SqliteStore

    return store.path if isinstance(store, SqliteStore) else None


def is_influx(store: Any) -> bool:
    return callable(getattr(store, "execute", None)) and hasattr(store, "target")


# --- run points ---------------------------------------------------------------------------------------------


def refresh_rollups(path: Any, progress: Progress) -> bool:
    """Bring the rollups up to date; False (and the raw tail is read instead) when the file is read-only."""
    progress.stage("carbond: folding new points into the hourly rollups")
    try:
        rollup.refresh(path, on_progress=progress.update)
    except sqlite3.Error as exc:
        log.debug("rollups of %s not refreshed (%s): reading the newer points raw", path, exc)
        return False
    return True


def run_points(store: Any, sel: Selection, progress: Progress | None = None, *, refresh: bool = True) -> Iterator[Point]:
    """The ``run`` points that decide each selected run's state (see :func:`rollup.run_points`)."""
    progress = progress or NoProgress()
    path = sqlite_path(store)
    if path is not None:
        if refresh:
            refresh_rollups(path, progress)
        progress.stage("carbond: reading runs")
        try:
            yield from rollup.run_points(path, sel.since_ns, sel.until_ns, sel.where)
        except sqlite3.Error as exc:
            raise StoreError(f"store {store.url}: reading runs failed: {exc}") from exc
        return
    if is_influx(store):
        progress.stage("carbond: asking InfluxDB for the latest point of each run")
        yield from _influx_run_points(store, sel)
        return
    progress.stage("carbond: scanning run points")
    yield from (p for p in store.scan("run", sel.since_ns, sel.until_ns) if sel.matches(p.tags))


def _source(store: Any) -> str:
    return influxql.source("run", store.target.rp)


def _where(sel: Selection, *extra: str) -> str:
    conds = [f"({' OR '.join(f'{influxql.ident(k)} = {influxql.string(v)}' for v in values)})"
             for k, values in sel.where if values]
    conds.extend(extra)
    if sel.since_ns is not None:
        conds.append(f"time >= {int(sel.since_ns)}")
    if sel.until_ns is not None:
        conds.append(f"time < {int(sel.until_ns)}")
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _field_keys(store: Any) -> list[str]:
    return sorted(influxql.field_keys(store.execute(f"SHOW FIELD KEYS FROM {_source(store)}")[0]))


def _influx_run_points(store: Any, sel: Selection) -> Iterator[Point]:
    fields = _field_keys(store)
    if "duration_s" not in fields:
        return
    others = [f for f in fields if f != "duration_s"]
    cols = ", ".join(['last("duration_s") AS "duration_s"', *(influxql.ident(f) for f in others)])
    for s in store.execute(f"SELECT {cols} FROM {_source(store)}{_where(sel)} GROUP BY *")[0]:
        tags = {k: str(v) for k, v in (s.get("tags") or {}).items() if v not in (None, "")}
        names = list(s.get("columns", []))
        for values in s.get("values", []):
            row = dict(zip(names, values, strict=False))
            if row.get("in_process") is not None:
                continue  # the in-process query below returns every one of them
            point_fields = {k: float(v) for k, v in row.items()
                            if k != "time" and isinstance(v, int | float) and not isinstance(v, bool)}
            yield Point("run", tags, point_fields, int(row["time"]))
    if "in_process" in fields:
        answer = store.execute(f"SELECT * FROM {_source(store)}{_where(sel, IN_PROCESS)}")[0]
        yield from influxql.scan_points("run", set(fields), [answer])


def influx_hourly_co2(store: Any, sel: Selection) -> list[tuple[str, str, int, float]]:
    """(run, host, hour start ns, latest cumulative co2_g in that hour), server-side; needs a bounded range."""
    statement = (f'SELECT last("co2_g") AS "co2_g" FROM {_source(store)}{_where(sel)} '
                 'GROUP BY "run", "host", time(1h) fill(none)')
    out = []
    for s in store.execute(statement)[0]:
        tags = s.get("tags") or {}
        for t, value in s.get("values", []):
            if isinstance(value, int | float):
                out.append((str(tags.get("run") or ""), str(tags.get("host") or ""), int(t), float(value)))
    return out


# --- what exists --------------------------------------------------------------------------------------------


def tag_values(store: Any, key: str) -> list[str]:
    """Every value of a ``run`` tag in the store (for "unknown project/run; these exist" messages)."""
    path = sqlite_path(store)
    if path is not None:
        try:
            return rollup.tag_values(path, key)
        except sqlite3.Error as exc:
            raise StoreError(f"store {store.url}: reading run tags failed: {exc}") from exc
    if is_influx(store):
        answer = store.execute(f"SHOW TAG VALUES FROM {_source(store)} WITH KEY = {influxql.ident(key)}")[0]
        return sorted({str(v[1]) for s in answer for v in s.get("values", []) if len(v) > 1 and v[1]})
    return sorted({p.tags[key] for p in store.scan("run") if p.tags.get(key)})


def missing(store: Any, key: str, wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the wanted values of tag ``key`` that no run has, every value that exists)."""
    existing = tag_values(store, key)
    have = set(existing)
    return [w for w in wanted if w not in have], existing
