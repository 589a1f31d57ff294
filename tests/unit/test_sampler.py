"""The sampler: readings → joules per device → points. Pure, driven with plain values."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbond.impacts import Embodied, Factors
from carbond.sampler import CEILING_FACTOR, CEILING_SLACK_J, DeviceEnergy, Sampler, TickContext, device_energy, tick_points
from carbond.sensors.base import Reading
from carbond.sensors.gpu import NvmlGpus
from carbond.sensors.simnvml import SimGpu, SimulatedNvml, Sine


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def r(t: float, *, device: str = "gpu0", kind: str = "gpu", idle: float = 50.0, mx: float = 400.0, **kw) -> Reading:
    return Reading(device=device, kind=kind, model="Test", t_s=t, idle_w=idle, max_w=mx, **kw)


# --- device_energy: source selection ---------------------------------------------------------
def test_counter_wins_over_power_and_model():
    d = device_energy(r(10.0, counter_j=1000.0, power_w=100.0, utilization_pct=10.0),
                      r(12.0, counter_j=1500.0, power_w=100.0, utilization_pct=10.0))
    assert (d.method, d.source, d.energy_j, d.interval_s) == ("counter", "counter", 500.0, 2.0)
    assert d.power_w == pytest.approx(250.0)
    assert d.counter_event == ""


def test_power_is_integrated_with_the_trapezoid_rule():
    d = device_energy(r(0.0, power_w=100.0), r(2.0, power_w=300.0))
    assert (d.method, d.energy_j) == ("power", pytest.approx(400.0))  # (100 + 300) / 2 × 2 s


def test_power_without_previous_power_uses_the_current_value():
    d = device_energy(r(0.0), r(3.0, power_w=120.0))
    assert (d.method, d.energy_j) == ("power", pytest.approx(360.0))


def test_counter_needs_both_readings():
    d = device_energy(r(0.0), r(1.0, counter_j=5000.0, power_w=200.0))
    assert d.method == "power"


def test_model_when_no_counter_and_no_power():
    # idle 50, max 400: 0 % → 50 W, 100 % → 400 W; trapezoid over 2 s = 450 J
    d = device_energy(r(0.0, utilization_pct=0.0), r(2.0, utilization_pct=100.0))
    assert (d.method, d.energy_j) == ("model", pytest.approx(450.0))


def test_model_without_utilization_is_idle_power():
    d = device_energy(r(0.0), r(4.0))
    assert (d.method, d.energy_j) == ("model", pytest.approx(200.0))


def test_model_uses_current_utilization_when_previous_is_missing():
    d = device_energy(r(0.0), r(1.0, utilization_pct=50.0))
    assert d.energy_j == pytest.approx(225.0)  # 50 + 350 × 0.5


def test_wrap_is_counted_through_the_counter():
    wrap = 262_143.328850
    d = device_energy(r(0.0, counter_j=wrap - 100.0, counter_wrap_j=wrap),
                      r(1.0, counter_j=150.0, counter_wrap_j=wrap))
    assert (d.method, d.counter_event) == ("counter", "wrap")
    assert d.energy_j == pytest.approx(250.0, abs=1e-6)


def test_reset_falls_back_to_power_and_records_the_event():
    d = device_energy(r(0.0, counter_j=90_000.0, power_w=200.0), r(1.0, counter_j=3.0, power_w=200.0))
    assert (d.method, d.counter_event, d.energy_j) == ("power", "reset", pytest.approx(200.0))


def test_absurd_counter_jump_falls_back_to_the_model():
    # ceiling = 400 W × 1 s × 2 + 5 J = 805 J; a 806 J delta is refused
    assert CEILING_FACTOR == 2.0 and CEILING_SLACK_J == 5.0
    ok = device_energy(r(0.0, counter_j=0.0), r(1.0, counter_j=805.0))
    assert (ok.method, ok.energy_j) == ("counter", 805.0)
    d = device_energy(r(0.0, counter_j=0.0, utilization_pct=0.0), r(1.0, counter_j=806.0, utilization_pct=0.0))
    assert (d.method, d.counter_event, d.energy_j) == ("model", "absurd", pytest.approx(50.0))


def test_garbage_negative_power_never_books_negative_energy():
    d = device_energy(r(0.0, power_w=-500.0), r(1.0, power_w=-20.0))
    assert d.energy_j == 0.0


def test_non_positive_interval_gives_nothing():
    assert device_energy(r(5.0, counter_j=1.0), r(5.0, counter_j=2.0)) is None
    assert device_energy(r(5.0, counter_j=1.0), r(4.0, counter_j=2.0)) is None


def test_simulated_reading_is_tagged_simulated():
    d = device_energy(r(0.0, power_w=10.0, simulated=True), r(1.0, power_w=10.0, simulated=True))
    assert (d.source, d.method) == ("simulated", "power")


def test_fields_are_carried_from_the_current_reading():
    d = device_energy(r(0.0, power_w=1.0, utilization_pct=1.0, memory_used_bytes=1.0, temperature_c=1.0),
                      r(1.0, power_w=1.0, utilization_pct=70.0, memory_used_bytes=2e9, temperature_c=61.0))
    assert (d.utilization_pct, d.memory_used_bytes, d.temperature_c) == (70.0, 2e9, 61.0)


# --- Sampler.step ----------------------------------------------------------------------------
def test_first_reading_only_sets_the_baseline():
    s = Sampler()
    assert s.step([r(0.0, power_w=100.0), r(0.0, device="cpu0", kind="cpu", power_w=10.0)]) == []
    out = s.step([r(1.0, power_w=100.0), r(1.0, device="cpu0", kind="cpu", power_w=10.0)])
    assert [(d.device, d.energy_j) for d in out] == [("gpu0", 100.0), ("cpu0", 10.0)]


def test_a_new_device_starts_with_a_baseline():
    s = Sampler()
    s.step([r(0.0, power_w=100.0)])
    out = s.step([r(1.0, power_w=100.0), r(1.0, device="gpu1", power_w=100.0)])
    assert [d.device for d in out] == ["gpu0"]
    out = s.step([r(2.0, power_w=100.0), r(2.0, device="gpu1", power_w=100.0)])
    assert [d.device for d in out] == ["gpu0", "gpu1"]


def test_a_device_that_disappears_is_forgotten_and_books_no_gap():
    s = Sampler()
    s.step([r(0.0, counter_j=0.0)])
    s.step([r(1.0, counter_j=100.0)])
    assert s.step([]) == []
    assert s.step([r(60.0, counter_j=6_000.0)]) == []  # back: a new baseline, not 59 s of energy
    [d] = s.step([r(61.0, counter_j=6_100.0)])
    assert d.energy_j == 100.0


def test_a_reading_with_no_time_progress_keeps_the_older_baseline():
    s = Sampler()
    s.step([r(0.0, counter_j=0.0)])
    assert s.step([r(0.0, counter_j=50.0)]) == []  # same timestamp
    [d] = s.step([r(1.0, counter_j=120.0)])
    assert (d.energy_j, d.interval_s) == (120.0, 1.0)  # measured from the older baseline


def test_energy_is_integrated_over_measured_not_nominal_time():
    # nominal interval 1 s, but the ticks came late or early
    s = Sampler()
    times = [0.0, 1.4, 2.1, 3.9, 4.0, 6.5]
    total = 0.0
    for t in times:
        total += sum(d.energy_j for d in s.step([r(t, power_w=200.0)]))
    assert total == pytest.approx(200.0 * 6.5)  # not 200 W × 5 ticks × 1 s


def test_integration_over_irregular_measured_intervals_within_one_percent():
    """A synthetic power trace, read at irregular ~1 s intervals for 15 minutes."""
    trace = Sine(mean_w=350.0, amplitude_w=250.0, period_s=45.0, phase=1.1)
    clock = FakeClock(1000.0)
    gpu = SimGpu(0, has_counter=False, trace=trace)  # power path: no counter to lean on
    sensor = NvmlGpus(SimulatedNvml([gpu], clock=clock), clock=clock)
    assert sensor.devices()[0].source == "power"
    sampler = Sampler()
    rng = random.Random(20240601)
    start = clock.t
    sampler.step(sensor.read())
    total_j = 0.0
    measured_s = 0.0
    while clock.t - start < 900.0:
        clock.advance(rng.uniform(0.7, 1.3))
        [d] = sampler.step(sensor.read())
        assert d.method == "power"
        total_j += d.energy_j
        measured_s += d.interval_s
    assert measured_s == pytest.approx(clock.t - start)
    exact_j = trace.energy_j(start, clock.t)  # the analytic integral
    assert exact_j > 250_000.0
    assert abs(total_j - exact_j) / exact_j < 0.01


# --- tick_points -----------------------------------------------------------------------------
FACTORS = Factors(intensity_g_per_kwh=366.0, pue=1.4, wue_site_l_per_kwh=0.3, wue_source_l_per_kwh=2.5, zone="DE",
                  intensity_source="table")
# 8.766 kg over 1 year = 1 g per hour; 17.532 kg over 2 years = 1 g per hour per GPU
EMBODIED = Embodied(host_kg=8.766, host_lifetime_years=1.0, gpu_kg=17.532, gpu_lifetime_years=2.0)


def ctx(n_gpus: int = 2) -> TickContext:
    return TickContext(host="node-1", factors=FACTORS, embodied=EMBODIED, n_gpus=n_gpus)


def energy(device: str, kind: str, energy_j: float, interval_s: float = 1.0, source: str = "counter", **kw) -> DeviceEnergy:
    return DeviceEnergy(device=device, kind=kind, model="M", source=source, method="counter", energy_j=energy_j,
                        interval_s=interval_s, **kw)


def test_tick_points_host_is_the_sum_of_devices_exactly():
    devices = [energy("cpu0", "cpu", 123.456), energy("gpu0", "gpu", 700.1, memory_used_bytes=1e9, temperature_c=60),
               energy("gpu1", "gpu", 0.1 + 0.2), energy("ram", "ram", 24.0, source="model")]
    points = tick_points(devices, 1.0, 1_700_000_000_000_000_000, ctx())
    device_points = [p for p in points if p.measurement == "device"]
    [host] = [p for p in points if p.measurement == "host"]
    assert [p.tags["device"] for p in device_points] == ["cpu0", "gpu0", "gpu1", "ram"]
    assert host.fields["energy_j"] == sum(p.fields["energy_j"] for p in device_points)
    assert host.fields["power_w"] == pytest.approx(123.456 + 700.1 + 0.3 + 24.0)
    assert all(p.time_ns == 1_700_000_000_000_000_000 for p in points)


def test_tick_points_impacts():
    # 3.6 MJ = 1 kWh over half an hour
    points = tick_points([energy("gpu0", "gpu", 2.0e6, 1800.0), energy("cpu0", "cpu", 1.6e6, 1800.0)], 1800.0, 0, ctx(2))
    host = points[-1]
    assert host.measurement == "host"
    assert host.tags == {"host": "node-1", "region": "DE", "intensity_source": "table", "basis": "lifecycle"}
    assert "marginal_g_per_kwh" not in host.fields  # no marginal provider: no field, never a 0
    f = host.fields
    assert f["energy_j"] == pytest.approx(3.6e6)
    assert f["co2_g"] == pytest.approx(1.0 * 1.4 * 366.0)  # kWh × PUE × intensity = 512.4
    assert f["co2_g"] == pytest.approx(f["energy_j"] / 3.6e6 * f["pue"] * f["intensity_g_per_kwh"])
    assert f["water_l"] == pytest.approx(1.0 * (0.3 + 1.4 * 2.5))  # 3.8 L
    assert f["embodied_g"] == pytest.approx(0.5 * (1.0 + 2 * 1.0))  # half an hour of host + 2 GPUs at 1 g/h each
    assert (f["pue"], f["intensity_g_per_kwh"], f["wue_site_l_per_kwh"], f["wue_source_l_per_kwh"]) == (1.4, 366.0, 0.3, 2.5)
    assert f["interval_s"] == 1800.0
    assert f["power_w"] == pytest.approx(2000.0)


def test_tick_points_fields_are_all_floats():
    devices = [energy("cpu0", "cpu", 10, utilization_pct=50), energy("gpu0", "gpu", 7, memory_used_bytes=2**33,
                                                                     temperature_c=55, utilization_pct=90)]
    points = tick_points(devices, 1, 0, ctx(1))
    for p in points:
        assert p.fields, p
        for key, value in p.fields.items():
            assert type(value) is float, (p.measurement, key, value)
            assert math.isfinite(value)


def test_device_points_carry_source_and_gpu_only_fields():
    devices = [energy("cpu0", "cpu", 10.0, utilization_pct=50.0, memory_used_bytes=5.0, temperature_c=5.0),
               energy("gpu0", "gpu", 7.0, source="simulated", memory_used_bytes=2e9, temperature_c=55.0),
               energy("gpu1", "gpu", 7.0, source="power")]
    cpu, gpu0, gpu1, _host = tick_points(devices, 1.0, 0, ctx())
    assert cpu.tags == {"host": "node-1", "device": "cpu0", "kind": "cpu", "model": "M", "source": "counter"}
    assert set(cpu.fields) == {"power_w", "energy_j", "utilization_pct"}
    assert gpu0.tags["source"] == "simulated"
    assert gpu0.fields["memory_used_bytes"] == 2e9 and gpu0.fields["temperature_c"] == 55.0
    assert set(gpu1.fields) == {"power_w", "energy_j"}  # None fields are left out, not written as null
    assert gpu1.tags["source"] == "power"


def test_simulated_readings_become_simulated_points():
    s = Sampler()
    s.step([r(0.0, counter_j=0.0, simulated=True)])
    devices = s.step([r(1.0, counter_j=100.0, simulated=True)])
    [device, _host] = tick_points(devices, 1.0, 0, ctx(1))
    assert device.tags["source"] == "simulated"


def test_no_devices_is_a_zero_host_point():
    [host] = tick_points([], 1.0, 0, ctx(0))
    assert host.fields["energy_j"] == 0.0 and host.fields["co2_g"] == 0.0 and host.fields["water_l"] == 0.0
    assert host.fields["embodied_g"] == pytest.approx(1.0 / 3600.0)  # the host still ages


# --- properties ------------------------------------------------------------------------------
WRAPS = (None, 262_143.328850, 65_712.999613)
MAX_W = 500.0
step_strategy = st.tuples(
    st.floats(0.05, 10.0),  # measured interval (s)
    st.sampled_from(["use", "use", "use", "reset", "jump", "missing"]),
    st.floats(0.0, 1.0),  # how much of the possible energy was used / where a reset lands
    st.one_of(st.none(), st.floats(0.0, MAX_W)),  # measured power, if any
)


@st.composite
def device_runs(draw):
    wrap = draw(st.sampled_from(WRAPS))
    start = draw(st.floats(0.0, wrap if wrap is not None else 1e9, exclude_max=wrap is not None))
    return wrap, start, draw(st.lists(step_strategy, min_size=1, max_size=40))


@settings(max_examples=300, deadline=None)
@given(st.lists(device_runs(), min_size=1, max_size=4))
def test_property_energy_never_negative_and_host_is_the_sum(runs):
    """Arbitrary counters (wraps, resets, absurd jumps, missing reads): energy is never negative or
    beyond what the device could draw, the counter is exact when it is trustworthy, and the host
    point is exactly the sum of its devices on every tick."""
    sampler = Sampler()
    state = [{"counter": start, "t": 0.0} for _, start, _ in runs]

    def reading(i: int, counter: float | None, power: float | None) -> Reading:
        return r(state[i]["t"], device=f"gpu{i}", idle=20.0, mx=MAX_W, counter_j=counter,
                 counter_wrap_j=runs[i][0], power_w=power, utilization_pct=50.0)

    sampler.step([reading(i, s["counter"], None) for i, s in enumerate(state)])
    prev_had_counter = [True] * len(runs)
    for k in range(max(len(steps) for _, _, steps in runs)):
        readings, expected = [], {}
        for i, (wrap, _, steps) in enumerate(runs):
            if k >= len(steps):
                continue
            dt, kind, frac, power = steps[k]
            s = state[i]
            s["t"] += dt
            counter: float | None = s["counter"]
            if kind == "use":
                used = frac * MAX_W * dt
                counter = s["counter"] + used
                if wrap is not None:
                    counter %= wrap
                if prev_had_counter[i]:
                    expected[f"gpu{i}"] = used
            elif kind == "reset":
                counter = s["counter"] * frac  # restarts somewhere below where it was
            elif kind == "jump":
                counter = s["counter"] + CEILING_FACTOR * MAX_W * dt + CEILING_SLACK_J + 1.0 + frac * 1e6
                if wrap is not None:
                    counter %= wrap
            else:
                counter = None
            if counter is not None:
                s["counter"] = counter
            prev_had_counter[i] = counter is not None
            readings.append(reading(i, counter, power))
        devices = sampler.step(readings)
        assert len(devices) == len(readings)
        for d in devices:
            bound = max(CEILING_FACTOR * MAX_W * d.interval_s + CEILING_SLACK_J, MAX_W * d.interval_s)
            assert math.isfinite(d.energy_j) and 0.0 <= d.energy_j <= bound, d
            if d.device in expected:
                assert d.method == "counter"
                assert d.energy_j == pytest.approx(expected[d.device], rel=1e-9, abs=1e-6)
        points = tick_points(devices, 1.0, 0, ctx(len(runs)))
        device_points = [p for p in points if p.measurement == "device"]
        host = points[-1]
        assert host.fields["energy_j"] == sum(p.fields["energy_j"] for p in device_points)
        assert host.fields["energy_j"] >= 0.0
        assert all(type(v) is float for p in points for v in p.fields.values())


def test_model_keeps_the_last_utilization_when_a_reading_misses_it():
    from carbond.sampler import device_energy
    from carbond.sensors.base import Reading

    prev = Reading("gpu0", "gpu", "m", 0.0, idle_w=100.0, max_w=300.0, utilization_pct=50.0)
    cur = Reading("gpu0", "gpu", "m", 2.0, idle_w=100.0, max_w=300.0, utilization_pct=None)
    e = device_energy(prev, cur)
    assert e is not None and e.method == "model"
    assert e.energy_j == 2.0 * 200.0  # 50 % of the way from 100 to 300 W, not idle


def test_marginal_intensity_is_stored_beside_but_never_used_for_co2():
    from dataclasses import replace

    c = ctx(1)
    c = TickContext(c.host, replace(c.factors, marginal_g_per_kwh=900.0), c.embodied, c.n_gpus)
    host = tick_points([energy("gpu0", "gpu", 3.6e6, 3600.0)], 3600.0, 0, c)[-1]
    assert host.fields["marginal_g_per_kwh"] == 900.0
    assert host.fields["co2_g"] == pytest.approx(1.0 * host.fields["pue"] * host.fields["intensity_g_per_kwh"])
