"""NVML faults mid-run and wall-clock steps, on the daemon's own tick path.

The in-process tests drive a :class:`carbond.daemon.Daemon` tick by tick with an injected
monotonic clock and wall clock, the simulated NVML (``carbond/sensors/simnvml.py``, the same
object ``--simulate-gpus`` uses) behind the real :class:`NvmlGpus`, and a real SQLite store:
every figure is exact. One test runs the real ``carbond run --simulate-gpus 4`` with the
simulated NVML's fault controls driven from a thread inside that process (the CLI has no hook
for injecting NVML faults; see docs/reliability.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from carbond.config import load_settings
from carbond.daemon import Daemon
from carbond.sensors.base import DeviceInfo, Reading
from carbond.sensors.gpu import NvmlGpus
from carbond.sensors.simnvml import NVML_ERROR_UNKNOWN, SimulatedNvml
from carbond.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.reliability.harness import LiveDaemon

S = 1_000_000_000
T0_NS = 1_790_000_000 * S  # 2026-09-21T...Z, any fixed instant


class Clock:
    """Monotonic seconds, moved by hand."""

    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


class Wall:
    """The wall clock: the monotonic clock plus an offset a test can step (NTP, a VM resume, a bad RTC)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.offset_ns = T0_NS - int(clock.t * S)

    def __call__(self) -> int:
        return int(self.clock.t * S) + self.offset_ns


class SteadyCpu:
    """A CPU that draws 100 W by measured power; ``fail_next`` makes its next read raise (a whole-sensor failure)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fail_next = False

    def read(self) -> list[Reading]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected: the CPU sensor failed")
        return [Reading("cpu0", "cpu", "steady", self.clock(), idle_w=30.0, max_w=150.0, power_w=100.0, utilization_pct=50.0)]

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo("cpu0", "cpu", "steady", "power", "test sensor")]

    def close(self) -> None:
        pass


def make_daemon(tmp: Path, sensors: list, clock: Clock, wall: Wall) -> Daemon:
    settings = load_settings(env={"HOME": str(tmp)}, flags={
        "sensors.nvml": False, "daemon.socket": str(tmp / "s.sock"), "store.url": f"sqlite://{tmp}/c.db",
        "daemon.host": "reliability", "region.zone": "DE"}).settings
    return Daemon(settings, sensors, SqliteStore(tmp / "c.db"), journal_dir=tmp / "journal", clock=clock, wall_ns=wall)


def read_back(daemon: Daemon) -> tuple[list, dict[str, list]]:
    assert daemon.flush()
    hosts = list(daemon.store.scan("host"))
    devices: dict[str, list] = defaultdict(list)
    for p in daemon.store.scan("device"):
        devices[p.tags["device"]].append(p)
    return hosts, devices


def close(daemon: Daemon) -> None:
    daemon.journal.close()
    daemon.store.close()


def test_nvml_faults_mid_run_in_process(tmp_path):
    """Injected, on 4 simulated H100s over 40 ticks of 1 s: gpu2's energy counter raises NVML UNKNOWN on
    ticks 8-9; gpu1 is lost (GPU_IS_LOST) from tick 12; gpu3's counter restarts from 0 at tick 16 (a
    driver reload); gpu0's power and utilization reads fail on ticks 20-24; the CPU sensor raises on tick
    30. Asserted exactly: 40 host points, each the sum of its devices; gpu0, gpu2, gpu3 have 40 points and
    gpu1 11 (then nothing, and ``devices`` says it is unavailable); every GPU interval's energy equals the
    simulated trace's exact integral — to 1 mJ by the counter, to 0.5% where the counter was missing or
    reset and measured power stood in (source ``power`` on exactly ticks 8-10 for gpu2 and 16 for gpu3) —
    never negative or absurd; the CPU loses exactly the failing interval and the re-baseline after it
    (38 points), counted once in sensor_errors."""
    clock = Clock()
    wall = Wall(clock)
    sim = SimulatedNvml(4, clock=clock)
    gpus = NvmlGpus(sim, clock=clock)
    cpu = SteadyCpu(clock)
    daemon = make_daemon(tmp_path, [cpu, gpus], clock, wall)
    faults = {
        8: lambda: sim.inject(2, "nvmlDeviceGetTotalEnergyConsumption", NVML_ERROR_UNKNOWN, times=2),
        12: lambda: sim.lose(1),
        16: lambda: sim.reset_counter(3),
        20: lambda: sim.inject(0, "nvmlDeviceGetPowerUsage", NVML_ERROR_UNKNOWN, times=5),
        22: lambda: sim.inject(0, "nvmlDeviceGetUtilizationRates", NVML_ERROR_UNKNOWN, times=3),
        30: lambda: setattr(cpu, "fail_next", True),
    }
    tick_wall: dict[int, int] = {}
    try:
        daemon.tick()  # the baseline
        for i in range(1, 41):
            clock.t += 1.0
            if i in faults:
                faults[i]()
            daemon.tick()
            tick_wall[wall()] = i
        hosts, devices = read_back(daemon)
        listed = {d["device"]: d["source"] for d in daemon.device_list()}
    finally:
        close(daemon)
    assert len(hosts) == 40 and [tick_wall[h.time_ns] for h in hosts] == list(range(1, 41))
    energy_at: dict[int, float] = defaultdict(float)
    for points in devices.values():
        for p in points:
            energy_at[p.time_ns] += p.fields["energy_j"]
    for h in hosts:
        assert h.fields["energy_j"] == pytest.approx(energy_at[h.time_ns], rel=1e-12)
    counts = {name: len(points) for name, points in devices.items()}
    assert counts == {"cpu0": 38, "gpu0": 40, "gpu1": 11, "gpu2": 40, "gpu3": 40}
    assert [tick_wall[p.time_ns] for p in devices["gpu1"]] == list(range(1, 12))
    assert listed["gpu1"] == "unavailable"
    assert {tick_wall[p.time_ns] for p in devices["cpu0"]} == set(range(1, 41)) - {30, 31}
    assert daemon.stats["sensor_errors"] == 1
    for name in ("gpu0", "gpu1", "gpu2", "gpu3"):
        trace = sim.gpus[int(name[3:])].trace
        for p in devices[name]:
            t1 = clock.t - (40 - tick_wall[p.time_ns])
            exact = trace.energy_j(t1 - 1.0, t1)
            assert p.fields["energy_j"] >= 0
            if p.tags["source"] == "counter":
                assert p.fields["energy_j"] == pytest.approx(exact, abs=2e-3)
            else:
                assert p.fields["energy_j"] == pytest.approx(exact, rel=5e-3)
    power_ticks = {name: sorted(tick_wall[p.time_ns] for p in pts if p.tags["source"] != "counter")
                   for name, pts in devices.items() if name.startswith("gpu")}
    assert power_ticks == {"gpu0": [], "gpu1": [], "gpu2": [8, 9, 10], "gpu3": [16]}
    assert {tick_wall[p.time_ns] for p in devices["gpu0"] if "utilization_pct" not in p.fields} == {22, 23, 24}


LAUNCHER = r"""
import sys, threading, time
import carbond.sensors.simnvml as simnvml
from carbond.cli import main

_init = simnvml.SimulatedNvml.__init__

def _with_faults(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    def faults():
        time.sleep(2.5)
        self.lose(1)
        self.inject(0, "nvmlDeviceGetTotalEnergyConsumption", simnvml.NVML_ERROR_UNKNOWN, times=3)
        time.sleep(0.6)
        self.reset_counter(2)
        self.inject(3, "nvmlDeviceGetUtilizationRates", simnvml.NVML_ERROR_UNKNOWN, times=None)
        print("FAULTS INJECTED", file=sys.stderr, flush=True)
    threading.Thread(target=faults, name="fault-injector", daemon=True).start()

simnvml.SimulatedNvml.__init__ = _with_faults
sys.exit(main(sys.argv[1:]))
"""


def test_nvml_faults_in_a_real_daemon_process(carbond):
    """Injected into a real ``carbond run --simulate-gpus 4`` (SQLite store, 0.25 s ticks) from a thread in
    the same process, 2.5 s after start: gpu1 lost, gpu0's counter failing 3 reads, then gpu2's counter reset
    and gpu3's utilization failing for good. Asserted from the store after a clean stop: exactly one host
    point per measured tick; cpu0, ram, gpu0, gpu2 and gpu3 a point at every one of those times; gpu1 at
    exactly the first ones and none after (``carbond devices`` over the socket: unavailable); no negative
    energy and no GPU interval above its 700 W limit x 2."""
    d = LiveDaemon(carbond, carbond.store, gpus=4)
    d_cmd = [sys.executable, "-c", LAUNCHER, *d.args]
    log = carbond.tmp / "daemon.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(d_cmd, env=carbond.env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    d.proc, d._log = proc, log
    try:
        d.wait_ticks(2)
        wait_for(lambda: "FAULTS INJECTED" in d.stderr(), timeout_s=60)
        d.wait_ticks(d.ticks() + 8)
        devices = {x["device"]: x["source"] for x in _devices(carbond)}
        stopped = d.stop()
    finally:
        d.close()
    assert stopped.returncode == 0, stopped.stderr
    assert devices["gpu1"] == "unavailable"
    assert "gpu1" in stopped.stderr and "is lost" in stopped.stderr
    hosts = carbond.export("host")
    times = [h["time_ns"] for h in hosts]
    assert len(times) == stopped.ticks - 1 and times == sorted(set(times))
    per: dict[str, list[dict]] = defaultdict(list)
    for p in carbond.export("device"):
        per[p["tags"]["device"]].append(p)
    for name in ("cpu0", "ram", "gpu0", "gpu2", "gpu3"):
        assert [p["time_ns"] for p in per[name]] == times, name
    lost = [p["time_ns"] for p in per["gpu1"]]
    assert 0 < len(lost) < len(times) and lost == times[:len(lost)]
    interval = {h["time_ns"]: h["fields"]["interval_s"] for h in hosts}
    for points in per.values():
        for p in points:
            assert 0 <= p["fields"]["energy_j"] <= 700 * 2 * interval[p["time_ns"]] + 5
    assert all("utilization_pct" not in p["fields"] for p in per["gpu3"][-4:])
    assert Counter(h["tags"]["host"] for h in hosts).most_common(1)[0][1] == len(hosts)


def _devices(carbond) -> list[dict]:
    import json

    return json.loads(carbond("devices", "--json", "--socket", carbond.socket, check=True).stdout)["devices"]


# --- wall clock -------------------------------------------------------------------------------------
def test_wall_clock_steps_timestamps_follow_the_wall_energy_follows_the_monotonic_clock(tmp_path):
    """Injected: over 30 ticks of 1 s monotonic time, the wall clock steps back 1 h 0.37 s before tick 10
    and forward 1 day before tick 20. Defined behaviour, asserted exactly: every tick makes its host point
    (30, none merged or lost), stamped with the wall clock at that tick (so ticks 10-19 sort before ticks
    1-9 in the store: timestamps follow the wall clock, they are not forced monotonic); every interval is
    the monotonic 1.0 s and its energy the simulated GPUs' exact 1 s integral plus 100 J of CPU — a step
    of the wall clock books no negative and no absurd energy (not -1 h, not 1 day) and no extra embodied
    carbon; self-metrics keep their 10 s monotonic cadence (ticks 0, 10, 20, 30)."""
    clock = Clock()
    wall = Wall(clock)
    sim = SimulatedNvml(2, clock=clock)
    daemon = make_daemon(tmp_path, [SteadyCpu(clock), NvmlGpus(sim, clock=clock)], clock, wall)
    stamped: dict[int, int] = {}
    try:
        daemon.tick()
        for i in range(1, 31):
            clock.t += 1.0
            if i == 10:
                wall.offset_ns -= 3600 * S + 370_000_000
            if i == 20:
                wall.offset_ns += 86_400 * S
            daemon.tick()
            stamped[i] = wall()
        hosts, _ = read_back(daemon)
        selfs = list(daemon.store.scan("carbond"))
    finally:
        close(daemon)
    assert len(hosts) == 30
    by_time = {h.time_ns: h for h in hosts}
    assert sorted(by_time) == sorted(stamped.values())
    order = [next(i for i, t in stamped.items() if t == h.time_ns) for h in hosts]
    assert order == [*range(10, 20), *range(1, 10), *range(20, 31)]
    embodied = {round(h.fields["embodied_g"], 12) for h in hosts}
    assert len(embodied) == 1
    for i, t in stamped.items():
        h = by_time[t].fields
        t1 = clock.t - (30 - i)
        exact = 100.0 + sum(g.trace.energy_j(t1 - 1.0, t1) for g in sim.gpus)
        assert h["interval_s"] == 1.0
        assert h["energy_j"] == pytest.approx(exact, abs=5e-3)
    assert sorted(s.time_ns for s in selfs) == sorted([T0_NS, stamped[10], stamped[20], stamped[30]])


def test_wall_clock_step_back_during_a_run_keeps_its_duration_positive(tmp_path):
    """Injected: a run registered at tick 2 (a real child process), the wall clock stepped back 1 h before
    tick 10, the run ended at tick 15. Asserted: its final run point's duration_s is the 13 s that passed
    (monotonic), not 13 s − 1 h."""
    clock = Clock()
    wall = Wall(clock)
    daemon = make_daemon(tmp_path, [SteadyCpu(clock)], clock, wall)
    daemon.runs._clock_ns = wall  # the registry reads the same wall clock as the daemon (time.time_ns in production)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        daemon.tick()
        run_id = ""
        for i in range(1, 16):
            clock.t += 1.0
            if i == 2:
                run_id = daemon.runs.start("clock-step", pid=child.pid, uid=os.getuid())[0].run_id
            if i == 10:
                wall.offset_ns -= 3600 * S
            daemon.tick()
        run = daemon.runs.end(run_id)
        daemon._run_point_now(run)
        read_back(daemon)
        finals = [p for p in daemon.store.scan("run") if p.tags["status"] == "finished"]
    finally:
        child.kill()
        child.wait()
        close(daemon)
    assert len(finals) == 1
    assert finals[0].fields["duration_s"] == pytest.approx(13.0, abs=0.01)
