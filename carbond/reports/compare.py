"""``carbond report compare``: runs (or jobs) side by side, against a baseline.

Per item: duration, energy, CO2, water, embodied carbon, the work units and metrics the runs
logged (``run.log(samples=..., accuracy=...)``), energy and CO2 per unit of work with
``--per UNIT``, the change against the baseline in percent (per unit of work when ``--per``
is given), and whether the item is Pareto-optimal in energy against a metric (default
``accuracy``; higher is better unless ``--metric-goal min``).

A job's row sums its runs' totals and work units; its metrics are those of its latest run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from carbond.errors import UsageError
from carbond.impacts import J_PER_KWH, energy_basis, sources_in
from carbond.jobs_cli import RunSummary
from carbond.reports.render import Column


@dataclass(frozen=True)
class Item:
    label: str
    job: str
    phase: str
    tags: str
    status: str
    runs: int
    duration_h: float
    energy_kwh: float
    co2_kg: float
    water_l: float
    embodied_kg: float
    units: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    sources: dict[str, float] = field(default_factory=dict)  # joules by how they were known


def _tags(r: RunSummary) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(r.tags.items()))


def run_items(runs: Sequence[RunSummary], order: Sequence[str]) -> list[Item]:
    by_id = {r.run: r for r in runs}
    out = []
    for run_id in order:
        r = by_id.get(run_id)
        if r is None:
            continue
        t = r.totals
        out.append(Item(r.run, r.job, r.phase, _tags(r), r.status, 1, r.duration_s / 3600.0, t.get("energy_j", 0.0) / J_PER_KWH,
                        t.get("co2_g", 0.0) / 1000.0, t.get("water_l", 0.0), t.get("embodied_g", 0.0) / 1000.0,
                        dict(r.units), dict(r.metrics), sources_in(t)))
    return out


def job_items(runs: Sequence[RunSummary], order: Sequence[str]) -> list[Item]:
    out = []
    for job in order:
        mine = sorted((r for r in runs if r.job == job), key=lambda r: (r.ended_ns or 0, r.run))
        if not mine:
            continue
        units: dict[str, float] = {}
        for r in mine:
            for k, v in r.units.items():
                units[k] = units.get(k, 0.0) + v
        latest = mine[-1]

        def total(key: str, runs: list[RunSummary] = mine) -> float:
            return sum(r.totals.get(key, 0.0) for r in runs)

        phases = sorted({r.phase for r in mine})
        statuses = sorted({r.status for r in mine})
        out.append(Item(job, job, ",".join(phases), _tags(latest), ",".join(statuses), len(mine),
                        sum(r.duration_s for r in mine) / 3600.0, total("energy_j") / J_PER_KWH, total("co2_g") / 1000.0,
                        total("water_l"), total("embodied_g") / 1000.0, units, dict(latest.metrics),
                        sources_in({k: total(k) for k in {k for r in mine for k in r.totals}})))
    return out


def _change(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / abs(base) * 100.0


def pareto_front(xs: Sequence[float | None], ys: Sequence[float | None], maximize: bool = True) -> list[bool | None]:
    """True for items no other item beats (x no larger and y no worse, one strictly); None without both values."""
    sign = 1.0 if maximize else -1.0
    out: list[bool | None] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if x is None or y is None:
            out.append(None)
            continue
        dominated = any(j != i and x2 is not None and y2 is not None and x2 <= x and sign * y2 >= sign * y
                        and (x2 < x or sign * y2 > sign * y) for j, (x2, y2) in enumerate(zip(xs, ys, strict=True)))
        out.append(not dominated)
    return out


@dataclass(frozen=True)
class Comparison:
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]
    energy_key: str  # the column the energy change and the Pareto view use
    co2_key: str
    metric: str | None
    baseline: int


def compare(items: Sequence[Item], *, kind: str, baseline: str | None = None, per: str | None = None,
            metric: str | None = None, maximize: bool = True) -> Comparison:
    """The comparison table of ``items`` (already in display order); ``kind`` is ``run`` or ``job``."""
    labels = [i.label for i in items]
    if baseline is not None and baseline not in labels:
        raise UsageError(f"--baseline {baseline!r} is not one of the compared {kind}s: {', '.join(labels)}")
    base = labels.index(baseline) if baseline is not None else 0
    notes: list[str] = []
    units = sorted({u for i in items for u in i.units})
    if per is not None and per not in units:
        raise UsageError(f"--per {per}: none of the compared {kind}s logged {per!r} (run.log({per}=N)); "
                         f"logged units: {', '.join(units) or 'none'}")
    metrics = sorted({m for i in items for m in i.metrics})
    if metric is not None and metric not in metrics:
        raise UsageError(f"--metric {metric}: none of the compared {kind}s logged it; logged metrics: "
                         f"{', '.join(metrics) or 'none'}")
    if metric is None and metrics:
        metric = "accuracy" if "accuracy" in metrics else metrics[0]
    columns = [Column("label", kind, "text")]
    columns += [Column("job", "job", "text"), Column("phase", "phase", "text")] if kind == "run" else [
        Column("runs", "runs", digits=0), Column("phase", "phase", "text")]
    columns += [Column("tags", "tags", "text"), Column("status", "status", "text"), Column("duration_h", "duration_h", digits=3),
                Column("energy_kwh", "energy_kwh", digits=4), Column("co2_kg", "co2_kg", digits=4),
                Column("water_l", "water_l", digits=3), Column("embodied_kg", "embodied_kg", digits=4),
                Column("energy_by", "energy_by", "text")]
    energy_key, co2_key = "energy_kwh", "co2_kg"
    rows = []
    for i in items:
        row: dict[str, Any] = {"label": i.label, "job": i.job, "runs": i.runs, "phase": i.phase, "tags": i.tags,
                               "status": i.status, "duration_h": i.duration_h, "energy_kwh": i.energy_kwh, "co2_kg": i.co2_kg,
                               "water_l": i.water_l, "embodied_kg": i.embodied_kg, "energy_by": energy_basis(i.sources),
                               "units": dict(i.units),
                               "metrics": dict(i.metrics)}
        if per is not None:
            n = i.units.get(per)
            row[f"unit_{per}"] = n
            row[f"energy_j_per_{per}"] = i.energy_kwh * J_PER_KWH / n if n else None
            row[f"co2_g_per_{per}"] = i.co2_kg * 1000.0 / n if n else None
        for m in metrics:
            row[f"metric_{m}"] = i.metrics.get(m)
        rows.append(row)
    if per is not None:
        energy_key, co2_key = f"energy_j_per_{per}", f"co2_g_per_{per}"
        columns += [Column(f"unit_{per}", per, digits=0), Column(energy_key, energy_key, digits=4, significant=True),
                    Column(co2_key, co2_key, digits=4, significant=True)]
        lacking = [r["label"] for r in rows if not r.get(f"unit_{per}")]
        if lacking:
            notes.append(f"no {per} logged by: {', '.join(lacking)} (per-{per} figures left blank)")
    columns += [Column(f"metric_{m}", m, digits=4) for m in metrics]
    for row in rows:
        row["energy_change_pct"] = _change(row[energy_key], rows[base][energy_key])
        row["co2_change_pct"] = _change(row[co2_key], rows[base][co2_key])
        for m in metrics:
            row[f"metric_{m}_change_pct"] = _change(row.get(f"metric_{m}"), rows[base].get(f"metric_{m}"))
    columns += [Column("energy_change_pct", "energy_Δ%", digits=1), Column("co2_change_pct", "co2_Δ%", digits=1)]
    columns += [Column(f"metric_{m}_change_pct", f"{m}_Δ%", digits=2) for m in metrics]
    if metric is not None:
        front = pareto_front([r[energy_key] for r in rows], [r.get(f"metric_{metric}") for r in rows], maximize)
        for row, best in zip(rows, front, strict=True):
            row["pareto"] = None if best is None else ("yes" if best else "no")
        columns.append(Column("pareto", "pareto", "text"))
        notes.append(f"pareto: not beaten on both {energy_key} (lower is better) and {metric} "
                     f"({'higher' if maximize else 'lower'} is better)")
    else:
        notes.append("no metric logged (run.log(accuracy=...)): no Pareto view")
    notes.insert(0, f"baseline: {labels[base]}; changes in % of the baseline"
                 + (f", energy and CO2 per {per}" if per is not None else ""))
    return Comparison(tuple(columns), tuple(rows), tuple(notes), energy_key, co2_key, metric, base)
