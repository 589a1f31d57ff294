"""Lifecycle and compare reports from a store: checks, queries, tables and plots → :class:`Report`.

``None`` means "no data in that range" (the CLI says so and exits 0); an unknown project, run
or job raises :class:`UsageError` listing what exists (exit 2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from carbond.errors import UsageError
from carbond.reports import compare as cmp
from carbond.reports import data, lifecycle, sources
from carbond.reports.progress import NoProgress, Progress
from carbond.reports.render import Column, Figure, Report
from carbond.reports.scenario import Scenario
from carbond.reports.sources import Selection
from carbond.timeutil import iso

LISTED = 30


def _listing(values: Sequence[str]) -> str:
    if not values:
        return "none"
    shown = ", ".join(values[-LISTED:])
    return shown if len(values) <= LISTED else f"{shown} (and {len(values) - LISTED} more)"


def _range_meta(since_ns: int | None, until_ns: int | None) -> dict[str, str]:
    return {"since": iso(since_ns) if since_ns is not None else "(start)",
            "until": iso(until_ns) if until_ns is not None else "(now)"}


def check_exists(store: Any, key: str, wanted: Sequence[str], flag: str) -> None:
    missing, existing = sources.missing(store, key, wanted)
    if missing:
        what = "project" if key == "project" else key
        raise UsageError(f"{flag}: no {what} {', '.join(repr(m) for m in missing)} in {store.url}; "
                         f"{what}s there: {_listing(existing)}")


def lifecycle_report(store: Any, *, project: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
                     scenario: Scenario | None = None, default_zone: str = "WORLD", default_intensity_g_per_kwh: float = 0.0,
                     plots: bool = False, progress: Progress | None = None) -> Report | None:
    progress = progress or NoProgress()
    if project is not None:
        check_exists(store, "project", [project], "--project")
    sel = Selection(since_ns, until_ns, (("project", (project,)),) if project is not None else ())
    loaded = data.load(store, sel, timeline=plots, progress=progress)
    if not loaded.runs and scenario is None:
        return None
    factors = lifecycle.scenario_factors(scenario, default_zone, default_intensity_g_per_kwh) if scenario else None
    frame = data.runs_frame(loaded.runs)
    rows = lifecycle.lifecycle_rows(frame, scenario, factors)
    meta: dict[str, Any] = {"project": project or "(all projects)", **_range_meta(since_ns, until_ns), "store": store.url,
                            "runs": len(loaded.runs), "generated": iso(time.time_ns())}
    notes = ["measured: the runs' own totals as the daemon recorded them (a run counts whole when any of its points "
             "falls in the range); duration_h: run-hours, person-hours (development), deployment hours",
             "share_%: of the total CO2e, operational (co2_kg) plus embodied (embodied_kg)"]
    if scenario is not None and factors is not None:
        meta["scenario"] = scenario.source
        notes.append(f"projected rows use {factors.describe()}; intensity: {factors.intensity_g_per_kwh.source}; "
                     f"PUE: {factors.pue.source}; source water: {factors.wue_source_l_per_kwh.source}")
    if not loaded.runs:
        notes.append("no measured runs in this range: every row is projected")
    figures: list[Figure] = []
    if plots:
        progress.stage("carbond: drawing plots")
        from carbond.reports import plots as draw

        body = [r for r in rows if not r.get("_total")]
        labels = lifecycle.phase_labels(rows)
        figures.append(Figure("share-energy", "Share of CO2e and energy by phase", draw.share_and_energy(
            labels, [r["co2_kg"] + r["embodied_kg"] for r in body], [r["energy_kwh"] for r in body])))
        figures.append(Figure("water", "Water by phase", draw.water_by_phase(labels, [r["water_l"] for r in body])))
        if loaded.timeline:
            tl = data.timeline_frame(loaded.timeline)
            figures.append(Figure("co2-over-time", "Cumulative measured CO2 over time",
                                  draw.cumulative_co2(list(tl["time"]), list(tl["co2_kg"]))))
    title = f"Lifecycle footprint — {project or 'all projects'}"
    return Report("lifecycle", title, lifecycle.COLUMNS, tuple(rows), tuple(notes), meta, tuple(figures))


def compare_report(store: Any, *, runs: Sequence[str] = (), jobs: Sequence[str] = (), baseline: str | None = None,
                   per: str | None = None, metric: str | None = None, maximize: bool = True, since_ns: int | None = None,
                   until_ns: int | None = None, plots: bool = False, progress: Progress | None = None) -> Report | None:
    progress = progress or NoProgress()
    kind, wanted = ("run", list(dict.fromkeys(runs))) if runs else ("job", list(dict.fromkeys(jobs)))
    if not wanted:
        raise UsageError("give --run R... or --job J...")
    check_exists(store, kind, wanted, f"--{kind}")
    loaded = data.load(store, Selection(since_ns, until_ns, ((kind, tuple(wanted)),)), progress=progress)
    items = cmp.run_items(loaded.runs, wanted) if kind == "run" else cmp.job_items(loaded.runs, wanted)
    if not items:
        return None
    absent = [w for w in wanted if w not in {i.label for i in items}]
    if baseline is not None and baseline in absent:
        raise UsageError(f"--baseline {baseline!r} has no data in this range")
    result = cmp.compare(items, kind=kind, baseline=baseline, per=per, metric=metric, maximize=maximize)
    notes = list(result.notes)
    if absent:
        notes.append(f"no data in this range for: {', '.join(absent)}")
    meta: dict[str, Any] = {f"{kind}s": ", ".join(i.label for i in items), "baseline": items[result.baseline].label,
                            **_range_meta(since_ns, until_ns), "store": store.url, "generated": iso(time.time_ns())}
    figures: list[Figure] = []
    if plots:
        progress.stage("carbond: drawing plots")
        from carbond.reports import plots as draw

        labels = [r["label"] for r in result.rows]
        units = {"energy_kwh": "energy (kWh)", "co2_kg": "CO2e (kg)"}
        figures.append(Figure("comparison", "Energy and CO2 per " + kind, draw.comparison_bars(
            labels, [r[result.energy_key] for r in result.rows], [r[result.co2_key] for r in result.rows],
            units.get(result.energy_key, result.energy_key), units.get(result.co2_key, result.co2_key), result.baseline)))
        if result.metric is not None:
            points = [(r["label"], r[result.energy_key], r.get(f"metric_{result.metric}"), r.get("pareto") == "yes")
                      for r in result.rows]
            points = [p for p in points if p[1] is not None and p[2] is not None]
            if points:
                figures.append(Figure("pareto", f"Energy vs {result.metric} (Pareto)", draw.pareto(
                    [p[0] for p in points], [p[1] for p in points], [p[2] for p in points], [p[3] for p in points],
                    units.get(result.energy_key, result.energy_key), result.metric, maximize)))
    title = f"Comparison of {len(items)} {kind}s" + (f" per {per}" if per else "")
    return Report("compare", title, result.columns, result.rows, tuple(notes), meta, tuple(figures))


__all__ = ["Column", "compare_report", "lifecycle_report"]
