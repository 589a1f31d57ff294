"""What-if footprint calculator: ``carbond estimate`` and ``carbond.estimate(...)``. Stdlib only.

- energy: ``energy_kwh`` as given, or ``gpu_hours × gpu_power_w / 1000`` (IT energy);
- ``facility_energy_kwh = energy_kwh × pue``; ``co2_kg = facility_energy_kwh × intensity / 1000``
  (the same rule as the daemon's: :mod:`carbond.impacts`);
- water, when a water factor is given: ``energy_kwh × (wue_site + pue × wue_source)`` L;
- embodied, when ``embodied_kg`` (per device) is given: ``device_hours × embodied_kg /
  (lifetime_years × 8766 h)``; device hours default to the GPU hours.

Missing factors take the same cited defaults as the daemon (zone table, zone PUE, water
tables); every input is echoed with its unit and where it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from carbond.errors import UsageError
from carbond.factors import GPU_EMBODIED_DEFAULT, Sourced, pue_for_zone, zone_factors
from carbond.impacts import HOURS_PER_YEAR

GIVEN = "given"


@dataclass(frozen=True)
class Input:
    name: str
    value: float | str
    unit: str
    origin: str = GIVEN

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "origin": self.origin}


@dataclass(frozen=True)
class ResolvedFactors:
    """Intensity, PUE and water factors with where each came from."""

    zone: str
    intensity_g_per_kwh: Sourced
    pue: Sourced
    wue_site_l_per_kwh: Sourced
    wue_source_l_per_kwh: Sourced

    def describe(self, *, water: bool = True) -> str:
        text = f"{self.intensity_g_per_kwh.value:g} gCO2e/kWh ({self.zone or 'given'}), PUE {self.pue.value:g}"
        if water:
            text += (f", water {self.wue_site_l_per_kwh.value:g} + PUE×{self.wue_source_l_per_kwh.value:g} L/kWh")
        return text


def _fmt(value: float) -> str:
    """Readable figures: thousands separated, about six significant digits."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.6g}"


def _number(name: str, value: float | None, *, minimum: float = 0.0, strict: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{name}: expected a finite number, got {value!r}")
    if value < minimum or (strict and value <= minimum):
        raise UsageError(f"{name}: must be {'greater than' if strict else 'at least'} {minimum:g}, got {value!r}")
    return float(value)


def resolve_factors(*, region: str | None = None, intensity_g_per_kwh: float | None = None, pue: float | None = None,
                    wue_site_l_per_kwh: float | None = None, wue_source_l_per_kwh: float | None = None,
                    default_zone: str = "WORLD", default_intensity: Sourced | None = None) -> ResolvedFactors:
    """Given values win; the rest come from the zone (``region``, else ``default_zone``) with their sources.

    ``default_intensity`` (a configured fixed intensity) applies when neither a region nor an
    intensity is given.
    """
    from carbond.intensity import load_table

    table = load_table()
    zone_row = table.zone(region or default_zone)  # UnknownZoneError (exit 2) lists close matches
    zone = zone_row.zone
    if intensity_g_per_kwh is not None:  # with a region too, the region still gives PUE and water defaults
        intensity = Sourced(_number("--intensity", intensity_g_per_kwh) or 0.0, GIVEN)
        zone = region or ""
    elif region is None and default_intensity is not None:
        intensity = default_intensity
    else:
        intensity = Sourced(zone_row.intensity_g_per_kwh,
                            f"{zone} zone table: {zone_row.source} ({zone_row.year}, {zone_row.basis})")
    defaults = zone_factors(zone_row.zone, table)
    pue_value = _number("--pue", pue, minimum=1.0)
    return ResolvedFactors(
        zone=zone,
        intensity_g_per_kwh=intensity,
        pue=Sourced(pue_value, GIVEN) if pue_value is not None else pue_for_zone(zone_row.zone, table),
        wue_site_l_per_kwh=(Sourced(v, GIVEN) if (v := _number("--wue-site", wue_site_l_per_kwh)) is not None
                            else defaults.wue_site_l_per_kwh),
        wue_source_l_per_kwh=(Sourced(v, GIVEN) if (v := _number("--wue-source", wue_source_l_per_kwh)) is not None
                              else defaults.wue_source_l_per_kwh),
    )


@dataclass(frozen=True)
class Estimate:
    energy_kwh: float  # IT energy
    facility_energy_kwh: float  # × PUE
    co2_kg: float
    water_l: float | None
    embodied_kg: float | None
    inputs: tuple[Input, ...]

    @property
    def total_co2e_kg(self) -> float:
        return self.co2_kg + (self.embodied_kg or 0.0)

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"inputs": {i.name: i.as_dict() for i in self.inputs}, "energy_kwh": self.energy_kwh,
                               "facility_energy_kwh": self.facility_energy_kwh, "co2_kg": self.co2_kg}
        if self.water_l is not None:
            doc["water_l"] = self.water_l
        if self.embodied_kg is not None:
            doc["embodied_kg"] = self.embodied_kg
        doc["total_co2e_kg"] = self.total_co2e_kg
        return doc

    def lines(self) -> list[str]:
        width = max(len(i.name) for i in self.inputs)
        out = ["inputs:"]
        for i in self.inputs:
            value = f"{i.value:,.10g}" if isinstance(i.value, float) else str(i.value)
            out.append(f"  {i.name:{width}}  {value} {i.unit}".rstrip() + f"   ({i.origin})")
        out.append("estimate:")
        out.append(f"  energy_kwh           {_fmt(self.energy_kwh)} kWh (IT equipment)")
        out.append(f"  facility_energy_kwh  {_fmt(self.facility_energy_kwh)} kWh (× PUE)")
        out.append(f"  co2_kg               {_fmt(self.co2_kg)} kgCO2e ({_fmt(self.co2_kg / 1000)} t)")
        if self.water_l is not None:
            out.append(f"  water_l              {_fmt(self.water_l)} L")
        if self.embodied_kg is not None:
            out.append(f"  embodied_kg          {_fmt(self.embodied_kg)} kgCO2e")
            out.append(f"  total_co2e_kg        {_fmt(self.total_co2e_kg)} kgCO2e (operational + embodied)")
        return out


def estimate(*, gpu_hours: float | None = None, gpu_power_w: float | None = None, energy_kwh: float | None = None,
             region: str | None = None, intensity_g_per_kwh: float | None = None, pue: float | None = None,
             wue_site_l_per_kwh: float | None = None, wue_source_l_per_kwh: float | None = None,
             embodied_kg: float | None = None, lifetime_years: float | None = None, device_hours: float | None = None,
             default_zone: str = "WORLD") -> Estimate:
    """Footprint of a hypothetical job. Give ``energy_kwh``, or ``gpu_hours`` with ``gpu_power_w``.

    ``region`` (a zone, e.g. ``"FR"``) or ``intensity_g_per_kwh`` sets the grid intensity (default:
    ``default_zone``'s table value); ``pue`` defaults to the zone's published figure. Water is
    estimated when ``wue_site_l_per_kwh`` or ``wue_source_l_per_kwh`` is given; embodied carbon
    when ``embodied_kg`` (kgCO2e per device) is given. Raises :class:`UsageError` on bad input.
    """
    if region is not None and intensity_g_per_kwh is not None:
        raise UsageError("--region and --intensity exclude each other: give one")
    hours = _number("--gpu-hours", gpu_hours)
    power = _number("--gpu-power-w", gpu_power_w)
    energy = _number("--energy-kwh", energy_kwh)
    inputs: list[Input] = []
    if energy is not None:
        if hours is not None or power is not None:
            raise UsageError("give either --energy-kwh or --gpu-hours with --gpu-power-w, not both")
        inputs.append(Input("energy_kwh", energy, "kWh"))
    elif hours is not None and power is not None:
        energy = hours * power / 1000.0
        inputs += [Input("gpu_hours", hours, "h"), Input("gpu_power_w", power, "W")]
    else:
        missing = "--gpu-power-w" if hours is not None else "--gpu-hours" if power is not None else None
        raise UsageError(f"{missing} is missing: --gpu-hours and --gpu-power-w go together" if missing else
                         "nothing to estimate: give --energy-kwh E, or --gpu-hours N with --gpu-power-w W")
    f = resolve_factors(region=region, intensity_g_per_kwh=intensity_g_per_kwh, pue=pue,
                        wue_site_l_per_kwh=wue_site_l_per_kwh, wue_source_l_per_kwh=wue_source_l_per_kwh,
                        default_zone=default_zone)
    if region is not None or intensity_g_per_kwh is None:
        inputs.append(Input("region", f.zone, "", GIVEN if region is not None else "default zone"))
    inputs += [Input("intensity_g_per_kwh", f.intensity_g_per_kwh.value, "gCO2e/kWh", f.intensity_g_per_kwh.source),
               Input("pue", f.pue.value, "", f.pue.source)]
    facility = energy * f.pue.value
    water = None
    if wue_site_l_per_kwh is not None or wue_source_l_per_kwh is not None:
        inputs += [Input("wue_site_l_per_kwh", f.wue_site_l_per_kwh.value, "L/kWh", f.wue_site_l_per_kwh.source),
                   Input("wue_source_l_per_kwh", f.wue_source_l_per_kwh.value, "L/kWh", f.wue_source_l_per_kwh.source)]
        water = energy * (f.wue_site_l_per_kwh.value + f.pue.value * f.wue_source_l_per_kwh.value)
    embodied = None
    per_device = _number("--embodied-kg", embodied_kg)
    life = _number("--lifetime-years", lifetime_years, strict=True)
    used_hours = _number("--device-hours", device_hours)
    if per_device is not None:
        used_hours = used_hours if used_hours is not None else hours
        if used_hours is None:
            raise UsageError("--embodied-kg needs device hours: give --gpu-hours or --device-hours")
        life_origin = GIVEN if life is not None else GPU_EMBODIED_DEFAULT.source
        life = life if life is not None else GPU_EMBODIED_DEFAULT.lifetime_years
        inputs += [Input("embodied_kg", per_device, "kgCO2e per device"), Input("lifetime_years", life, "years", life_origin)]
        if device_hours is not None:
            inputs.append(Input("device_hours", used_hours, "h"))
        embodied = used_hours * per_device / (life * HOURS_PER_YEAR)
    elif life is not None or used_hours is not None:
        raise UsageError("--lifetime-years and --device-hours only apply with --embodied-kg")
    return Estimate(energy, facility, facility * f.intensity_g_per_kwh.value / 1000.0, water, embodied, tuple(inputs))
