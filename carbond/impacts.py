"""Energy → carbon, water and embodied impacts. Pure.

- ``co2_g   = kWh × PUE × intensity_g_per_kwh``
- ``water_l = kWh × (WUE_site + PUE × WUE_source)``
- ``embodied_g = Σ devices  embodied_kg × 1000 / lifetime_h × hours``

``energy_j`` is always IT energy (what the devices drew); PUE enters co2 and water only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

J_PER_KWH = 3.6e6
HOURS_PER_YEAR = 8766.0  # 365.25 days


@dataclass(frozen=True, slots=True)
class Factors:
    """The factors one interval's impacts were computed with (kept on every point)."""

    intensity_g_per_kwh: float
    pue: float
    wue_site_l_per_kwh: float
    wue_source_l_per_kwh: float
    zone: str = "WORLD"
    intensity_source: str = "table"  # which provider gave the intensity
    basis: str = "lifecycle"
    marginal_g_per_kwh: float | None = None  # a marginal rate (WattTime): stored, never used for co2_g


class Impact(NamedTuple):
    co2_g: float
    water_l: float


def operational(energy_j: float, f: Factors) -> Impact:
    kwh = energy_j / J_PER_KWH
    return Impact(
        co2_g=kwh * f.pue * f.intensity_g_per_kwh,
        water_l=kwh * (f.wue_site_l_per_kwh + f.pue * f.wue_source_l_per_kwh),
    )


@dataclass(frozen=True)
class Embodied:
    """Embodied carbon and service life of the host (without GPUs) and of each GPU."""

    host_kg: float
    host_lifetime_years: float
    gpu_kg: float
    gpu_lifetime_years: float

    def host_g_per_s(self, n_gpus: int) -> float:
        host = self.host_kg * 1000.0 / (self.host_lifetime_years * HOURS_PER_YEAR * 3600.0)
        gpu = self.gpu_kg * 1000.0 / (self.gpu_lifetime_years * HOURS_PER_YEAR * 3600.0)
        return host + n_gpus * gpu


def embodied_g(interval_s: float, n_gpus: int, e: Embodied) -> float:
    return e.host_g_per_s(n_gpus) * interval_s


def energy_basis(joules_by_source: Mapping[str, float]) -> str:
    """How energy was known, from joules by source (``counter``: hardware energy counters, ``power``: measured
    power, ``model``: a power model, ``simulated``): ``counter``, or shares such as ``counter 80%, model 20%``."""
    parts = sorted(((k, v) for k, v in joules_by_source.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in parts)
    if not parts:
        return "none"
    if parts[0][1] / total > 0.995:
        return parts[0][0]
    return ", ".join(f"{k} {v / total:.0%}" for k, v in parts)


def sources_in(fields: Mapping[str, float]) -> dict[str, float]:
    """``{"model": 12.0}`` from a run point's or summary's ``source_model_j`` fields."""
    return {k[7:-2]: float(v) for k, v in fields.items() if k.startswith("source_") and k.endswith("_j") and v is not None}
