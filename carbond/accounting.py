"""Per-run impacts of one tick, and the ``job`` and ``run`` points. Pure.

A run's tick energy is the sum of its device shares (carbond.attribution). Its CO2 and
water follow from that energy with the tick's factors, exactly as the host's do; its
embodied carbon is the host's embodied carbon of the tick in proportion to its energy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from carbond.attribution import DeviceShare
from carbond.impacts import Factors, operational
from carbond.jobs import Run
from carbond.store.base import Point, make_point


class RunTick(NamedTuple):
    run_id: str
    energy_j: float
    co2_g: float
    water_l: float
    embodied_g: float
    sources: Mapping[str, float]  # joules by source (counter, power, model)
    kinds: Mapping[str, float]  # joules by device kind (cpu, gpu, ram)


def run_ticks(shares: list[DeviceShare], sources: Mapping[str, str], factors: Factors, host_energy_j: float,
              host_embodied_g: float) -> list[RunTick]:
    """One RunTick per run that received energy; ``sources`` maps device → source tag."""
    energy: dict[str, float] = {}
    mix: dict[str, dict[str, float]] = {}
    kinds: dict[str, dict[str, float]] = {}
    for share in shares:
        source = sources.get(share.device, "model")
        for run_id, joules in share.runs.items():
            energy[run_id] = energy.get(run_id, 0.0) + joules
            by_source = mix.setdefault(run_id, {})
            by_source[source] = by_source.get(source, 0.0) + joules
            by_kind = kinds.setdefault(run_id, {})
            by_kind[share.kind] = by_kind.get(share.kind, 0.0) + joules
    out = []
    for run_id, joules in energy.items():
        impact = operational(joules, factors)
        embodied = host_embodied_g * joules / host_energy_j if host_energy_j > 0 else 0.0
        out.append(RunTick(run_id, joules, impact.co2_g, impact.water_l, embodied, mix[run_id], kinds[run_id]))
    return out


def run_tags(run: Run, host: str) -> dict[str, str]:
    return {**run.tags, "host": host, "project": run.project, "job": run.job, "phase": run.phase, "run": run.run_id}


def job_point(run: Run, tick: RunTick, interval_s: float, time_ns: int, host: str) -> Point:
    # every value is a finite float by construction (attribution never hands out NaN or negatives)
    fields = {"energy_j": tick.energy_j, "power_w": tick.energy_j / interval_s if interval_s > 0 else 0.0,
              "co2_g": tick.co2_g, "water_l": tick.water_l, "embodied_g": tick.embodied_g}
    for kind, joules in tick.kinds.items():
        fields[f"{kind}_energy_j"] = joules
    return Point("job", run_tags(run, host), fields, time_ns)


def run_point(run: Run, host: str, time_ns: int, now_mono: float | None = None) -> Point:
    """The run's totals so far (or final), with its units, metrics and projection.

    ``time_ns`` (wall clock) stamps the point; ``now_mono`` (the run registry's monotonic clock) measures an
    active run's duration.
    """
    fields: dict[str, float | None] = {
        "duration_s": run.duration_s(time_ns, now_mono), "energy_j": run.energy_j, "co2_g": run.co2_g, "water_l": run.water_l,
        "embodied_g": run.embodied_g,
    }
    fields.update({f"unit_{k}": v for k, v in run.units.items()})
    fields.update({f"metric_{k}": v for k, v in run.metrics.items()})
    fields.update({f"source_{k}_j": v for k, v in run.sources.items()})
    if run.progress is not None:
        fields["progress_done"], fields["progress_total"] = run.progress
        projected = run.projected()
        if projected is not None:
            fields["projected_energy_j"], fields["projected_co2_g"] = projected
    if run.exit_code is not None:
        fields["exit_code"] = float(run.exit_code)
    return make_point("run", {**run_tags(run, host), "status": run.status}, fields, time_ns)
