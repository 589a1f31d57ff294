"""NVML GPUs through the simulated pynvml (which raises the real pynvml error classes)."""

from __future__ import annotations

import logging

import pynvml
import pytest

from carbond.errors import SensorError
from carbond.sampler import Sampler
from carbond.sensors.gpu import NvmlGpus
from carbond.sensors.simnvml import (
    NVML_DEVICE_ARCH_PASCAL,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    Constant,
    SimGpu,
    SimulatedNvml,
    Sine,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        assert dt >= 0
        self.t += dt


def setup(*gpus: SimGpu, simulated: bool = False, slow_refresh_s: float = 10.0) -> tuple[FakeClock, SimulatedNvml, NvmlGpus]:
    clock = FakeClock()
    nvml = SimulatedNvml(list(gpus), clock=clock)
    return clock, nvml, NvmlGpus(nvml, simulated=simulated, clock=clock, slow_refresh_s=slow_refresh_s)


def step(clock: FakeClock, sampler: Sampler, sensor: NvmlGpus, dt: float) -> dict:
    clock.advance(dt)
    return {d.device: d for d in sampler.step(sensor.read())}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- source selection -----------------------------------------------------------------------
def test_counter_gpu_energy_equals_the_trace_integral():
    trace = Sine(mean_w=400.0, amplitude_w=250.0, period_s=17.0, phase=0.3)
    clock, _, gpus = setup(SimGpu(0, trace=trace))
    assert [(d.device, d.source) for d in gpus.devices()] == [("gpu0", "counter")]
    sampler = Sampler()
    sampler.step(gpus.read())
    for dt in (1.0, 0.25, 3.5, 1.0):
        t0 = clock.t
        [d] = step(clock, sampler, gpus, dt).values()
        assert d.source == d.method == "counter"
        # the counter is whole mJ: at most 1 mJ of truncation per reading
        assert d.energy_j == pytest.approx(trace.energy_j(t0, clock.t), abs=2e-3)
        assert d.interval_s == pytest.approx(dt)


def test_counter_readings_are_joules_not_millijoules():
    clock, _, gpus = setup(SimGpu(0, trace=Constant(300.0)))
    r0 = gpus.read()[0]
    clock.advance(2.0)
    r1 = gpus.read()[0]
    assert r1.counter_j - r0.counter_j == pytest.approx(600.0, abs=2e-3)
    assert r1.power_w == pytest.approx(300.0)  # mW → W
    assert r1.max_w == pytest.approx(700.0)  # the simulated power limit, mW → W


def test_counterless_gpu_integrates_power():
    clock, _, gpus = setup(SimGpu(0, has_counter=False, trace=Constant(250.0)))
    assert gpus.devices()[0].source == "power"
    sampler = Sampler()
    sampler.step(gpus.read())
    [d] = step(clock, sampler, gpus, 2.0).values()
    assert (d.method, d.energy_j) == ("power", pytest.approx(500.0))
    assert gpus.read()[0].counter_j is None


def test_pascal_gpu_has_no_counter():
    clock, _, gpus = setup(SimGpu(0, name="Tesla P100-PCIE-16GB", arch=NVML_DEVICE_ARCH_PASCAL,
                                  idle_w=30.0, power_limit_w=250.0, trace=Constant(100.0)))
    assert gpus.devices()[0].source == "power"
    sampler = Sampler()
    sampler.step(gpus.read())
    [d] = step(clock, sampler, gpus, 1.5).values()
    assert (d.method, d.energy_j) == ("power", pytest.approx(150.0))


def test_powerless_gpu_with_counter_uses_the_counter():
    clock, _, gpus = setup(SimGpu(0, has_power=False, trace=Constant(200.0)))
    sampler = Sampler()
    sampler.step(gpus.read())
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.method, d.energy_j) == ("counter", pytest.approx(200.0, abs=2e-3))
    assert gpus.read()[0].power_w is None


def test_powerless_counterless_gpu_uses_model_with_max_from_the_power_limit():
    # Simulated util = (P - idle) / (limit - idle): 70 W idle, 450 W limit, 260 W → 50 %.
    clock, _, gpus = setup(SimGpu(0, has_counter=False, has_power=False, idle_w=70.0, power_limit_w=450.0,
                                  trace=Constant(260.0)))
    [info] = gpus.devices()
    assert info.source == "model" and "NVML power limit" in info.detail
    sampler = Sampler()
    r = gpus.read()[0]
    assert (r.max_w, r.idle_w, r.utilization_pct) == (450.0, 70.0, 50.0)  # idle 70 W from the H100 table row
    sampler.step([r])
    [d] = step(clock, sampler, gpus, 2.0).values()
    # 70 + (450 - 70) × 0.5 = 260 W for 2 s; with the table's 700 W max it would be 385 W
    assert (d.method, d.energy_j) == ("model", pytest.approx(520.0))


def test_model_max_falls_back_to_the_table_without_a_power_limit():
    clock, nvml, _ = setup(SimGpu(0))
    nvml.inject(0, "nvmlDeviceGetEnforcedPowerLimit", NVML_ERROR_NOT_SUPPORTED)
    nvml.inject(0, "nvmlDeviceGetPowerManagementLimit", NVML_ERROR_NOT_SUPPORTED)
    gpus = NvmlGpus(nvml, clock=clock)
    r = gpus.read()[0]
    assert (r.idle_w, r.max_w) == (70.0, 700.0)  # "H100" row of the table


def test_simulated_flag_tags_source_but_keeps_the_method():
    clock, _, gpus = setup(SimGpu(0, trace=Constant(100.0)), simulated=True)
    assert gpus.devices()[0].source == "simulated"
    sampler = Sampler()
    sampler.step(gpus.read())
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.source, d.method) == ("simulated", "counter")


def test_utilization_memory_temperature_fields():
    _, _, gpus = setup(SimGpu(0, idle_w=100.0, power_limit_w=500.0, processes=[(123, 5 * 1024**3)],
                              trace=Constant(300.0)))
    r = gpus.read()[0]
    assert r.utilization_pct == 50.0  # (300 - 100) / (500 - 100)
    assert r.memory_used_bytes == float(5 * 1024**3)
    assert r.temperature_c == 57.0  # int(30 + 45 × 300 / 500)
    assert all(isinstance(v, float) for v in (r.utilization_pct, r.memory_used_bytes, r.temperature_c))


# --- counter trouble ------------------------------------------------------------------------
def test_driver_reload_books_no_negative_or_absurd_energy_and_counter_resumes():
    clock, nvml, gpus = setup(SimGpu(0, trace=Constant(300.0)))
    sampler = Sampler()
    sampler.step(gpus.read())
    step(clock, sampler, gpus, 1.0)
    clock.advance(0.5)
    nvml.reset_counter(0)  # the counter restarts from 0 half-way through the tick
    [d] = step(clock, sampler, gpus, 0.5).values()
    assert d.counter_event == "reset"
    assert d.method == "power"  # the counter's delta is not believed; measured power is used
    assert d.energy_j == pytest.approx(300.0)
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.method, d.counter_event) == ("counter", "")
    assert d.energy_j == pytest.approx(300.0, abs=2e-3)


def test_driver_reload_without_power_uses_the_model():
    # the counter has been running since the driver loaded (5 MJ); the reload sets it to 0
    clock, nvml, gpus = setup(SimGpu(0, has_power=False, idle_w=70.0, power_limit_w=450.0, trace=Constant(260.0),
                                     energy_mj_offset=5e9))
    sampler = Sampler()
    sampler.step(gpus.read())
    clock.advance(1.0)
    nvml.reset_counter(0)
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.counter_event, d.method) == ("reset", "model")
    assert d.energy_j == pytest.approx(520.0)  # 260 W model × 2 s


def test_counter_jump_beyond_the_power_limit_is_absurd():
    clock, nvml, gpus = setup(SimGpu(0, trace=Constant(300.0)))
    sampler = Sampler()
    sampler.step(gpus.read())
    nvml.gpus[0].energy_mj_offset += 10_000_000.0  # +10 kJ in 1 s on a 700 W part
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.counter_event, d.method) == ("absurd", "power")
    assert d.energy_j == pytest.approx(300.0)


def test_not_supported_counter_mid_run_falls_back_to_power_for_good():
    clock, nvml, gpus = setup(SimGpu(0, trace=Constant(200.0)))
    sampler = Sampler()
    sampler.step(gpus.read())
    nvml.inject(0, "nvmlDeviceGetTotalEnergyConsumption", NVML_ERROR_NOT_SUPPORTED, times=1)
    calls = []
    real = nvml.nvmlDeviceGetTotalEnergyConsumption

    def counting(handle):
        calls.append(handle)
        return real(handle)

    nvml.nvmlDeviceGetTotalEnergyConsumption = counting
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.method, d.energy_j) == ("power", pytest.approx(200.0))
    assert len(calls) == 1
    # the injected failure is used up: the simulated counter would answer again, but is not asked
    for _ in range(3):
        [d] = step(clock, sampler, gpus, 1.0).values()
        assert (d.method, d.energy_j) == ("power", pytest.approx(200.0))
    assert len(calls) == 1
    assert gpus.devices()[0].source == "power"


def test_transient_counter_error_falls_back_for_one_tick_only():
    clock, nvml, gpus = setup(SimGpu(0, trace=Constant(200.0)))
    sampler = Sampler()
    sampler.step(gpus.read())
    nvml.inject(0, "nvmlDeviceGetTotalEnergyConsumption", NVML_ERROR_UNKNOWN, times=1)
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert d.method == "power"
    step(clock, sampler, gpus, 1.0)  # previous reading had no counter: power again, new baseline
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert (d.method, d.energy_j) == ("counter", pytest.approx(200.0, abs=2e-3))
    assert gpus.devices()[0].source == "counter"


# --- errors ---------------------------------------------------------------------------------
def test_transient_errors_on_utilization_and_temperature_leave_fields_empty(caplog):
    caplog.set_level(logging.WARNING)
    clock, nvml, gpus = setup(SimGpu(0, trace=Constant(300.0)), slow_refresh_s=0.0)  # temperature every tick
    sampler = Sampler()
    sampler.step(gpus.read())
    nvml.inject(0, "nvmlDeviceGetUtilizationRates", NVML_ERROR_UNKNOWN, times=2)
    nvml.inject(0, "nvmlDeviceGetTemperature", NVML_ERROR_UNKNOWN, times=2)
    for _ in range(2):
        [d] = step(clock, sampler, gpus, 1.0).values()
        assert d.utilization_pct is None and d.temperature_c is None
        assert d.memory_used_bytes is not None
        assert (d.method, d.energy_j) == ("counter", pytest.approx(300.0, abs=2e-3))
    # logged, but rate-limited: one line per field, not one per tick
    logged = warnings(caplog)
    assert len(logged) == 2
    assert any("utilization" in m for m in logged) and any("temperature" in m for m in logged)
    [d] = step(clock, sampler, gpus, 1.0).values()
    assert d.utilization_pct is not None and d.temperature_c is not None


def test_gpu_lost_mid_run_disappears_and_the_others_continue(caplog):
    caplog.set_level(logging.WARNING)
    clock, nvml, gpus = setup(*(SimGpu(i, trace=Constant(100.0 * (i + 1))) for i in range(3)))
    sampler = Sampler()
    sampler.step(gpus.read())
    assert set(step(clock, sampler, gpus, 1.0)) == {"gpu0", "gpu1", "gpu2"}
    nvml.lose(1)
    for _ in range(3):
        out = step(clock, sampler, gpus, 1.0)
        assert set(out) == {"gpu0", "gpu2"}
        assert out["gpu0"].energy_j == pytest.approx(100.0, abs=2e-3)
        assert out["gpu2"].energy_j == pytest.approx(300.0, abs=2e-3)
    logged = warnings(caplog)
    assert len(logged) == 1 and "gpu1" in logged[0] and "lost" in logged[0]
    assert [d.source for d in gpus.devices()] == ["counter", "unavailable", "counter"]


def test_gpu_lost_on_a_later_call_of_the_read():
    # lost between the counter and the utilization call of the same read
    _, nvml, gpus = setup(SimGpu(0), SimGpu(1))
    nvml.inject(0, "nvmlDeviceGetUtilizationRates", NVML_ERROR_GPU_IS_LOST)
    assert [r.device for r in gpus.read()] == ["gpu1"]
    assert gpus.devices()[0].source == "unavailable"


def test_nvml_init_failure_is_a_sensor_error_with_the_nvml_cause():
    nvml = SimulatedNvml(1, clock=FakeClock())
    nvml.init_error = NVML_ERROR_LIBRARY_NOT_FOUND
    with pytest.raises(SensorError) as info:
        NvmlGpus(nvml)
    cause = info.value.__cause__
    assert isinstance(cause, pynvml.NVMLError_LibraryNotFound)
    assert cause.value == NVML_ERROR_LIBRARY_NOT_FOUND


def test_close_shuts_nvml_down():
    _, nvml, gpus = setup(SimGpu(0))
    assert nvml.initialized
    gpus.close()
    assert not nvml.initialized
    gpus.close()  # twice is harmless


def test_gpu_lost_before_start_leaves_the_others_running(caplog):
    clock = FakeClock()
    nvml = SimulatedNvml([SimGpu(0, trace=Constant(300.0)), SimGpu(1, trace=Constant(200.0))], clock=clock)
    nvml.lose(0)
    gpus = NvmlGpus(nvml, clock=clock)
    assert {d.device: d.source for d in gpus.devices()} == {"gpu0": "unavailable", "gpu1": "counter"}
    sampler = Sampler()
    sampler.step(gpus.read())
    out = step(clock, sampler, gpus, 2.0)
    assert set(out) == {"gpu1"} and out["gpu1"].energy_j == pytest.approx(400.0, abs=0.002)
    assert any("gpu0" in m and "unavailable" in m for m in warnings(caplog))


def test_memory_and_temperature_are_refreshed_every_10_s_and_carried_in_between():
    clock, nvml, gpus = setup(SimGpu(0, trace=Constant(300.0)))
    calls = {"mem": 0, "temp": 0}
    real_mem, real_temp = nvml.nvmlDeviceGetMemoryInfo, nvml.nvmlDeviceGetTemperature

    def mem(h):
        calls["mem"] += 1
        return real_mem(h)

    def temp(h, s):
        calls["temp"] += 1
        return real_temp(h, s)

    nvml.nvmlDeviceGetMemoryInfo, nvml.nvmlDeviceGetTemperature = mem, temp
    sampler = Sampler()
    sampler.step(gpus.read())
    assert calls == {"mem": 1, "temp": 1}
    nvml.gpus[0].processes = [(4242, 3 * 1024**3)]  # memory use changes
    seen = []
    for _ in range(12):
        [d] = step(clock, sampler, gpus, 1.0).values()
        seen.append(d.memory_used_bytes)
    assert calls == {"mem": 2, "temp": 2}  # the read at 10 s, not one per tick
    assert all(v is not None for v in seen)
    assert seen[0] == seen[8] != seen[9] == 3 * 1024**3  # carried until the refresh at 10 s
