"""``carbond store init`` on InfluxDB 1.x: database, retention policies, hourly rollups.

Idempotent: each step looks first and says what it did (``created``, ``updated``, ``exists``).

- the database (``CREATE DATABASE``);
- the raw retention policy — the URL's ``?rp=`` or the database's default — keeps ``raw_duration``;
- a rollup retention policy (``carbond_1h``, ``rollup_duration``, INF by default);
- one continuous query per measurement that writes hourly aggregates into the rollup policy
  under the same measurement and tags: energies, emissions and water summed, power and
  factors averaged, the daemon's own counters as their maximum, runs as their last value.
  ``RESAMPLE FOR`` recomputes the last hours, so points replayed from the spool after an
  outage shorter than that still land in the rollups.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from carbond.errors import StoreError, UsageError
from carbond.store.influx import InfluxStore
from carbond.store.influxql import ident

ROLLUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "device": (("energy_j", "sum"), ("power_w", "mean"), ("utilization_pct", "mean"),
               ("memory_used_bytes", "mean"), ("temperature_c", "mean")),
    "host": (("energy_j", "sum"), ("co2_g", "sum"), ("water_l", "sum"), ("embodied_g", "sum"), ("power_w", "mean"),
             ("intensity_g_per_kwh", "mean"), ("pue", "mean")),
    "job": (("energy_j", "sum"), ("co2_g", "sum"), ("water_l", "sum"), ("embodied_g", "sum"), ("power_w", "mean")),
    "run": (("duration_s", "last"), ("energy_j", "last"), ("co2_g", "last"), ("water_l", "last"), ("embodied_g", "last")),
    "carbond": (("spool_points", "max"), ("dropped_points", "max"), ("dead_letter_points", "max"),
                ("write_errors", "max"), ("tick_lag_s", "max"), ("cpu_s", "max"), ("rss_bytes", "max")),
}
Execute = Callable[[str], list[list[dict[str, Any]]]]
_UNITS_S = {"ns": 1e-9, "u": 1e-6, "µ": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_s(text: str) -> float:
    """Seconds of an InfluxQL (``30d``, ``1h30m``, ``INF``) or Go (``720h0m0s``, ``0s`` = INF) duration; 0 is infinite."""
    text = text.strip()
    if text.upper() == "INF":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|u|µ|ms|s|m|h|d|w)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"bad duration {text!r}: use forms like 30d, 12h, 52w or INF")
    return sum(float(n) * _UNITS_S[u.replace("us", "u").replace("µs", "u")] for n, u in parts)


def cq_statement(database: str, measurement: str, raw_rp: str, rollup_rp: str, every: str, resample_for: str) -> str:
    cols = ", ".join(f"{agg}({ident(f)}) AS {ident(f)}" for f, agg in ROLLUPS[measurement])
    db = ident(database)
    return (f"CREATE CONTINUOUS QUERY {ident(cq_name(measurement, every))} ON {db} RESAMPLE EVERY {every} FOR {resample_for} "
            f"BEGIN SELECT {cols} INTO {db}.{ident(rollup_rp)}.{ident(measurement)} "
            f"FROM {db}.{ident(raw_rp)}.{ident(measurement)} GROUP BY time({every}), * END")


def cq_name(measurement: str, every: str) -> str:
    return f"carbond_{measurement}_{every}"


def init_influx(store: InfluxStore, *, raw_duration: str | None = "30d", rollup_rp: str = "carbond_1h",
                rollup_duration: str = "INF", every: str = "1h", resample_for: str = "6h", force: bool = False) -> list[str]:
    """Create or update what carbond needs on a 1.x server; returns one line per step.

    An existing retention policy keeps its duration unless ``force`` (shortening one deletes
    older data); a database created by this call gets ``raw_duration`` on its raw policy.
    """
    if store.target.version != 1:
        raise UsageError(f"store init {store.url}: InfluxDB 2.x/3.x keep data in buckets — create the bucket with "
                         "`influx bucket create` (its retention is the raw retention) and downsample with a task")
    for d in (raw_duration or "INF", rollup_duration, every, resample_for):
        duration_s(d)
    db = store.database
    q = store.execute
    done: list[str] = []
    existing = {v[0] for s in q("SHOW DATABASES")[0] for v in s.get("values", [])}
    if db in existing:
        done.append(f"database {db}: exists")
    else:
        q(f"CREATE DATABASE {ident(db)}")
        done.append(f"database {db}: created")
    rps = {v[0]: (v[1], bool(v[4])) for s in q(f"SHOW RETENTION POLICIES ON {ident(db)}")[0] for v in s.get("values", [])}
    raw_rp = store.target.rp or next((name for name, (_, default) in rps.items() if default), "autogen")
    for rp, dur in ((raw_rp, raw_duration), (rollup_rp, rollup_duration)):
        done.append(_retention(q, db, rp, dur, rps, alter=force or db not in existing))
    for measurement in ROLLUPS:
        done.append(_continuous_query(q, db, measurement, raw_rp, rollup_rp, every, resample_for))
    return done


def _retention(q: Execute, db: str, rp: str, dur: str | None, rps: dict[str, tuple[str, bool]], alter: bool) -> str:
    if rp not in rps:
        q(f"CREATE RETENTION POLICY {ident(rp)} ON {ident(db)} DURATION {dur or 'INF'} REPLICATION 1")
        return f"retention policy {rp}: created ({dur or 'INF'})"
    if dur is None or duration_s(rps[rp][0]) == duration_s(dur):
        return f"retention policy {rp}: exists ({rps[rp][0]})"
    if not alter:
        return f"retention policy {rp}: exists ({rps[rp][0]}); kept (changing it to {dur} needs force)"
    q(f"ALTER RETENTION POLICY {ident(rp)} ON {ident(db)} DURATION {dur}")
    return f"retention policy {rp}: updated ({rps[rp][0]} -> {dur})"


def _continuous_query(q: Execute, db: str, measurement: str, raw_rp: str, rollup_rp: str, every: str,
                      resample_for: str) -> str:
    name = cq_name(measurement, every)
    statement = cq_statement(db, measurement, raw_rp, rollup_rp, every, resample_for)
    existing = {v[0] for s in q("SHOW CONTINUOUS QUERIES")[0] if s.get("name") == db for v in s.get("values", [])}
    try:
        q(statement)
    except StoreError as exc:
        if "already exists" not in str(exc):
            raise
        q(f"DROP CONTINUOUS QUERY {ident(name)} ON {ident(db)}")
        q(statement)
        return f"continuous query {name}: updated"
    return f"continuous query {name}: {'exists' if name in existing else 'created'}"
