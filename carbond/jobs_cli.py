"""``carbond jobs``: the runs in the store (and the daemon's active ones), one line per run.

A run's ``run`` points carry its totals so far. Per host, the latest point the daemon wrote
is the run's state there; in-process measurements (``in_process`` field, one final point per
process) add up. Across hosts, a run id seen on several hosts is one run: energy, carbon,
water, embodied carbon and work units are summed, metrics come from the latest point, and
the hosts are listed. The daemon's ``runs`` op, when it answers, replaces the stored state
of its own host's active runs with the live one. The store is read once, in time order,
keeping one small record per run and host.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbond.errors import DaemonUnavailableError, UsageError

TOTALS = ("energy_j", "co2_g", "water_l", "embodied_g", "projected_energy_j", "projected_co2_g")
STATUS_RANK = {"running": 0, "finished": 1, "failed": 2}


def build_jobs_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``carbond jobs`` on the ``add_subparsers`` object of the main parser."""
    j = sub.add_parser("jobs", help="runs with duration, energy, co2, water, units, metrics and hosts",
                       description="List the runs in the store (latest state per run; a run id on several hosts is one "
                       "run, summed) and the daemon's active runs, oldest first.")
    j.add_argument("--config", metavar="F", help="TOML config file (default /etc/carbond/carbond.toml, or $CARBOND_CONFIG)")
    j.add_argument("--since", metavar="T", help="runs with points from this time (ISO 8601 or relative, e.g. -7d)")
    j.add_argument("--until", metavar="T", help="runs with points before this time")
    j.add_argument("--project", metavar="P", help="only this project")
    j.add_argument("--store", metavar="URL", help="store to read (default: the configured store)")
    j.add_argument("--socket", metavar="PATH", help="daemon socket, asked for the active runs")
    j.add_argument("--json", action="store_true", help="print one JSON document")
    j.set_defaults(func=cmd_jobs)
    return j


@dataclass
class HostRun:
    """What one host knows of one run: the daemon's latest point plus in-process contributions."""

    time_ns: int = -1
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # summed in-process totals and units
    extra_status: str = ""
    extra_started_ns: int | None = None
    extra_ended_ns: int | None = None
    extra_metrics: dict[str, tuple[int, float, int]] = field(default_factory=dict)  # name -> (time, value, status rank)
    live: bool = False  # from the daemon's ``runs`` op, not from the store


@dataclass
class RunSummary:
    run: str
    job: str = ""
    project: str = ""
    phase: str = ""
    status: str = "running"
    hosts: list[str] = field(default_factory=list)
    started_ns: int | None = None
    ended_ns: int | None = None
    totals: dict[str, float] = field(default_factory=dict)
    units: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    live: bool = False  # the daemon reported it as active
    tags: dict[str, str] = field(default_factory=dict)  # the run's own tags (variant=…)

    @property
    def duration_s(self) -> float:
        if self.started_ns is None or self.ended_ns is None:
            return 0.0
        return max(self.ended_ns - self.started_ns, 0) / 1e9

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "run": self.run, "job": self.job, "project": self.project, "phase": self.phase, "status": self.status,
            "hosts": self.hosts, "started_ns": self.started_ns, "ended_ns": self.ended_ns, "duration_s": self.duration_s,
            "energy_kwh": t.get("energy_j", 0.0) / 3.6e6, "co2_kg": t.get("co2_g", 0.0) / 1000.0,
            "water_l": t.get("water_l", 0.0), "embodied_kg": t.get("embodied_g", 0.0) / 1000.0,
            "projected_energy_kwh": t["projected_energy_j"] / 3.6e6 if "projected_energy_j" in t else None,
            "projected_co2_kg": t["projected_co2_g"] / 1000.0 if "projected_co2_g" in t else None,
            "units": self.units, "metrics": self.metrics, "tags": self.tags, "live": self.live,
        }


RESERVED_TAGS = frozenset({"host", "project", "job", "phase", "run", "status"})


def _worse(a: str, b: str) -> str:
    return a if STATUS_RANK.get(a, 0) >= STATUS_RANK.get(b, 0) else b


def is_total(key: str) -> bool:
    """A field that sums over hosts and processes: the totals, and the joules by source (``source_model_j``)."""
    return key in TOTALS or (key.startswith("source_") and key.endswith("_j"))


def reduce_points(points: Iterable[Any], acc: dict[tuple[str, str], HostRun] | None = None) -> dict[tuple[str, str], HostRun]:
    """Fold ``run`` points (any order) into one record per (run, host)."""
    acc = {} if acc is None else acc
    for p in points:
        run, host = p.tags.get("run"), p.tags.get("host", "")
        if not run:
            continue
        h = acc.setdefault((run, host), HostRun())
        f = p.fields
        if f.get("in_process"):  # one final point per measuring process: they add up
            for key, value in f.items():
                if is_total(key) or key.startswith("unit_"):
                    h.extra[key] = h.extra.get(key, 0.0) + value
            end = p.time_ns
            start = end - int(f.get("duration_s", 0.0) * 1e9)
            if h.time_ns < 0 and (h.extra_started_ns is None or start < h.extra_started_ns):
                h.tags = dict(p.tags)  # the outermost (first started) process names the run
            h.extra_started_ns = start if h.extra_started_ns is None else min(h.extra_started_ns, start)
            h.extra_ended_ns = end if h.extra_ended_ns is None else max(h.extra_ended_ns, end)
            h.extra_status = _worse(p.tags.get("status", "finished"), h.extra_status or "running")
            # the latest value wins; at the same time the ended point's (as for daemon points): order-independent
            rank = STATUS_RANK.get(p.tags.get("status", ""), 0)
            for key, value in f.items():
                if key.startswith("metric_"):
                    seen = h.extra_metrics.get(key[7:])
                    if seen is None or (p.time_ns, rank, value) >= (seen[0], seen[2], seen[1]):
                        h.extra_metrics[key[7:]] = (p.time_ns, value, rank)
        elif (p.time_ns, STATUS_RANK.get(p.tags.get("status", ""), 0)) >= (h.time_ns, STATUS_RANK.get(
                h.tags.get("status", ""), 0)) or h.time_ns < 0:
            h.time_ns, h.tags, h.fields = p.time_ns, dict(p.tags), dict(f)
    return acc


def _host_view(h: HostRun) -> tuple[dict[str, float], dict[str, float], dict[str, float], str, int | None, int | None]:
    totals = {k: v for k, v in h.fields.items() if is_total(k)}
    units = {k[5:]: v for k, v in h.fields.items() if k.startswith("unit_")}
    metrics = {k[7:]: v for k, v in h.fields.items() if k.startswith("metric_")}
    started = ended = None
    status = ""
    if h.time_ns >= 0:
        status = h.tags.get("status", "running")
        ended = h.time_ns
        started = ended - int(h.fields.get("duration_s", 0.0) * 1e9)
    for key, value in h.extra.items():
        if key.startswith("unit_"):
            units[key[5:]] = units.get(key[5:], 0.0) + value
        else:
            totals[key] = totals.get(key, 0.0) + value
    if h.extra_status:
        status = _worse(status or "running", h.extra_status) if status else h.extra_status
        started = h.extra_started_ns if started is None else min(started, h.extra_started_ns or started)
        ended = h.extra_ended_ns if ended is None else max(ended, h.extra_ended_ns or ended)
        for name, (when, value, _rank) in h.extra_metrics.items():
            if name not in metrics or when >= h.time_ns:
                metrics[name] = value
    return totals, units, metrics, status, started, ended


def summarize(per_host: Mapping[tuple[str, str], HostRun]) -> list[RunSummary]:
    """One summary per run id, summed over its hosts, oldest first."""
    runs: dict[str, RunSummary] = {}
    latest: dict[str, int] = {}
    for (run_id, host), h in sorted(per_host.items()):
        totals, units, metrics, status, started, ended = _host_view(h)
        s = runs.get(run_id)
        if s is None:
            s = runs[run_id] = RunSummary(run_id, h.tags.get("job", ""), h.tags.get("project", ""),
                                          h.tags.get("phase", ""), status or "running")
            s.tags = {k: v for k, v in h.tags.items() if k not in RESERVED_TAGS}
        else:
            s.status = "running" if "running" in (s.status, status) else _worse(s.status, status)
        s.hosts.append(host)
        s.live = s.live or h.live
        for key, value in totals.items():
            s.totals[key] = s.totals.get(key, 0.0) + value
        for key, value in units.items():
            s.units[key] = s.units.get(key, 0.0) + value
        when = ended or -1
        if when >= latest.get(run_id, -1):
            latest[run_id] = when
            s.metrics = {**s.metrics, **metrics}
        if started is not None:
            s.started_ns = started if s.started_ns is None else min(s.started_ns, started)
        if ended is not None:
            s.ended_ns = ended if s.ended_ns is None else max(s.ended_ns, ended)
    return sorted(runs.values(), key=lambda r: (r.started_ns or 0, r.run))


def live_host_run(doc: Mapping[str, Any], now_ns: int) -> tuple[tuple[str, str], HostRun]:
    """A daemon ``runs`` result as the host record it replaces."""
    hosts = doc.get("hosts") or ["(daemon)"]
    fields = {k: float(doc[k]) for k in (*TOTALS, "duration_s") if isinstance(doc.get(k), int | float)}
    fields.update({f"unit_{k}": float(v) for k, v in (doc.get("units") or {}).items()})
    fields.update({f"metric_{k}": float(v) for k, v in (doc.get("metrics") or {}).items()})
    tags = {**{str(k): str(v) for k, v in (doc.get("tags") or {}).items()},
            "run": str(doc.get("run")), "host": str(hosts[0]), "job": str(doc.get("job") or ""),
            "project": str(doc.get("project") or ""), "phase": str(doc.get("phase") or ""),
            "status": str(doc.get("status") or "running")}
    return (tags["run"], tags["host"]), HostRun(now_ns, tags, fields, live=True)


def collect(store: Any, since_ns: int | None, until_ns: int | None, live: Iterable[Mapping[str, Any]] = (),
            now_ns: int = 0) -> list[RunSummary]:
    per_host = reduce_points(store.scan("run", since_ns, until_ns)) if store is not None else {}
    for doc in live:
        key, record = live_host_run(doc, now_ns)
        old = per_host.get(key)
        if old is not None:  # keep in-process contributions, replace the daemon's state
            record.extra, record.extra_status = old.extra, old.extra_status
            record.extra_started_ns, record.extra_ended_ns, record.extra_metrics = (
                old.extra_started_ns, old.extra_ended_ns, old.extra_metrics)
        per_host[key] = record
    return summarize(per_host)


# --- the command -------------------------------------------------------------------------------------------


def _open_store(settings: Any) -> Any:
    """The configured store, read-only; None when the embedded database does not exist yet."""
    from carbond.store import parse_store_url

    parsed = parse_store_url(settings.store.url)
    if parsed.kind == "sqlite" and not Path(parsed.path).exists():
        return None
    try:
        from carbond.store import open_configured_store  # type: ignore[attr-defined]
    except ImportError:
        from carbond.store import open_store

        return open_store(settings.store.url, readonly=True, token=settings.store.token)
    return open_configured_store(settings.store, readonly=True)


def _live_runs(socket_path: str) -> list[dict[str, Any]] | None:
    from carbond import ipc

    try:
        reply = ipc.request(socket_path, "runs", timeout_s=2.0)
    except (DaemonUnavailableError, ipc.ProtocolError, ValueError):
        return None
    runs = reply.get("runs") if isinstance(reply, dict) else None
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else None


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    h, rest = divmod(s, 3600)
    return f"{h}h{rest // 60:02d}m{rest % 60:02d}s" if h else f"{rest // 60}m{rest % 60:02d}s"


def _pairs(values: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in sorted(values.items()))


def render_table(rows: list[dict[str, Any]]) -> list[str]:
    from carbond.timeutil import iso

    head = (f"{'STARTED (UTC)':20} {'RUN':36} {'JOB':16} {'PROJECT':12} {'PHASE':11} {'STATUS':8} {'DURATION':>9} "
            f"{'ENERGY_kWh':>11} {'CO2_kg':>10} {'WATER_L':>9}  HOSTS  UNITS / METRICS")
    lines = [head]
    for r in rows:
        started = iso(r["started_ns"])[:19] + "Z" if r["started_ns"] else "-"
        extra = " ".join(x for x in (_pairs(r["units"]), _pairs(r["metrics"])) if x)
        if r["projected_energy_kwh"] is not None:
            extra += f" projected={r['projected_energy_kwh']:.4g}kWh"
        lines.append(f"{started:20} {r['run'][:36]:36} {r['job'][:16]:16} {r['project'][:12]:12} {r['phase'][:11]:11} "
                     f"{r['status']:8} {_duration(r['duration_s']):>9} {r['energy_kwh']:11.6f} {r['co2_kg']:10.6f} "
                     f"{r['water_l']:9.4f}  {','.join(r['hosts'])}  {extra}".rstrip())
    return lines


def cmd_jobs(args: argparse.Namespace) -> int:
    import time

    from carbond.config import load_settings
    from carbond.timeutil import parse_time, to_ns

    since = to_ns(parse_time(args.since, name="--since")) if args.since else None
    until = to_ns(parse_time(args.until, name="--until")) if args.until else None
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be before --until")
    settings = load_settings(args.config, {"store.url": args.store, "daemon.socket": args.socket}).settings
    live = _live_runs(settings.daemon.socket) if until is None else None  # --until: the store's past only
    store = _open_store(settings)
    try:
        runs = collect(store, since, until, live or (), time.time_ns())
    finally:
        if store is not None:
            store.close()
    rows = [r.as_dict() for r in runs if args.project is None or r.project == args.project]
    if args.json:
        json.dump({"store": settings.store.url if store is None else store.url, "daemon": live is not None,
                   "runs": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"carbond: no runs{' for that selection' if args.since or args.until or args.project else ''} in "
              f"{settings.store.url if store is None else store.url}"
              f"{'' if live is not None else ' (no daemon answered for active runs)'}", file=sys.stderr)
        return 0
    print("\n".join(render_table(rows)))
    active = sum(1 for r in rows if r["live"])
    print(f"{len(rows)} runs" + (f", {active} active on the daemon" if live is not None else
                                 "; no daemon answered, active runs as last stored"))
    return 0
