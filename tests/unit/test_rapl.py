"""RAPL discovery on a fixture powercap tree, and the CPU and RAM sensors that use it."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes.powercap import MAX_ENERGY_RANGE_UJ, PowercapTree, intel_two_socket

from carbond.sampler import Sampler
from carbond.sensors.cpu import CpuSensor
from carbond.sensors.memory import MemorySensor
from carbond.sensors.rapl import Rapl

EPYC = "AMD EPYC 7763 64-Core Processor"  # 280 W per 128 threads in the table


class FakeClock:
    def __init__(self, t: float = 5000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class FakePsutil:
    """The three psutil calls the sensors make."""

    def __init__(self, logical: int = 256, util_pct: float = 50.0, total_bytes: float = 64e9) -> None:
        self.logical = logical
        self.util_pct = util_pct
        self.total_bytes = total_bytes
        self.cpu_percent_calls = 0

    def cpu_count(self, logical: bool = True) -> int:
        return self.logical

    def cpu_percent(self, interval: float | None = None) -> float:
        assert interval is None, "a blocking cpu_percent(interval=...) call stalls the sampler"
        self.cpu_percent_calls += 1
        return self.util_pct

    def virtual_memory(self) -> SimpleNamespace:
        return SimpleNamespace(total=self.total_bytes, used=self.total_bytes / 4, percent=25.0)


def rapl_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "CAP_DAC_READ_SEARCH" in r.getMessage()]


# --- discovery ----------------------------------------------------------------------------
def test_discovers_packages_and_dram_per_package(tmp_path: Path):
    tree = intel_two_socket(tmp_path)
    rapl = Rapl.discover(tree.root)
    assert [z.label for z in rapl.packages] == ["package-0", "package-1"]
    assert [z.label for z in rapl.drams] == ["package-0/dram", "package-1/dram"]
    assert [z.path.name for z in rapl.drams] == ["intel-rapl:0:1", "intel-rapl:1:1"]


def test_core_psys_and_mmio_zones_are_not_counted(tmp_path: Path):
    tree = intel_two_socket(tmp_path)
    rapl = Rapl.discover(tree.root)
    counted = {z.path.name for z in (*rapl.packages, *rapl.drams)}
    assert counted == {"intel-rapl:0", "intel-rapl:1", "intel-rapl:0:1", "intel-rapl:1:1"}
    # psys already contains package and DRAM: it is left out, and says why
    assert any(i.startswith("intel-rapl:2") and "psys" in i for i in rapl.ignored)
    # the MMIO interface mirrors package-0 on some Intel parts; adding it would double-count
    assert all("mmio" not in z.path.name for z in rapl.packages)


def test_wrap_point_is_read_from_max_energy_range(tmp_path: Path):
    tree = intel_two_socket(tmp_path)
    rapl = Rapl.discover(tree.root)
    assert rapl.packages[0].wrap_j == pytest.approx(MAX_ENERGY_RANGE_UJ / 1e6)
    assert rapl.drams[0].wrap_j == pytest.approx(65_712.999613)


def test_missing_or_zero_wrap_point_means_none(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", max_energy_range_uj=None)
    tree.add_zone("intel-rapl:1", "package-1", max_energy_range_uj=0)
    rapl = Rapl.discover(tree.root)
    assert [z.wrap_j for z in rapl.packages] == [None, None]


def test_mirrored_zones_with_the_same_name_are_counted_once(tmp_path: Path):
    # Multi-die parts can expose the same package counter in several zones.
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    tree.add_zone("intel-rapl:0:0", "dram")
    tree.add_zone("intel-rapl:1", "package-0", energy_uj=1_000_000)
    tree.add_zone("intel-rapl:1:0", "dram")
    rapl = Rapl.discover(tree.root)
    assert [z.path.name for z in rapl.packages] == ["intel-rapl:0"]
    assert [z.path.name for z in rapl.drams] == ["intel-rapl:0:0"]
    assert sorted(i.split(" ")[0] for i in rapl.ignored) == ["intel-rapl:1", "intel-rapl:1:0"]
    assert all("mirror" in i for i in rapl.ignored)


def test_amd_rapl_zone_names_are_found(tmp_path: Path):
    # Linux exposes AMD package energy under intel-rapl names; carbond also accepts amd-rapl.
    tree = PowercapTree(tmp_path)
    tree.add_zone("amd-rapl:0", "package-0", energy_uj=7_000_000)
    tree.add_zone("amd-rapl:0:0", "dram")
    rapl = Rapl.discover(tree.root)
    assert [z.label for z in rapl.packages] == ["package-0"]
    assert [z.label for z in rapl.drams] == ["package-0/dram"]
    assert rapl.packages[0].read_j() == pytest.approx(7.0)


def test_amd_and_intel_views_of_one_package_are_deduplicated(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("amd-rapl:0", "package-0")
    rapl = Rapl.discover(tree.root)
    assert len(rapl.packages) == 1
    assert len(rapl.ignored) == 1


def test_numeric_zone_order(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    for i in (10, 2, 0, 1):
        tree.add_zone(f"intel-rapl:{i}", f"package-{i}")
    rapl = Rapl.discover(tree.root)
    assert [z.label for z in rapl.packages] == ["package-0", "package-1", "package-2", "package-10"]


def test_no_powercap_tree_finds_nothing(tmp_path: Path):
    rapl = Rapl.discover(tmp_path / "does-not-exist")
    assert (rapl.packages, rapl.drams) == ((), ())


def test_read_converts_microjoules(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=123_456_789)
    assert Rapl.discover(tree.root).packages[0].read_j() == pytest.approx(123.456789)


# --- CPU sensor -----------------------------------------------------------------------------
def cpu(tree: PowercapTree, clock: FakeClock, psutil: FakePsutil | None = None) -> CpuSensor:
    return CpuSensor(psutil or FakePsutil(), Rapl.discover(tree.root), model=EPYC, clock=clock)


def test_cpu_uses_rapl_counters(tmp_path: Path):
    tree = intel_two_socket(tmp_path)
    clock, sampler = FakeClock(), Sampler()
    sensor = cpu(tree, clock)
    assert sensor.uses_rapl
    assert [d.source for d in sensor.devices()] == ["counter", "counter"]
    assert sampler.step(sensor.read()) == []  # the first tick only sets the baseline
    tree.consume_j("intel-rapl:0", 150.0)
    tree.consume_j("intel-rapl:1", 90.0)
    clock.advance(1.0)
    out = {d.device: d for d in sampler.step(sensor.read())}
    assert set(out) == {"cpu0", "cpu1"}
    assert out["cpu0"].source == out["cpu0"].method == "counter"
    assert out["cpu0"].energy_j == pytest.approx(150.0)
    assert out["cpu1"].energy_j == pytest.approx(90.0)
    assert out["cpu0"].interval_s == pytest.approx(1.0)


def test_cpu_tdp_is_split_between_packages(tmp_path: Path):
    tree = intel_two_socket(tmp_path)
    readings = cpu(tree, FakeClock(), FakePsutil(logical=256)).read()
    # EPYC 7763 seen with 256 threads: 2 × 280 W, 280 W per package
    assert [r.max_w for r in readings] == pytest.approx([280.0, 280.0])
    assert [r.counter_wrap_j for r in readings] == pytest.approx([MAX_ENERGY_RANGE_UJ / 1e6] * 2)


def test_cpu_counter_wraparound_across_ticks(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=MAX_ENERGY_RANGE_UJ - 40_000_000)  # 40 J before the wrap
    clock, sampler = FakeClock(), Sampler()
    sensor = cpu(tree, clock)
    sampler.step(sensor.read())
    tree.consume_j("intel-rapl:0", 100.0)
    assert tree.energy_uj("intel-rapl:0") == 60_000_000  # it did roll over
    clock.advance(1.0)
    [d] = sampler.step(sensor.read())
    assert d.method == "counter" and d.counter_event == "wrap"
    assert d.energy_j == pytest.approx(100.0, abs=1e-6)
    tree.consume_j("intel-rapl:0", 80.0)
    clock.advance(1.0)
    [d] = sampler.step(sensor.read())
    assert (d.method, d.counter_event) == ("counter", "")
    assert d.energy_j == pytest.approx(80.0, abs=1e-6)


def test_cpu_counter_reset_books_the_model_not_negative_energy(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=100_000_000_000)  # 100 kJ
    clock, sampler = FakeClock(), Sampler()
    sensor = cpu(tree, clock, FakePsutil(logical=128, util_pct=50.0))
    sampler.step(sensor.read())
    tree.set_energy_uj("intel-rapl:0", 2_000_000)  # the module reloaded: back to 2 J
    clock.advance(2.0)
    [d] = sampler.step(sensor.read())
    assert d.counter_event == "reset" and d.method == "model"
    # model at 50 %: idle 0.3 × 280 = 84 W, max 280 W → 182 W for 2 s
    assert d.energy_j == pytest.approx(364.0)
    tree.consume_j("intel-rapl:0", 75.0)
    clock.advance(1.0)
    [d] = sampler.step(sensor.read())
    assert (d.method, d.energy_j) == ("counter", pytest.approx(75.0))


def test_cpu_garbage_counter_falls_back_for_that_tick(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    clock, sampler = FakeClock(), Sampler()
    sensor = cpu(tree, clock, FakePsutil(logical=128, util_pct=0.0))
    sampler.step(sensor.read())
    tree.write_raw("intel-rapl:0", "")  # a torn read
    clock.advance(1.0)
    [d] = sampler.step(sensor.read())
    assert d.method == "model" and d.energy_j == pytest.approx(84.0)  # idle: 0.3 × 280 W
    assert sensor.uses_rapl
    tree.set_energy_uj("intel-rapl:0", 5_000_000)
    clock.advance(1.0)
    sampler.step(sensor.read())  # no counter on the previous reading: baseline again
    tree.consume_j("intel-rapl:0", 33.0)
    clock.advance(1.0)
    [d] = sampler.step(sensor.read())
    assert (d.method, d.energy_j) == ("counter", pytest.approx(33.0))


def test_permission_denied_at_start_falls_back_with_one_warning(tmp_path: Path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    tree = intel_two_socket(tmp_path)
    tree.deny("intel-rapl:0", monkeypatch)
    tree.deny("intel-rapl:1", monkeypatch)
    tree.deny("intel-rapl:0:1", monkeypatch)
    tree.deny("intel-rapl:1:1", monkeypatch)
    with pytest.raises(PermissionError):  # the fixture fails exactly like sysfs for a non-root reader
        (tree.root / "intel-rapl:0" / "energy_uj").read_text()
    clock, sampler = FakeClock(), Sampler()
    psutil = FakePsutil(logical=128, util_pct=100.0)
    rapl = Rapl.discover(tree.root)
    sensor = CpuSensor(psutil, rapl, model=EPYC, clock=clock)
    memory = MemorySensor(psutil, rapl, clock=clock)  # built from the same zones, as the daemon does
    assert not sensor.uses_rapl
    assert [(d.device, d.source) for d in sensor.devices()] == [("cpu0", "model")]
    assert [(d.device, d.source) for d in memory.devices()] == [("ram", "model")]
    for _ in range(5):
        out = sampler.step([*sensor.read(), *memory.read()])
        clock.advance(1.0)
    by_device = {d.device: d for d in out}
    assert by_device["cpu0"].method == "model"
    assert by_device["cpu0"].energy_j == pytest.approx(280.0)  # 100 % of a 280 W TDP for 1 s
    warnings = rapl_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "root" in warnings[0].getMessage()


def test_permission_denied_mid_run_falls_back_with_one_warning(tmp_path: Path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    tree = intel_two_socket(tmp_path)
    clock, sampler = FakeClock(), Sampler()
    sensor = cpu(tree, clock, FakePsutil(logical=256, util_pct=0.0))
    sampler.step(sensor.read())
    assert sensor.uses_rapl and rapl_warnings(caplog) == []
    tree.deny("intel-rapl:0", monkeypatch)
    for _ in range(4):
        clock.advance(1.0)
        out = sampler.step(sensor.read())
        assert [d.device for d in out] == ["cpu0"]
        # the whole machine on the model now: idle 0.3 × 560 W
        assert out[0].method == "model" and out[0].energy_j == pytest.approx(168.0)
    assert not sensor.uses_rapl
    assert len(rapl_warnings(caplog)) == 1


# --- memory sensor --------------------------------------------------------------------------
def test_memory_uses_dram_counters(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram", energy_uj=9_000_000)
    clock, sampler = FakeClock(), Sampler()
    memory = MemorySensor(FakePsutil(total_bytes=64e9), Rapl.discover(tree.root), clock=clock)
    assert [(d.device, d.source) for d in memory.devices()] == [("ram", "counter")]
    sampler.step(memory.read())
    tree.consume_j("intel-rapl:0:0", 12.5)
    clock.advance(1.0)
    [d] = sampler.step(memory.read())
    assert (d.device, d.kind, d.method, d.energy_j) == ("ram", "ram", "counter", pytest.approx(12.5))


def test_memory_with_dram_per_package(tmp_path: Path):
    tree = intel_two_socket(tmp_path)
    clock, sampler = FakeClock(), Sampler()
    memory = MemorySensor(FakePsutil(), Rapl.discover(tree.root), clock=clock)
    sampler.step(memory.read())
    tree.consume_j("intel-rapl:0:1", 4.0)
    tree.consume_j("intel-rapl:1:1", 6.0)
    clock.advance(1.0)
    out = {d.device: d.energy_j for d in sampler.step(memory.read())}
    assert out == {"ram0": pytest.approx(4.0), "ram1": pytest.approx(6.0)}


def test_memory_model_without_dram_zones(tmp_path: Path):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")  # a client part: no dram zone
    clock, sampler = FakeClock(), Sampler()
    memory = MemorySensor(FakePsutil(total_bytes=64e9), Rapl.discover(tree.root), clock=clock)
    sampler.step(memory.read())
    clock.advance(2.0)
    [d] = sampler.step(memory.read())
    # 0.375 W/GB × 64 GB = 24 W, for 2 s
    assert (d.device, d.method) == ("ram", "model")
    assert d.energy_j == pytest.approx(48.0)
    assert d.memory_used_bytes == pytest.approx(16e9)


def test_memory_model_without_rapl_at_all():
    clock, sampler = FakeClock(), Sampler()
    memory = MemorySensor(FakePsutil(total_bytes=8e9), None, w_per_gb=0.5, clock=clock)
    sampler.step(memory.read())
    clock.advance(10.0)
    [d] = sampler.step(memory.read())
    assert d.energy_j == pytest.approx(40.0)  # 0.5 W/GB × 8 GB × 10 s


def test_memory_permission_denied_mid_run_falls_back_to_model(tmp_path: Path, monkeypatch):
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    clock, sampler = FakeClock(), Sampler()
    memory = MemorySensor(FakePsutil(total_bytes=64e9), Rapl.discover(tree.root), clock=clock)
    sampler.step(memory.read())
    tree.deny("intel-rapl:0:0", monkeypatch)
    clock.advance(1.0)
    [d] = sampler.step(memory.read())
    assert (d.device, d.method, d.energy_j) == ("ram", "model", pytest.approx(24.0))
    assert memory.devices()[0].source == "model"


def test_unreadable_counter_at_start_warns_once_without_the_permission_hint(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING)
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    tree.write_raw("intel-rapl:0", "not a number\n")
    rapl = Rapl.discover(tree.root)
    psutil = FakePsutil()
    sensor = CpuSensor(psutil, rapl, model=EPYC, clock=FakeClock())
    MemorySensor(psutil, rapl, clock=FakeClock())
    assert not sensor.uses_rapl
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 1 and "cannot be read" in logged[0]
    assert rapl_warnings(caplog) == []


def test_cpu_without_rapl_is_the_tdp_model(tmp_path: Path):
    clock, sampler = FakeClock(), Sampler()
    psutil = FakePsutil(logical=8, util_pct=50.0)
    sensor = CpuSensor(psutil, Rapl.discover(tmp_path), model="Unknown CPU", clock=clock)
    [info] = sensor.devices()
    assert (info.device, info.source) == ("cpu0", "model")
    assert "40 W" in info.detail  # default 5 W × 8 logical CPUs
    sampler.step(sensor.read())
    clock.advance(1.0)
    [d] = sampler.step(sensor.read())
    # idle 0.3 × 40 = 12 W, max 40 W, at 50 %: 26 W
    assert (d.method, d.energy_j) == ("model", pytest.approx(26.0))
    assert psutil.cpu_percent_calls == 3  # primed once at start, then once per read


def test_configured_tdp_overrides_the_table(tmp_path: Path):
    sensor = CpuSensor(FakePsutil(logical=128), None, tdp_w=100.0, model=EPYC, clock=FakeClock())
    [r] = sensor.read()
    assert (r.max_w, r.idle_w) == (100.0, 30.0)


def test_unknown_cpu_counter_above_the_modelled_tdp_is_believed(tmp_path: Path):
    # an unknown 8-thread desktop part is modelled at 8 × 5 W = 40 W; its package really draws 120 W
    tree = PowercapTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    clock, sampler = FakeClock(), Sampler()
    sensor = CpuSensor(FakePsutil(logical=8), Rapl.discover(tree.root), model="Some Future CPU", clock=clock)
    assert sensor.tdp_w == 40.0
    sampler.step(sensor.read())
    tree.consume_j("intel-rapl:0", 120.0)
    clock.advance(1.0)
    (out,) = sampler.step(sensor.read())
    assert out.method == "counter" and out.energy_j == pytest.approx(120.0)
