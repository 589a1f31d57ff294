"""The store query model in InfluxQL: statements from a :class:`Query`, Rows from the answers.

Pure (no I/O), so it is unit-tested on strings. The results equal the SQLite store's:

- ``sum/mean/min/max/count/last`` run as one ``SELECT agg("f") AS "f" ... GROUP BY tags, time(...)``;
- ``integral`` runs per series (``integral(f, 1s) ... GROUP BY *``; InfluxQL's ``integral()`` over
  a group would interpolate across series), and the per-series areas are summed per group
  here (1.6.7's subquery ``SELECT sum(...) FROM (... GROUP BY *) GROUP BY tag`` sometimes
  returns one group as two rows);
- ``integral`` with time buckets cannot run server-side with SQLite's rule (InfluxQL's
  windowed integral interpolates at the bucket edges, SQLite's sums only the pairs inside a
  bucket): the raw points are selected server-side (range, tags) and integrated here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from carbond.store.base import Point, Query, Row

_IDENT = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_STRING = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n"})


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.translate(_IDENT) + '"'


def string(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.translate(_STRING) + "'"


def source(measurement: str, rp: str = "") -> str:
    return f"{ident(rp)}.{ident(measurement)}" if rp else ident(measurement)


def where_clause(since_ns: int | None, until_ns: int | None, tags: Iterable[tuple[str, str]] = ()) -> str:
    conds = [f"{ident(k)} = {string(v)}" for k, v in tags]
    if since_ns is not None:
        conds.append(f"time >= {int(since_ns)}")
    if until_ns is not None:
        conds.append(f"time < {int(until_ns)}")
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _width_ns(q: Query) -> int:
    return int(q.every_s * 1e9) if q.every_s else 0


def _group(q: Query, *, extra: str = "") -> str:
    keys = [ident(t) for t in q.group_by]
    if extra:
        keys.insert(0, extra)
    if q.every_s:
        keys.append(f"time({_width_ns(q)}ns)")
    if not keys:
        return ""
    return " GROUP BY " + ", ".join(keys) + (" fill(none)" if q.every_s else "")


def select_statement(q: Query, rp: str = "") -> str:
    """The statement for ``q`` (for integral with buckets: the raw points, see :func:`integrate`)."""
    where = where_clause(q.since_ns, q.until_ns, q.where)
    src = source(q.measurement, rp)
    if q.agg == "integral" and q.every_s:
        cols = ", ".join(ident(f) for f in q.fields)
        return f"SELECT {cols} FROM {src}{where} GROUP BY *"
    if q.agg == "integral":
        cols = ", ".join(f"integral({ident(f)}, 1s) AS {ident(f)}" for f in q.fields)
        return f"SELECT {cols} FROM {src}{where} GROUP BY *"
    fn = {"sum": "sum", "mean": "mean", "min": "min", "max": "max", "count": "count", "last": "last"}[q.agg]
    cols = ", ".join(f"{fn}({ident(f)}) AS {ident(f)}" for f in q.fields)
    return f"SELECT {cols} FROM {src}{where}{_group(q)}"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _sort_key(q: Query, row: Row) -> tuple:
    return (*(row.tags.get(t, "") for t in q.group_by), row.time_ns or 0)


def rows(q: Query, series: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Rows from the answer to :func:`select_statement`, ordered by group keys then time."""
    if q.agg == "integral":
        return integrate(q, series) if q.every_s else _sum_series(q, series)
    out: list[Row] = []
    for s in series:
        tags = dict(s.get("tags") or {})
        group = {t: str(tags.get(t) or "") for t in q.group_by}
        cols = list(s.get("columns", []))
        for values in s.get("values", []):
            by_col = dict(zip(cols, values, strict=False))
            vals = {f: _num(by_col.get(f)) for f in q.fields}
            if q.agg != "count" and all(v is None for v in vals.values()):
                continue
            if q.agg == "count":
                vals = {f: (0.0 if v is None else v) for f, v in vals.items()}
            out.append(Row(int(by_col["time"]) if q.every_s else None, group, vals))
    if not out and q.agg == "count" and not q.group_by and not q.every_s:
        out.append(Row(None, {}, dict.fromkeys(q.fields, 0.0)))  # SQL's COUNT over nothing is 0
    out.sort(key=lambda r: _sort_key(q, r))
    return out


def _sum_series(q: Query, series: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Per-series integrals (one row per series) summed per group."""
    sums: dict[tuple[str, ...], dict[str, float]] = {}
    for s in series:
        tags = dict(s.get("tags") or {})
        acc = sums.setdefault(tuple(str(tags.get(t) or "") for t in q.group_by), {})
        cols = list(s.get("columns", []))
        for values in s.get("values", []):
            for f, v in zip(cols, values, strict=False):
                if f in q.fields and (x := _num(v)) is not None:
                    acc[f] = acc.get(f, 0.0) + x
    out = [Row(None, dict(zip(q.group_by, key, strict=True)), {f: vals.get(f) for f in q.fields})
           for key, vals in sums.items() if vals]
    out.sort(key=lambda r: _sort_key(q, r))
    return out


def integrate(q: Query, series: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Trapezoid area (value·s) per series and bucket from raw points, summed per group and bucket."""
    width = _width_ns(q)
    sums: dict[tuple, dict[str, float]] = {}
    for s in series:
        tags = dict(s.get("tags") or {})
        group = tuple(str(tags.get(t) or "") for t in q.group_by)
        cols = list(s.get("columns", []))
        for f in q.fields:
            if f not in cols:
                continue
            i = cols.index(f)
            prev: tuple[int, int, float | None] | None = None  # bucket, time, value (None breaks the chain, as in SQL)
            for values in s.get("values", []):
                v = _num(values[i])
                t = int(values[0])
                bucket = (t // width) * width
                if prev is not None and prev[0] == bucket and prev[2] is not None and v is not None:
                    area = (prev[2] + v) / 2.0 * (t - prev[1]) / 1e9
                    acc = sums.setdefault((*group, bucket), {})
                    acc[f] = acc.get(f, 0.0) + area
                prev = (bucket, t, v)
    out = [Row(key[-1], dict(zip(q.group_by, key[:-1], strict=True)), {f: vals.get(f) for f in q.fields})
           for key, vals in sums.items()]
    out.sort(key=lambda r: _sort_key(q, r))
    return out


# --- scans ------------------------------------------------------------------------------------
def scan_statement(measurement: str, since_ns: int | None, until_ns: int | None, rp: str = "") -> str:
    """All points of one measurement in time order (no GROUP BY: tags come back as columns)."""
    return f"SELECT * FROM {source(measurement, rp)}{where_clause(since_ns, until_ns)}"


def tags_json(tags: Mapping[str, str]) -> str:
    """The canonical tag text the SQLite store orders ties by."""
    return json.dumps(dict(sorted(tags.items())), separators=(",", ":"))


def scan_points(measurement: str, field_keys: set[str], chunks: Iterable[Sequence[Mapping[str, Any]]]) -> Iterator[Point]:
    """Points from the chunks of :func:`scan_statement`, ties at one time ordered like SQLite's."""
    pending: list[tuple[str, Point]] = []
    pending_t: int | None = None
    for series in chunks:
        for s in series:
            cols = list(s.get("columns", []))
            tag_idx = [(i, c) for i, c in enumerate(cols) if c != "time" and c not in field_keys]
            field_idx = [(i, c) for i, c in enumerate(cols) if c in field_keys]
            for values in s.get("values", []):
                fields = {c: v for i, c in field_idx if (v := _num(values[i])) is not None}
                if not fields:
                    continue
                tags = {c: str(values[i]) for i, c in tag_idx if values[i] is not None and values[i] != ""}
                t = int(values[0])
                if pending_t is not None and t != pending_t:
                    pending.sort(key=lambda item: item[0])
                    yield from (p for _, p in pending)
                    pending = []
                pending_t = t
                pending.append((tags_json(tags), Point(measurement, tags, fields, t)))
    pending.sort(key=lambda item: item[0])
    yield from (p for _, p in pending)


def field_keys(series: Sequence[Mapping[str, Any]]) -> set[str]:
    """Field names from ``SHOW FIELD KEYS`` (numeric ones only)."""
    return {v[0] for s in series for v in s.get("values", []) if len(v) < 2 or v[1] in ("float", "integer")}


def names(series: Sequence[Mapping[str, Any]]) -> list[str]:
    """The first column of ``SHOW MEASUREMENTS`` and similar answers."""
    return sorted(str(v[0]) for s in series for v in s.get("values", []))
