"""One tick, pure given readings: readings → joules per device → points.

Per device and tick the best source that works wins: the counter delta (with wrap and
reset handling), else measured power integrated with the trapezoid rule over the
*measured* interval between the two readings, else the utilization model integrated
the same way. The source is recorded on the device point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from carbond.impacts import Embodied, Factors, embodied_g, operational
from carbond.power import UtilizationModel, counter_delta, trapezoid_j
from carbond.sensors.base import Reading
from carbond.store.base import Point, make_point

# A counter delta above max_w × dt × this factor (+ slack) is not believed.
CEILING_FACTOR = 2.0
CEILING_SLACK_J = 5.0


class DeviceEnergy(NamedTuple):
    """One device's energy over one tick (a NamedTuple: made per device per tick)."""

    device: str
    kind: str
    model: str
    source: str  # counter | power | model | simulated
    method: str  # counter | power | model: how the joules were obtained
    energy_j: float
    interval_s: float
    idle_w: float = 0.0  # the device's idle power (model), for the unattributed idle policy
    utilization_pct: float | None = None
    memory_used_bytes: float | None = None
    temperature_c: float | None = None
    counter_event: str = ""  # "wrap" / "reset" / "absurd" when the counter needed care

    @property
    def power_w(self) -> float:
        return self.energy_j / self.interval_s


def _model_j(prev: Reading, cur: Reading, dt: float) -> float:
    model = UtilizationModel(cur.idle_w, cur.max_w)
    # a reading that missed its utilization (a transient NVML error) keeps the last known one
    u1 = next((u for u in (cur.utilization_pct, prev.utilization_pct) if u is not None), 0.0)
    u0 = prev.utilization_pct if prev.utilization_pct is not None else u1
    return trapezoid_j(model.power_w(u0), model.power_w(u1), dt)


def device_energy(prev: Reading, cur: Reading) -> DeviceEnergy | None:
    """Energy of one device between two readings; None if the interval is not positive."""
    dt = cur.t_s - prev.t_s
    if not dt > 0:
        return None
    energy: float | None = None
    method, event = "model", ""
    if prev.counter_j is not None and cur.counter_j is not None:
        ceiling = (cur.counter_ceiling_w or cur.max_w) * dt * CEILING_FACTOR + CEILING_SLACK_J
        delta = counter_delta(prev.counter_j, cur.counter_j, cur.counter_wrap_j, ceiling)
        energy, event = delta.energy_j, ("" if delta.event == "ok" else delta.event)
        if energy is not None:
            method = "counter"
    if energy is None and cur.power_w is not None:
        p0 = prev.power_w if prev.power_w is not None else cur.power_w
        energy, method = trapezoid_j(p0, cur.power_w, dt), "power"
    if energy is None:
        energy, method = _model_j(prev, cur, dt), "model"
    return DeviceEnergy(
        device=cur.device,
        kind=cur.kind,
        model=cur.model,
        source="simulated" if cur.simulated else method,
        method=method,
        energy_j=max(energy, 0.0),
        interval_s=dt,
        idle_w=cur.idle_w,
        utilization_pct=cur.utilization_pct,
        memory_used_bytes=cur.memory_used_bytes,
        temperature_c=cur.temperature_c,
        counter_event=event,
    )


class Sampler:
    """Keeps the previous reading of each device; ``step`` turns new readings into energy.

    A device seen for the first time only sets its baseline. A device that stops
    appearing (lost) is forgotten, so it cannot book a gap when it comes back.
    """

    def __init__(self) -> None:
        self._prev: dict[str, Reading] = {}

    def step(self, readings: Iterable[Reading]) -> list[DeviceEnergy]:
        out: list[DeviceEnergy] = []
        current: dict[str, Reading] = {}
        for cur in readings:
            current[cur.device] = cur
            prev = self._prev.get(cur.device)
            if prev is not None:
                energy = device_energy(prev, cur)
                if energy is not None:
                    out.append(energy)
                else:
                    current[cur.device] = prev  # keep the older baseline
        self._prev = current
        return out


class TickContext(NamedTuple):
    host: str
    factors: Factors
    embodied: Embodied
    n_gpus: int


def tick_points(devices: list[DeviceEnergy], interval_s: float, time_ns: int, ctx: TickContext,
                unattributed_j: float | None = None) -> list[Point]:
    """The ``device`` points and the one ``host`` point of a tick.

    The host's ``energy_j`` is the sum of its devices' ``energy_j`` on this tick, exactly;
    ``unattributed_j`` (when runs are active) is the part no run was given.
    """
    points = [
        make_point(
            "device",
            {"host": ctx.host, "device": d.device, "kind": d.kind, "model": d.model, "source": d.source},
            _device_fields(d),
            time_ns,
        )
        for d in devices
    ]
    energy_j = sum(d.energy_j for d in devices)
    impact = operational(energy_j, ctx.factors)
    f = ctx.factors
    points.append(
        make_point(
            "host",
            {"host": ctx.host, "region": f.zone, "intensity_source": f.intensity_source, "basis": f.basis},
            {
                "power_w": sum(d.power_w for d in devices),
                "energy_j": energy_j,
                "interval_s": interval_s,
                "intensity_g_per_kwh": f.intensity_g_per_kwh,
                "pue": f.pue,
                "wue_site_l_per_kwh": f.wue_site_l_per_kwh,
                "wue_source_l_per_kwh": f.wue_source_l_per_kwh,
                "co2_g": impact.co2_g,
                "water_l": impact.water_l,
                "embodied_g": embodied_g(interval_s, ctx.n_gpus, ctx.embodied),
                "marginal_g_per_kwh": f.marginal_g_per_kwh,
                "unattributed_j": energy_j if unattributed_j is None else unattributed_j,
            },
            time_ns,
        )
    )
    return points


def _device_fields(d: DeviceEnergy) -> Mapping[str, float | None]:
    fields: dict[str, float | None] = {
        "power_w": d.power_w,
        "energy_j": d.energy_j,
        "utilization_pct": d.utilization_pct,
    }
    if d.kind == "gpu":
        fields["memory_used_bytes"] = d.memory_used_bytes
        fields["temperature_c"] = d.temperature_c
    return fields
