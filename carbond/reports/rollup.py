"""Hourly rollups of ``run`` points inside the embedded SQLite file, so long ranges stay fast.

A run's ``run`` points carry its totals so far: what a report needs from them is, per series,
the latest point (and every in-process point, which add up — see :mod:`carbond.jobs_cli`).
Reading 30 days of raw points to find those is slow (the points table has no per-series
index), so this module keeps, next to the store's own tables:

- ``rollup_run_1h`` — per run series, UTC hour and field: the field's value on the latest
  daemon-written point of that hour, and that point's time;
- ``rollup_run_inprocess`` — a copy of every in-process ``run`` point (``in_process`` field);
- ``rollup_state`` — the highest ``points.id`` folded in (the watermark).

:func:`refresh` folds in the points inserted since the watermark, in short transactions
(rows are appended with increasing ids, so "new" is ``id > watermark``). It runs in the
daemon every few minutes (:func:`carbond.reports.schedule.schedule_rollups`) and before every
report that may write the file; a reader that may not write still gets exact answers from
the rollups up to the watermark plus the raw points after it (:func:`run_points`).

The answer is exact: folding the per-hour latest points gives the same per-series latest
point as folding all of them, and partial hours at the edges of a range are read raw.
A point merged into an existing one (same series and time, a replay) after it was folded in
keeps its folded values; replays carry the same values. Only stdlib here: the daemon imports it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from carbond.store.base import Point

log = logging.getLogger(__name__)

HOUR_NS = 3_600_000_000_000
CHUNK_ROWS = 500_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rollup_run_1h (
    series_id INTEGER NOT NULL, hour_ns INTEGER NOT NULL, field TEXT NOT NULL,
    time_ns INTEGER NOT NULL, value REAL,
    PRIMARY KEY (series_id, hour_ns, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_run_1h_by_hour ON rollup_run_1h (hour_ns);
CREATE TABLE IF NOT EXISTS rollup_run_inprocess (
    point_id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL, time_ns INTEGER NOT NULL, fields TEXT NOT NULL
);
"""
_FOLD = f"""
INSERT INTO rollup_run_1h (series_id, hour_ns, field, time_ns, value)
SELECT series_id, hour_ns, field, time_ns, value FROM (
    SELECT p.series_id AS series_id, (p.time_ns / {HOUR_NS}) * {HOUR_NS} AS hour_ns, j.key AS field,
           p.time_ns AS time_ns, j.value AS value,
           ROW_NUMBER() OVER (PARTITION BY p.series_id, p.time_ns / {HOUR_NS}, j.key ORDER BY p.time_ns DESC, p.id DESC) AS rn
    FROM points p, json_each(p.fields) j
    WHERE p.id > ?1 AND p.id <= ?2 AND p.series_id IN (SELECT id FROM series WHERE measurement = 'run')
      AND json_extract(p.fields, '$.in_process') IS NULL
) WHERE rn = 1
ON CONFLICT (series_id, hour_ns, field) DO UPDATE SET time_ns = excluded.time_ns, value = excluded.value
WHERE excluded.time_ns >= rollup_run_1h.time_ns
"""
_COPY_INPROCESS = """
INSERT OR REPLACE INTO rollup_run_inprocess (point_id, series_id, time_ns, fields)
SELECT p.id, p.series_id, p.time_ns, p.fields FROM points p
WHERE p.id > ?1 AND p.id <= ?2 AND p.series_id IN (SELECT id FROM series WHERE measurement = 'run')
  AND json_extract(p.fields, '$.in_process') IS NOT NULL
"""


@dataclass(frozen=True)
class RefreshStats:
    watermark_before: int
    watermark_after: int
    chunks: int

    @property
    def rows_scanned(self) -> int:
        return self.watermark_after - self.watermark_before


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode={'ro' if readonly else 'rw'}"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=30000")
    return db


def _has_tables(db: sqlite3.Connection) -> bool:
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"rollup_state", "rollup_run_1h", "rollup_run_inprocess"} <= names


def watermark(db: sqlite3.Connection) -> int:
    """The highest ``points.id`` folded into the rollups (0: none yet)."""
    if not _has_tables(db):
        return 0
    row = db.execute("SELECT value FROM rollup_state WHERE name = 'points_id'").fetchone()
    return int(row[0]) if row else 0


def refresh(path: str | Path, *, chunk_rows: int = CHUNK_ROWS,
            on_progress: Callable[[int, int], None] | None = None) -> RefreshStats:
    """Fold the points inserted since the last refresh into the rollups (creating them first).

    Each chunk of ``chunk_rows`` point ids is one short write transaction, so the daemon's
    own writes wait at most one chunk. ``on_progress(done, total)`` is called per chunk.
    Raises ``sqlite3.Error`` (for example when the file is read-only for this user).
    """
    db = _connect(Path(path), readonly=False)
    try:
        db.executescript(_SCHEMA)
        start = mark = watermark(db)
        top = db.execute("SELECT COALESCE(MAX(id), 0) FROM points").fetchone()[0]
        chunks = 0
        while mark < top:
            end = min(mark + chunk_rows, top)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_FOLD, (mark, end))
                db.execute(_COPY_INPROCESS, (mark, end))
                db.execute("INSERT INTO rollup_state (name, value) VALUES ('points_id', ?) "
                           "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (end,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            mark, chunks = end, chunks + 1
            if on_progress is not None:
                on_progress(mark - start, top - start)
        return RefreshStats(start, mark, chunks)
    finally:
        db.close()


def reset(path: str | Path) -> None:
    """Drop the rollups (the next refresh rebuilds them from every point)."""
    db = _connect(Path(path), readonly=False)
    try:
        db.executescript("DROP TABLE IF EXISTS rollup_run_1h; DROP TABLE IF EXISTS rollup_run_inprocess; "
                         "DROP TABLE IF EXISTS rollup_state;")
    finally:
        db.close()


# --- reading ---------------------------------------------------------------------------------------------


def run_series(db: sqlite3.Connection) -> dict[int, dict[str, str]]:
    """Every ``run`` series: id → tags."""
    return {sid: json.loads(tags) for sid, tags in db.execute("SELECT id, tags FROM series WHERE measurement = 'run'")}


def _matches(tags: Mapping[str, str], where: Sequence[tuple[str, Sequence[str]]]) -> bool:
    return all(tags.get(key, "") in values for key, values in where)


def _raw(db: sqlite3.Connection, ids_json: str, series: Mapping[int, Mapping[str, str]], cond: str,
         args: Sequence[int]) -> Iterator[Point]:
    """Raw points; ``cond`` steers the index: ``+col`` keeps SQLite from using ``col``'s index, so the
    unfolded tail is read by rowid (``id > watermark``) and the edges by time, never the whole table."""
    sql = (f"SELECT series_id, time_ns, fields FROM points WHERE {cond} "
           "AND series_id IN (SELECT value FROM json_each(?))")
    for sid, t, fields in db.execute(sql, (*args, ids_json)):
        yield Point("run", series[sid], json.loads(fields), t)


def run_points(path: str | Path, since_ns: int | None, until_ns: int | None,
               where: Sequence[tuple[str, Sequence[str]]] = ()) -> Iterator[Point]:
    """The ``run`` points that decide every run's state in ``[since_ns, until_ns)``, tags matching ``where``.

    Per series and whole UTC hour: the latest daemon point (rebuilt from the rollups); every
    in-process point; and raw points for the partial hours at the edges and for points the
    rollups have not folded in yet. Folding these with :func:`carbond.jobs_cli.reduce_points`
    gives what folding every raw point in the range gives.
    """
    db = _connect(Path(path), readonly=True)
    try:
        series = {sid: tags for sid, tags in run_series(db).items() if _matches(tags, where)}
        if not series:
            return
        ids_json = json.dumps(sorted(series))
        mark = watermark(db)
        lo = -(2**63) if since_ns is None else since_ns
        hi = 2**63 - 1 if until_ns is None else until_ns
        if mark == 0:  # no rollups: the raw points in the range (time index)
            yield from _raw(db, ids_json, series, "time_ns >= ? AND time_ns < ?", (lo, hi))
            return
        first_hour = -(-lo // HOUR_NS) * HOUR_NS if since_ns is not None else lo  # whole hours [first_hour, last_hour)
        last_hour = (hi // HOUR_NS) * HOUR_NS if until_ns is not None else hi
        if first_hour >= last_hour:
            yield from _raw(db, ids_json, series, "time_ns >= ? AND time_ns < ?", (lo, hi))
            return
        if lo < first_hour:
            yield from _raw(db, ids_json, series, "time_ns >= ? AND time_ns < ? AND +id <= ?", (lo, first_hour, mark))
        if last_hour < hi:
            yield from _raw(db, ids_json, series, "time_ns >= ? AND time_ns < ? AND +id <= ?", (last_hour, hi, mark))
        yield from _raw(db, ids_json, series, "id > ? AND +time_ns >= ? AND +time_ns < ?", (mark, lo, hi))
        sql = ("SELECT series_id, time_ns, fields FROM rollup_run_inprocess WHERE point_id <= ? AND time_ns >= ? "
               "AND time_ns < ? AND series_id IN (SELECT value FROM json_each(?))")
        for sid, t, fields in db.execute(sql, (mark, first_hour, last_hour, ids_json)):
            yield Point("run", series[sid], json.loads(fields), t)
        sql = ("SELECT series_id, hour_ns, field, time_ns, value FROM rollup_run_1h WHERE hour_ns >= ? AND hour_ns < ? "
               "AND series_id IN (SELECT value FROM json_each(?)) ORDER BY series_id, hour_ns")
        key: tuple[int, int] | None = None
        fields: dict[str, float] = {}
        latest = 0
        for sid, hour, field, t, value in db.execute(sql, (first_hour, last_hour, ids_json)):
            if (sid, hour) != key:
                if key is not None and fields:
                    yield Point("run", series[key[0]], fields, latest)
                key, fields, latest = (sid, hour), {}, t
            if value is not None:
                fields[field] = float(value)
            latest = max(latest, t)
        if key is not None and fields:
            yield Point("run", series[key[0]], fields, latest)
    finally:
        db.close()


def tag_values(path: str | Path, key: str) -> list[str]:
    """The values of one tag over every ``run`` series (what exists, for error messages)."""
    db = _connect(Path(path), readonly=True)
    try:
        return sorted({tags[key] for tags in run_series(db).values() if tags.get(key)})
    finally:
        db.close()
