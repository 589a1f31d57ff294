"""The embedded store: one SQLite file, WAL mode, the same schema as InfluxDB.

Tables: ``series`` (measurement + canonical tag set) and ``points`` (series, time,
fields as JSON). A point with the same series and timestamp as an existing one merges
its fields into it, as InfluxDB does, so replays are idempotent.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path

from carbond.errors import StoreError, UsageError
from carbond.store.base import Point, Query, Row

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (measurement, tags)
);
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL REFERENCES series(id),
    time_ns INTEGER NOT NULL,
    fields TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS points_by_time ON points (time_ns, series_id);
"""
# Rows are appended in time order and the unique index leads with time, so a tick's
# commit touches the last page or two of each B-tree instead of one page per series.
_UPSERT = (
    "INSERT INTO points (series_id, time_ns, fields) VALUES (?, ?, ?) "
    "ON CONFLICT (time_ns, series_id) DO UPDATE SET fields = json_patch(points.fields, excluded.fields)"
)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


@lru_cache(maxsize=4096)
def _plain_keys(keys: tuple[str, ...]) -> bool:
    return all(_PLAIN_KEY.match(k) for k in keys)


def _fields_json(fields: Mapping[str, float]) -> str:
    """JSON of a point's (finite float) fields; a fast path for plain keys."""
    if _plain_keys(tuple(fields)):
        return "{" + ",".join(f'"{k}":{v!r}' for k, v in fields.items()) + "}"
    return json.dumps(dict(fields), separators=(",", ":"))


def _ident(name: str) -> str:
    return "'$." + '"' + name.replace("'", "''").replace('"', '\\"') + '"' + "'"


class SqliteStore:
    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path}"
        self._lock = threading.Lock()
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        if readonly:
            if not self.path.exists():
                raise UsageError(f"store {self.url}: no database at {self.path}")
            uri = f"file:{self.path}?mode=ro"
            self._db = self._connect(uri, uri=True)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"store {self.url}: cannot create directory {self.path.parent}: {exc.strerror}") from exc
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise UsageError(f"store {self.url}: {self.path} is not writable by this user")
        if not self.path.exists() and not os.access(self.path.parent, os.W_OK):
            raise UsageError(f"store {self.url}: directory {self.path.parent} is not writable by this user")
        self._db = self._connect(str(self.path))
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise UsageError(f"store {self.url}: cannot initialise the database: {exc}") from exc

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise UsageError(f"store {self.url}: cannot open {self.path}: {exc}") from exc
        db.execute("PRAGMA busy_timeout=30000")
        return db

    # --- writes ---------------------------------------------------------------------------
    def _series_id(self, measurement: str, tags: Mapping[str, str]) -> int:
        key = (measurement, tuple(sorted(tags.items())))
        sid = self._series.get(key)
        if sid is None:
            row = (measurement, json.dumps(dict(key[1]), separators=(",", ":")))
            self._db.execute("INSERT OR IGNORE INTO series (measurement, tags) VALUES (?, ?)", row)
            sid = self._db.execute("SELECT id FROM series WHERE measurement=? AND tags=?", row).fetchone()[0]
            self._series[key] = sid
        return sid

    def write(self, points: Iterable[Point]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    rows = [(self._series_id(p.measurement, p.tags), p.time_ns, _fields_json(p.fields))
                            for p in points if p.fields]
                    self._db.executemany(_UPSERT, rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    self._series.clear()  # ids inserted in the rolled-back transaction are gone
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.url}: write failed: {exc}") from exc

    # --- reads ----------------------------------------------------------------------------
    def _range(self, since_ns: int | None, until_ns: int | None) -> tuple[str, list[int]]:
        sql, args = "", []
        if since_ns is not None:
            sql += " AND p.time_ns >= ?"
            args.append(since_ns)
        if until_ns is not None:
            sql += " AND p.time_ns < ?"
            args.append(until_ns)
        return sql, args

    def scan(self, measurement: str | None, since_ns: int | None = None, until_ns: int | None = None) -> Iterator[Point]:
        rng, args = self._range(since_ns, until_ns)
        where = "s.measurement = ?" if measurement else "1=1"
        params = ([measurement] if measurement else []) + args
        sql = (f"SELECT s.measurement, s.tags, p.time_ns, p.fields FROM points p JOIN series s ON s.id = p.series_id "
               f"WHERE {where}{rng} ORDER BY p.time_ns, s.measurement, s.tags")
        try:
            cursor = self._db.execute(sql, params)
            for m, tags, t, fields in cursor:
                yield Point(m, json.loads(tags), json.loads(fields), t)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.url}: read failed: {exc}") from exc

    def measurements(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT measurement FROM series ORDER BY 1")]

    def query(self, q: Query) -> list[Row]:
        rng, args = self._range(q.since_ns, q.until_ns)
        where = "s.measurement = ?" + rng
        params: list[object] = [q.measurement, *args]
        for tag, value in q.where:
            where += f" AND json_extract(s.tags, {_ident(tag)}) = ?"
            params.append(value)
        keys = [f"json_extract(s.tags, {_ident(t)})" for t in q.group_by]
        if q.every_s:
            width = int(q.every_s * 1e9)
            keys.append(f"(p.time_ns / {width}) * {width}")
        values = [f"json_extract(p.fields, {_ident(f)})" for f in q.fields]
        base = f"FROM points p JOIN series s ON s.id = p.series_id WHERE {where}"
        k_cols = [f"k{i}" for i in range(len(keys))]
        v_cols = [f"v{i}" for i in range(len(values))]
        inner = ", ".join([*(f"{e} AS {c}" for e, c in zip(keys, k_cols, strict=True)),
                           *(f"{e} AS {c}" for e, c in zip(values, v_cols, strict=True))])
        group = f" GROUP BY {', '.join(k_cols)} ORDER BY {', '.join(k_cols)}" if keys else ""
        if q.agg == "last":
            part = f"PARTITION BY {', '.join(keys)} " if keys else ""
            sql = (f"SELECT {', '.join([*k_cols, *v_cols])} FROM (SELECT {inner}, ROW_NUMBER() OVER "
                   f"({part}ORDER BY p.time_ns DESC) AS rn {base}) WHERE rn = 1"
                   + (f" ORDER BY {', '.join(k_cols)}" if keys else ""))
        elif q.agg == "integral":
            # trapezoid per series (and time bucket), in value·seconds, then summed per group
            part = "sid" + (f", {k_cols[-1]}" if q.every_s else "")
            areas = ", ".join(f"(v{i} + LAG(v{i}) OVER w) / 2.0 * (t - LAG(t) OVER w) / 1e9 AS a{i}"
                              for i in range(len(values)))
            sums = ", ".join(f"SUM(a{i})" for i in range(len(values)))
            sql = (f"SELECT {', '.join([*k_cols, sums])} FROM (SELECT {', '.join([*k_cols, areas])} FROM "
                   f"(SELECT p.series_id AS sid, p.time_ns AS t, {inner} {base}) "
                   f"WINDOW w AS (PARTITION BY {part} ORDER BY t)){group}")
        else:
            fn = {"sum": "SUM", "mean": "AVG", "min": "MIN", "max": "MAX", "count": "COUNT"}[q.agg]
            aggs = ", ".join(f"{fn}({c})" for c in v_cols)
            sql = f"SELECT {', '.join([*k_cols, aggs])} FROM (SELECT {inner} {base}){group}"
        try:
            rows = self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.url}: query failed: {exc}") from exc
        out = []
        n_group = len(q.group_by)
        for r in rows:
            vals = r[len(keys):]
            if q.agg != "count" and all(v is None for v in vals):
                continue
            tags = {t: ("" if r[i] is None else str(r[i])) for i, t in enumerate(q.group_by)}
            t_ns = int(r[n_group]) if q.every_s else None
            out.append(Row(t_ns, tags, {f: (None if v is None else float(v)) for f, v in zip(q.fields, vals, strict=True)}))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
