"""``carbond report lifecycle``: a project's footprint by phase, measured and projected.

Measured rows: the project's runs in the range, grouped by their ``phase`` tag (standard
phases first, then custom ones): run count, run-hours, and the energy, CO2, water and embodied
carbon the daemon recorded for them. Their factors are the effective ones (CO2 and water per
IT kWh, as recorded tick by tick).

Projected rows come from a scenario file (:mod:`carbond.reports.scenario`) and use its
``[factors]`` (else the configured region): development (hours × team size × workstation
power), always-on deployment servers, inference (requests/day × energy per request × days;
per-request energy measured from inference runs that logged ``requests`` when there are any),
retraining (one per ``every_days`` of deployment, each the measured training energy × fraction
unless given) and custom phases. ``share_pct`` is each row's share of the total CO2e
(operational + embodied).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from carbond.errors import ConfigError, UsageError
from carbond.factors import Sourced
from carbond.impacts import HOURS_PER_YEAR, J_PER_KWH, energy_basis, sources_in
from carbond.reports.estimate import ResolvedFactors, resolve_factors
from carbond.reports.render import Column
from carbond.reports.scenario import STANDARD_PHASES, Scenario

COLUMNS = (
    Column("phase", "phase", "text"), Column("basis", "basis", "text"), Column("runs", "runs", digits=0),
    Column("duration_h", "duration_h", digits=2), Column("energy_kwh", "energy_kwh", digits=3),
    Column("co2_kg", "co2_kg", digits=3), Column("water_l", "water_l", digits=2),
    Column("embodied_kg", "embodied_kg", digits=3), Column("share_pct", "share_%", digits=1),
    Column("factors", "factors", "text"),
)


@dataclass(frozen=True)
class PhaseRow:
    phase: str
    basis: str  # "measured" | "projected"
    label: str
    runs: int
    duration_h: float
    energy_kwh: float
    co2_kg: float
    water_l: float
    embodied_kg: float
    factors: str

    @property
    def co2e_kg(self) -> float:
        return self.co2_kg + self.embodied_kg


def phase_order(phase: str) -> tuple[int, str]:
    return (STANDARD_PHASES.index(phase), "") if phase in STANDARD_PHASES else (len(STANDARD_PHASES), phase)


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def measured_rows(frame: Any) -> list[PhaseRow]:
    """One row per phase of the runs frame (:func:`carbond.reports.data.runs_frame`)."""
    if frame.empty:
        return []
    frame = frame.assign(phase=frame["phase"].replace("", "(none)"))
    sources = [c for c in frame.columns if c.startswith("source_") and c.endswith("_j")]
    grouped = frame.groupby("phase").agg(runs=("run", "count"), duration_s=("duration_s", "sum"),
                                         energy_j=("energy_j", "sum"), co2_g=("co2_g", "sum"), water_l=("water_l", "sum"),
                                         embodied_g=("embodied_g", "sum"), **{c: (c, "sum") for c in sources})
    rows = []
    for phase, g in grouped.iterrows():
        kwh = float(g["energy_j"]) / J_PER_KWH
        basis = energy_basis(sources_in({c: float(g[c]) for c in sources}))
        factors = (f"{_runs(int(g['runs']))} as recorded: energy by {basis}; {g['co2_g'] / kwh:.4g} gCO2e/kWh, "
                   f"{g['water_l'] / kwh:.4g} L/kWh (PUE × grid and water, per IT kWh)" if kwh > 0
                   else f"{_runs(int(g['runs']))} as recorded: no energy")
        rows.append(PhaseRow(str(phase), "measured", str(phase), int(g["runs"]), float(g["duration_s"]) / 3600.0, kwh,
                             float(g["co2_g"]) / 1000.0, float(g["water_l"]), float(g["embodied_g"]) / 1000.0, factors))
    return rows


def _row(phase: str, label: str, energy_kwh: float, f: ResolvedFactors, *, pue: float | None = None,
         wue_site: float | None = None, duration_h: float = 0.0, embodied_kg: float = 0.0, how: str = "") -> PhaseRow:
    p = f.pue.value if pue is None else pue
    site = f.wue_site_l_per_kwh.value if wue_site is None else wue_site
    co2 = energy_kwh * p * f.intensity_g_per_kwh.value / 1000.0
    water = energy_kwh * (site + p * f.wue_source_l_per_kwh.value)
    factors = (f"{how}; {f.intensity_g_per_kwh.value:g} gCO2e/kWh ({f.zone or 'given'}), PUE {p:g}, "
               f"water {site:g} + PUE×{f.wue_source_l_per_kwh.value:g} L/kWh")
    return PhaseRow(phase, "projected", label, 0, duration_h, energy_kwh, co2, water, embodied_kg, factors)


def _amortized_kg(units: float, hours: float, embodied_kg: float, lifetime_years: float) -> float:
    return units * hours * embodied_kg / (lifetime_years * HOURS_PER_YEAR) if embodied_kg > 0 else 0.0


def _measured(frame: Any, phase: str) -> Any:
    return frame[frame["phase"] == phase] if not frame.empty else frame


def projected_rows(sc: Scenario, frame: Any, f: ResolvedFactors) -> list[PhaseRow]:
    rows: list[PhaseRow] = []
    if (d := sc.development) is not None:
        kwh = d.hours * d.team_size * d.workstation_power_w / 1000.0
        embodied = _amortized_kg(d.team_size, d.hours, d.workstation_embodied_kg, d.workstation_lifetime_years)
        how = f"{d.hours:g} h × {d.team_size:g} people × {d.workstation_power_w:g} W, no data-centre water"
        if embodied:
            how += f", {d.workstation_embodied_kg:g} kg per workstation over {d.workstation_lifetime_years:g} y"
        rows.append(_row("development", "development", kwh, f, pue=d.pue, wue_site=0.0, duration_h=d.hours * d.team_size,
                         embodied_kg=embodied, how=how))
    dep = sc.deployment
    if dep is not None and dep.servers > 0:
        hours = dep.days * 24.0
        kwh = dep.servers * dep.server_power_w * hours / 1000.0
        embodied = _amortized_kg(dep.servers, hours, dep.server_embodied_kg, dep.server_lifetime_years)
        how = f"{dep.servers:g} servers × {dep.server_power_w:g} W × {dep.days:g} days"
        if embodied:
            how += f", {dep.server_embodied_kg:g} kg per server over {dep.server_lifetime_years:g} y"
        rows.append(_row("deployment", "deployment", kwh, f, duration_h=hours, embodied_kg=embodied, how=how))
    if (inf := sc.inference) is not None and dep is not None:
        requests = inf.requests_per_day * dep.days
        measured = _measured(frame, "inference")
        logged = float(measured["unit_requests"].fillna(0).sum()) if "unit_requests" in measured else 0.0
        served = measured[measured["unit_requests"].fillna(0) > 0] if logged > 0 else measured.iloc[0:0]
        if inf.energy_per_request_wh is not None:
            wh = inf.energy_per_request_wh
            source = f"{wh:g} Wh/request (scenario)"
        elif logged > 0:
            wh = float(served["energy_j"].sum()) / logged / 3600.0
            source = f"{wh:.4g} Wh/request measured over {len(served)} inference runs ({logged:g} requests)"
        else:
            raise ConfigError(f"scenario {sc.source}: [inference] energy_per_request_wh: required — no measured inference "
                              "run logged `requests` (run.log(requests=N)) to take it from")
        if inf.embodied_g_per_request is not None:
            g_per_request = inf.embodied_g_per_request
        else:
            g_per_request = float(served["embodied_g"].sum()) / logged if logged > 0 else 0.0
        how = f"{inf.requests_per_day:g} requests/day × {dep.days:g} days × {source}"
        rows.append(_row("inference", "inference", requests * wh / 1000.0, f, duration_h=dep.days * 24.0,
                         embodied_kg=requests * g_per_request / 1000.0, how=how))
    if (ret := sc.retraining) is not None and dep is not None:
        n = math.floor(dep.days / ret.every_days)
        training = _measured(frame, "training")
        if ret.energy_kwh is not None:
            per_kwh, per_embodied_kg, per_h = ret.energy_kwh, 0.0, 0.0
            source = f"{ret.energy_kwh:g} kWh each (scenario)"
        elif not training.empty:
            scale = ret.fraction
            per_kwh = float(training["energy_j"].sum()) / J_PER_KWH * scale
            per_embodied_kg = float(training["embodied_g"].sum()) / 1000.0 * scale
            per_h = float(training["duration_s"].sum()) / 3600.0 * scale
            source = f"{scale:g} × the measured training ({len(training)} runs, {per_kwh:.4g} kWh) each"
        else:
            raise ConfigError(f"scenario {sc.source}: [retraining] energy_kwh: required — there are no measured training "
                              "runs to take it from")
        how = f"{n} retrainings (every {ret.every_days:g} of {dep.days:g} days) × {source}"
        rows.append(_row("training", f"training (retraining ×{n})", n * per_kwh, f, duration_h=n * per_h,
                         embodied_kg=n * per_embodied_kg, how=how))
    for ph in sc.phases:
        rows.append(_row(ph.name, ph.name, ph.energy_kwh, f, duration_h=ph.hours, embodied_kg=ph.embodied_kg,
                         how=f"{ph.energy_kwh:g} kWh (scenario)"))
    return rows


def scenario_factors(sc: Scenario, default_zone: str, default_intensity_g_per_kwh: float = 0.0) -> ResolvedFactors:
    """The scenario's ``[factors]``, the rest from the configured region (and its fixed intensity, if set)."""
    fx = sc.factors
    configured = (Sourced(default_intensity_g_per_kwh, "configured: [region] intensity_g_per_kwh")
                  if default_intensity_g_per_kwh > 0 else None)
    try:
        return resolve_factors(region=fx.zone, intensity_g_per_kwh=fx.intensity_g_per_kwh, pue=fx.pue,
                               wue_site_l_per_kwh=fx.wue_site_l_per_kwh, wue_source_l_per_kwh=fx.wue_source_l_per_kwh,
                               default_zone=default_zone, default_intensity=configured)
    except ConfigError:
        raise
    except UsageError as exc:  # e.g. a configured default zone the table does not know: still name the table
        raise ConfigError(f"scenario {sc.source}: [factors]: {exc}") from exc


def lifecycle_rows(frame: Any, sc: Scenario | None, f: ResolvedFactors | None) -> list[dict[str, Any]]:
    """Measured and projected rows in phase order, with shares, then the TOTAL row."""
    rows = measured_rows(frame)
    if sc is not None and f is not None:
        rows += projected_rows(sc, frame, f)
    rows.sort(key=lambda r: (*phase_order(r.phase), r.basis != "measured", r.label))
    total = sum(r.co2e_kg for r in rows)
    out: list[dict[str, Any]] = []
    for r in rows:
        d = asdict(r)
        d["phase"] = r.label
        d["runs"] = r.runs if r.basis == "measured" else None
        d["share_pct"] = r.co2e_kg / total * 100.0 if total > 0 else None
        out.append(d)
    out.append({"phase": "TOTAL", "basis": "+".join(sorted({r.basis for r in rows})) if rows else "",
                "runs": sum(r.runs for r in rows), "duration_h": sum(r.duration_h for r in rows),
                "energy_kwh": sum(r.energy_kwh for r in rows), "co2_kg": sum(r.co2_kg for r in rows),
                "water_l": sum(r.water_l for r in rows), "embodied_kg": sum(r.embodied_kg for r in rows),
                "share_pct": 100.0 if total > 0 else None, "factors": "", "_total": True})
    return out


def phase_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{r['phase']} ({r['basis']})" for r in rows if not r.get("_total")]
