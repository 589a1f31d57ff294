"""Cited default factors: PUE, water (on-site and off-site) and embodied carbon. Pure lookups.

- ``water_l = kWh × (WUE_site + PUE × WUE_source)`` (see :mod:`carbond.impacts`): WUE_site is
  the facility's on-site water per IT kWh, WUE_source the water consumed per kWh generated in
  the zone's country (``data/water.csv``, EcoLogits), with the world figure where a country has
  none of its own.
- PUE: the zone's cloud provider's published figure for cloud-region zones, else the industry
  average.
- Embodied: kgCO2e and service life per GPU model (matched on the NVML name) and per server
  class, each with its source. Published estimates vary widely (~150–575 kg for one
  data-centre GPU): reports show the figures they used.

Every value comes as a :class:`Sourced` so that callers can show where it came from.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from carbond.intensity.table import ZoneTable, load_table


@dataclass(frozen=True)
class Sourced:
    """A factor and where it comes from."""

    value: float
    source: str


PUE_DEFAULT = Sourced(1.56, "Uptime Institute Global Data Center Survey 2024: industry average annual PUE 1.56")
WUE_SITE_DEFAULT_L_PER_KWH = Sourced(
    1.8,
    "Shehabi et al. 2016, United States Data Center Energy Usage Report (LBNL-1005775): average US data-centre "
    "on-site water use ≈1.8 L/kWh (hyperscale operators report 0.15–0.3 L/kWh)",
)


# --- water ----------------------------------------------------------------------------------


@cache
def water_table() -> Mapping[str, Sourced]:
    """Country alpha-2 (and ``WORLD``) → off-site water intensity of electricity, L/kWh."""
    text = resources.files("carbond.intensity").joinpath("data/water.csv").read_text("utf-8")
    return {r["zone"]: Sourced(float(r["wue_source_l_per_kwh"]), r["source"]) for r in csv.DictReader(text.splitlines())}


def wue_source_l_per_kwh(zone: str, table: ZoneTable | None = None) -> Sourced:
    """Water consumed per kWh generated for a zone's country; the world figure if it has none."""
    water = water_table()
    row = (table or load_table()).get(zone)
    country = row.country if row is not None else zone.strip().upper().split("-", 1)[0]
    found = water.get(country)
    if found is not None:
        return found
    world = water["WORLD"]
    return Sourced(world.value, f"{world.source} (no figure for {country or zone}: world average)")


def pue_for_zone(zone: str, table: ZoneTable | None = None) -> Sourced:
    """The cloud provider's PUE for a cloud-region zone, else :data:`PUE_DEFAULT`."""
    row = (table or load_table()).get(zone)
    if row is not None and row.pue is not None:
        return Sourced(row.pue, row.pue_source)
    return PUE_DEFAULT


@dataclass(frozen=True)
class ZoneFactors:
    pue: Sourced
    wue_site_l_per_kwh: Sourced
    wue_source_l_per_kwh: Sourced


def zone_factors(zone: str, table: ZoneTable | None = None) -> ZoneFactors:
    """The cited defaults for a zone; configured values override them field by field."""
    return ZoneFactors(pue_for_zone(zone, table), WUE_SITE_DEFAULT_L_PER_KWH, wue_source_l_per_kwh(zone, table))


# --- embodied -------------------------------------------------------------------------------

_BLOOM = ("Luccioni, Viguier & Ligozat 2023, Estimating the Carbon Footprint of BLOOM, JMLR 24(253): "
          "A100 GPU 150 kgCO2e, HPE Apollo 6500 server 2500 kgCO2e, 6-year replacement")
_ECOLOGITS = "EcoLogits 0.11.3 hardware configurations (Boavizta methodology), 3-year lifespan"


@dataclass(frozen=True)
class EmbodiedSpec:
    name: str
    embodied_kg: float  # kgCO2e, manufacturing and transport
    lifetime_years: float
    source: str


# Matched in order against the lower-cased model name (NVML's, e.g. "NVIDIA H100 80GB HBM3").
GPU_EMBODIED: tuple[tuple[tuple[str, ...], EmbodiedSpec], ...] = (
    (("h200",), EmbodiedSpec("NVIDIA H200 (141 GB)", 364.0, 3.0, f"{_ECOLOGITS}: dgx_h200 accelerator")),
    (("h100", "h800"), EmbodiedSpec("NVIDIA H100/H800 (80 GB)", 273.0, 3.0, f"{_ECOLOGITS}: dgx_h800 accelerator")),
    (("a100",), EmbodiedSpec("NVIDIA A100", 150.0, 6.0, _BLOOM)),
    (("tpu v6e", "tpu-v6e", "v6e"), EmbodiedSpec("Google TPU v6e", 323.0, 3.0, f"{_ECOLOGITS}: tpu_v6e accelerator")),
)
GPU_EMBODIED_DEFAULT = EmbodiedSpec("data-centre GPU (default)", 150.0, 6.0, _BLOOM)

SERVER_EMBODIED: Mapping[str, EmbodiedSpec] = {
    "default": EmbodiedSpec("GPU server without its GPUs (default)", 2500.0, 6.0, _BLOOM),
    "hgx-8gpu": EmbodiedSpec("8-GPU HGX/DGX-class server without its GPUs", 6000.0, 3.0,
                             f"{_ECOLOGITS}: dgx_h800/dgx_h200 server"),
    "1gpu": EmbodiedSpec("single-GPU server without its GPU", 750.0, 3.0, f"{_ECOLOGITS}: single_h200 server"),
    "apollo6500": EmbodiedSpec("HPE Apollo 6500 Gen10 Plus (8× A100) without its GPUs", 2500.0, 6.0, _BLOOM),
}


def gpu_embodied(model: str) -> EmbodiedSpec:
    """The embodied carbon and service life for a GPU model name; the default when unknown."""
    name = model.casefold()
    for patterns, spec in GPU_EMBODIED:
        if any(p in name for p in patterns):
            return spec
    return GPU_EMBODIED_DEFAULT


def server_embodied(kind: str = "default") -> EmbodiedSpec:
    """A server class from :data:`SERVER_EMBODIED` (``default``, ``hgx-8gpu``, ``1gpu``, ``apollo6500``)."""
    try:
        return SERVER_EMBODIED[kind]
    except KeyError:
        from carbond.errors import UsageError

        raise UsageError(f"unknown server class {kind!r}; valid: {', '.join(SERVER_EMBODIED)}") from None


# --- the factors a daemon runs with -----------------------------------------------------------


@dataclass(frozen=True)
class ImpactFactors:
    """Every factor behind co2, water and embodied, each with where it came from."""

    pue: Sourced
    wue_site_l_per_kwh: Sourced
    wue_source_l_per_kwh: Sourced
    host_embodied: EmbodiedSpec
    gpu_embodied: tuple[EmbodiedSpec, ...]  # one per GPU

    def gpus_as_one(self) -> tuple[float, float]:
        """(mean kgCO2e, lifetime years) that give the same g/s as the GPUs' own figures."""
        if not self.gpu_embodied:
            return 0.0, 1.0
        total_kg = sum(g.embodied_kg for g in self.gpu_embodied)
        rate = sum(g.embodied_kg / g.lifetime_years for g in self.gpu_embodied)
        return total_kg / len(self.gpu_embodied), (total_kg / rate if rate > 0 else 1.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "pue": vars(self.pue), "wue_site_l_per_kwh": vars(self.wue_site_l_per_kwh),
            "wue_source_l_per_kwh": vars(self.wue_source_l_per_kwh), "host_embodied": vars(self.host_embodied),
            "gpu_embodied": [vars(g) for g in self.gpu_embodied],
        }


def resolve_impact_factors(impacts: Any, zone: str, gpu_models: list[str]) -> ImpactFactors:
    """Configured values where set (non-zero), else the zone's and the hardware's cited defaults."""
    defaults = zone_factors(zone)

    def pick(value: float, key: str, default: Sourced) -> Sourced:
        return Sourced(value, f"configured: [impacts] {key}") if value > 0 else default

    gpus = []
    for model in gpu_models:
        spec = gpu_embodied(model)
        if impacts.gpu_embodied_kg > 0 or impacts.gpu_lifetime_years > 0:
            spec = EmbodiedSpec(model, impacts.gpu_embodied_kg or spec.embodied_kg,
                                impacts.gpu_lifetime_years or spec.lifetime_years,
                                f"configured: [impacts] gpu_embodied_kg/gpu_lifetime_years (else {spec.source})")
        gpus.append(spec)
    base = server_embodied()
    host = base
    if (impacts.host_embodied_kg, impacts.host_lifetime_years) != (base.embodied_kg, base.lifetime_years):
        host = EmbodiedSpec("server (configured)", impacts.host_embodied_kg, impacts.host_lifetime_years,
                            "configured: [impacts] host_embodied_kg/host_lifetime_years")
    return ImpactFactors(
        pue=pick(impacts.pue, "pue", defaults.pue),
        wue_site_l_per_kwh=Sourced(impacts.wue_site_l_per_kwh, defaults.wue_site_l_per_kwh.source
                                   if impacts.wue_site_l_per_kwh == defaults.wue_site_l_per_kwh.value
                                   else "configured: [impacts] wue_site_l_per_kwh"),
        wue_source_l_per_kwh=pick(impacts.wue_source_l_per_kwh, "wue_source_l_per_kwh", defaults.wue_source_l_per_kwh),
        host_embodied=host,
        gpu_embodied=tuple(gpus),
    )
