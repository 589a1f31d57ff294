"""The run registry on real processes: process trees, reaped children, ends, persistence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carbond.errors import UsageError
from carbond.jobs import RunRegistry

BURN = "import time\nt = time.process_time() + {s}\nwhile time.process_time() < t: pass\n"


def _registry(tmp_path: Path) -> RunRegistry:
    return RunRegistry("h", tmp_path / "runs.json")


def test_a_child_that_lives_and_dies_between_two_ticks_is_counted(tmp_path: Path):
    reg = _registry(tmp_path)
    # a parent that starts a child burning 0.5 s of CPU, waits for it (reaps it), then idles
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.5)!r}])\n"
                               "print('done', flush=True)\ntime.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        run, _ = reg.start("j", pid=parent.pid, uid=os.getuid())
        reg.cpu_and_rss()  # baseline (the child may or may not exist yet)
        assert parent.stdout.readline().strip() == "done"  # child born, burned, reaped: no tick saw it
        cpu, rss = reg.cpu_and_rss()
        assert cpu[run.run_id] >= 0.45  # its CPU arrived through the parent's cutime
        assert rss[run.run_id] > 0
    finally:
        parent.kill()
        parent.wait()


def test_children_found_on_refresh_and_a_run_ends_when_its_processes_are_gone(tmp_path: Path):
    reg = _registry(tmp_path)
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\n"
                               "subprocess.run([sys.executable, '-c', 'import time; time.sleep(2)'])\n"])
    try:
        run, _ = reg.start("j", pid=parent.pid, uid=os.getuid())

        def members() -> int:
            reg.refresh_members()
            return len(run.members)

        from tests.conftest import wait_for

        wait_for(lambda: members() >= 2, timeout_s=30)
        assert all(reg.owner(p) == run.run_id for p in run.members)
    finally:
        parent.wait(60)
    reg.cpu_and_rss()
    ended = reg.end_vanished()
    assert [r.run_id for r in ended] == [run.run_id] and run.status == "finished"


def test_work_units_are_summed_and_metrics_keep_the_last_value(tmp_path: Path):
    reg = _registry(tmp_path)
    run, _ = reg.start("j", pid=os.getpid(), uid=os.getuid())
    reg.log_values(run.run_id, {"samples": 32, "accuracy": 0.5})
    reg.log_values(run.run_id, {"samples": 32, "accuracy": 0.9})
    assert run.units == {"samples": 64.0} and run.metrics == {"accuracy": 0.9}
    run.energy_j, run.co2_g = 100.0, 10.0
    reg.set_progress(run.run_id, 25, 100)
    assert run.projected() == (400.0, 40.0)
    with pytest.raises(UsageError, match="finite number"):
        reg.log_values(run.run_id, {"samples": float("nan")})
    with pytest.raises(UsageError, match="log name"):
        reg.log_values(run.run_id, {"bad name": 1})


def test_validation_of_names(tmp_path: Path):
    reg = _registry(tmp_path)
    with pytest.raises(UsageError, match="phase"):
        reg.start("j", phase="Training", pid=os.getpid(), uid=0)
    with pytest.raises(UsageError, match="tag name"):
        reg.start("j", tags={"host": "x"}, pid=os.getpid(), uid=0)
    with pytest.raises(UsageError, match="does not exist"):
        reg.start("j", pid=2**22 + 12345, uid=0)


def test_registry_survives_a_restart(tmp_path: Path):
    reg = _registry(tmp_path)
    run, _ = reg.start("j", project="p", phase="validation", tags={"variant": "pruned-30"}, run_id="r-1",
                       pid=os.getpid(), uid=os.getuid())
    reg.log_values("r-1", {"tokens": 5})
    run.energy_j = 42.0
    reg.save()
    again = _registry(tmp_path)
    [restored] = again.load()
    assert (restored.run_id, restored.job, restored.project, restored.phase, restored.tags) == (
        "r-1", "j", "p", "validation", {"variant": "pruned-30"})
    assert restored.energy_j == 42.0 and restored.units == {"tokens": 5.0} and restored.active
    assert os.getpid() in restored.members


class Clocks:
    """A monotonic clock (s) and a wall clock (ns) that a test moves separately: the wall one can step."""

    def __init__(self) -> None:
        self.mono, self.wall_ns = 100.0, 1_800_000_000 * 10**9

    def advance(self, s: float) -> None:
        self.mono += s
        self.wall_ns += int(s * 1e9)


def test_a_save_torn_by_a_crash_restores_the_one_before(tmp_path: Path):
    reg = _registry(tmp_path)
    run, _ = reg.start("j", run_id="r-1", pid=os.getpid(), uid=os.getuid())
    run.energy_j = 10.0
    reg.save()
    run.energy_j = 20.0
    reg.save()
    newest = max(reg._state.slots, key=lambda p: json.loads(p.read_text())["seq"])
    newest.write_bytes(newest.read_bytes()[:40])  # the power went while the last save was being written
    [restored] = _registry(tmp_path).load()
    assert restored.run_id == "r-1" and restored.energy_j == 10.0


def test_duration_follows_the_monotonic_clock_when_the_wall_clock_steps(tmp_path: Path):
    c = Clocks()
    reg = RunRegistry("h", tmp_path / "runs.json", clock_ns=lambda: c.wall_ns, mono=lambda: c.mono)
    run, _ = reg.start("j", pid=os.getpid(), uid=os.getuid())
    c.advance(5)
    c.wall_ns -= 3600 * 10**9  # NTP steps the wall clock back an hour
    assert run.duration_s(c.wall_ns, reg.mono()) == 5.0
    c.advance(2)
    c.wall_ns += 86_400 * 10**9  # and forward a day
    assert run.result("h", c.wall_ns, reg.mono())["duration_s"] == 7.0
    reg.end(run.run_id)
    c.advance(10)
    assert run.ended_ns == 1_800_000_000 * 10**9 + 7 * 10**9 + (86_400 - 3600) * 10**9  # timestamps: the wall clock
    assert run.duration_s(c.wall_ns, reg.mono()) == 7.0  # ended: fixed at the end


def test_duration_goes_on_across_a_restart_from_the_saved_elapsed_time(tmp_path: Path):
    c = Clocks()
    reg = RunRegistry("h", tmp_path / "runs.json", clock_ns=lambda: c.wall_ns, mono=lambda: c.mono)
    reg.start("j", run_id="r-1", pid=os.getpid(), uid=os.getuid())
    c.advance(30)
    c.wall_ns -= 3600 * 10**9  # a step back while the first daemon ran: not in the elapsed time
    reg.save()
    c.advance(4)  # the daemon is down for 4 s (wall clock); the new process's monotonic clock is another one
    c.mono = 7.0
    again = RunRegistry("h", tmp_path / "runs.json", clock_ns=lambda: c.wall_ns, mono=lambda: c.mono)
    [restored] = again.load()
    assert "started_mono" not in (tmp_path / "runs.json").read_text()
    assert restored.duration_s(c.wall_ns, again.mono()) == pytest.approx(34.0)
    c.mono += 6
    assert restored.duration_s(c.wall_ns, again.mono()) == pytest.approx(40.0)


def test_a_saved_run_whose_processes_died_ends_at_load(tmp_path: Path):
    reg = _registry(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    reg.start("gone", pid=p.pid, uid=os.getuid())
    reg.save()
    p.kill()
    p.wait()
    again = _registry(tmp_path)
    [restored] = again.load()
    assert restored.status == "finished" and not again.runs


def test_a_rank_failing_while_others_go_on_fails_the_run_without_leaking_a_metric(tmp_path: Path):
    reg = _registry(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run, _ = reg.start("ddp", run_id="l-1", pid=os.getpid(), uid=os.getuid())
        reg.start("ddp", run_id="l-1", pid=other.pid, uid=os.getuid())
        reg.end("l-1", status="failed", pid=os.getpid())
        assert run.active and run.metrics == {}
        reg.end("l-1", status="finished", pid=other.pid)
        assert run.status == "failed" and run.metrics == {}
    finally:
        other.kill()
        other.wait()


def test_torchrun_default_rendezvous_id_is_not_a_run_id():
    from carbond.client import run_id_from_env

    assert run_id_from_env({"TORCHELASTIC_RUN_ID": "none"}) is None
    assert run_id_from_env({"TORCHELASTIC_RUN_ID": "job-7"}) == "job-7"


def test_last_pid_moves_when_a_process_is_created_and_falls_back_to_loadavg(tmp_path: Path):
    from carbond.procs import Proc

    before = Proc().last_pid()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert before is not None and Proc().last_pid() != before
    assert Proc(str(tmp_path)).last_pid() is None  # a fixture tree without either file: unknown, always scan
    (tmp_path / "loadavg").write_text("0.00 0.01 0.05 1/100 4242\n")
    assert Proc(str(tmp_path)).last_pid() == 4242


def test_periodic_refresh_and_scan_are_skipped_while_no_process_was_created(tmp_path: Path):
    from carbond.procs import Proc

    class Counting(Proc):
        def __init__(self) -> None:
            super().__init__()
            self.generation, self.walks, self.listings = 1, 0, 0

        def last_pid(self) -> int | None:
            return self.generation

        def descendants(self, roots):
            self.walks += 1
            return super().descendants(roots)

        def pids(self):
            self.listings += 1
            return super().pids()

    proc = Counting()
    reg = RunRegistry("h", tmp_path / "runs.json", proc=proc)
    reg.start("j", pid=os.getpid(), uid=os.getuid())
    walks = proc.walks
    reg.refresh_members(if_new_processes=True)
    assert proc.walks == walks  # nothing was created since start() walked
    reg.refresh_members()
    assert proc.walks == walks + 1  # asked for: always walks
    proc.generation = 2
    reg.refresh_members(if_new_processes=True)
    assert proc.walks == walks + 2
    seen: dict[int, int] = {}
    reg.discover(seen, os.getpid())
    reg.discover(seen, os.getpid())
    assert proc.listings == 1
    proc.generation = 3
    reg.discover(seen, os.getpid())
    assert proc.listings == 2
