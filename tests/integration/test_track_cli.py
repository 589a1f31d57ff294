"""The real ``carbond track`` CLI: with a fake daemon on a real socket, and with no daemon at all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.fakes.daemon import FakeDaemon

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: sum(i * i for i in range(5000))\n"
INNER = textwrap.dedent("""\
    import carbond
    with carbond.track("inner") as run:
        run.log(samples=4, loss=0.5)
    print(run.run_id, run.result.measured_by)
""")


@pytest.fixture
def fake(carbond):
    daemon = FakeDaemon(carbond.socket)  # the default socket of the carbond fixture's environment
    yield daemon
    daemon.close()


@pytest.fixture
def local(carbond):
    """No daemon: in-process measurement into the fixture's SQLite store, ticking every 0.1 s."""
    carbond.env.update({"CARBOND_STORE": carbond.store, "CARBOND_INTERVAL": "0.1"})
    return carbond


def _popen(carbond, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "carbond", *args], env=carbond.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_exit_code_tags_and_run_end_through_the_daemon(carbond, fake):
    proc = carbond("track", "--job", "bert-ft", "--project", "p", "--phase", "training", "--tag", "variant=a",
                   "--", "sh", "-c", "exit 3")
    assert proc.returncode == 3, proc.stderr
    (start,) = fake.ops_seen("run.start")
    assert {k: v for k, v in start.items() if k != "_peer"} == {
        "job": "bert-ft", "project": "p", "phase": "training", "tags": {"variant": "a"}}
    (end,) = fake.ops_seen("run.end")
    track_pid = start["_peer"][0]  # the track process is the run's root: the daemon follows its descendants
    assert end == {"run": "bert-ft-1", "status": "failed", "exit_code": 3, "pid": track_pid, "_peer": end["_peer"]}
    assert "carbond: run bert-ft-1 (bert-ft) failed, exit 3" in proc.stderr and "[daemon]" in proc.stderr


def test_the_command_and_its_carbond_track_join_the_run(carbond, fake):
    proc = carbond("track", "--job", "j", "--phase", "inference", "--quiet", "--", "sh", "-c",
                   'echo "$CARBOND_RUN|$CARBOND_JOB|${CARBOND_PROJECT-unset}|$CARBOND_PHASE" && '
                   f'exec {sys.executable} -c \'{INNER}\'')
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "j-1|j|unset|inference"
    assert second == "j-1 daemon"
    starts = fake.ops_seen("run.start")
    assert [s.get("run") for s in starts] == [None, "j-1"]  # the inner track() joined the outer run
    assert fake.runs["j-1"]["units"] == {"samples": 4.0} and fake.runs["j-1"]["status"] == "finished"
    assert len(fake.ops_seen("run.end")) == 2 and proc.stderr == ""


def test_signal_death_exits_128_plus_n(carbond, fake):
    proc = carbond("track", "--job", "j", "--", "sh", "-c", "kill -TERM $$")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    (end,) = fake.ops_seen("run.end")
    assert end["status"] == "failed" and end["exit_code"] == 143


@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 128 + signal.SIGINT),
                                               (signal.SIGUSR1, 7)])
def test_signals_to_track_are_forwarded_to_the_command(carbond, fake, sig: signal.Signals, expected: int):
    child = ("import os, signal, sys\n"
             "signal.signal(signal.SIGUSR1, lambda *a: os._exit(7))\n"
             "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
             "print('ready', flush=True)\n"
             "while True: signal.pause()\n")
    track = _popen(carbond, "track", "--job", "sig", "--", sys.executable, "-c", child)
    try:
        assert track.stdout.readline() == "ready\n"  # the command runs: track is waiting on it
        track.send_signal(sig)
        _, err = track.communicate(timeout=60)
    finally:
        if track.poll() is None:
            track.kill()
    assert track.returncode == expected, err
    assert fake.ops_seen("run.end")[0]["exit_code"] == expected


def test_usage_errors_exit_2(carbond):
    for args, message in [
        (("track", "--job", "j"), "no command given"),
        (("track", "--job", "j", "--"), "no command given"),
        (("track", "--job", "j", "--tag", "novalue", "--", "true"), "--tag 'novalue'"),
        (("track", "--job", "j", "--tag", "host=x", "--", "true"), "--tag 'host=x'"),
        (("track", "--job", "j", "--phase", "Bad Phase", "--", "true"), "--phase 'Bad Phase'"),
        (("track", "--", "true"), "--job"),
    ]:
        proc = carbond(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


def test_command_not_found_exits_127(carbond, fake):
    proc = carbond("track", "--job", "j", "--", "/nonexistent/command")
    assert proc.returncode == 127
    assert "cannot run '/nonexistent/command'" in proc.stderr
    assert fake.ops_seen("run.end")[0]["exit_code"] == 127


def test_without_a_daemon_the_command_is_measured_in_process(local):
    proc = local("track", "--job", "local", "--project", "p", "--", sys.executable, "-c", BUSY.format(s=1.5))
    assert proc.returncode == 0, proc.stderr
    assert "[in-process]" in proc.stderr and "finished, exit 0" in proc.stderr
    (run,) = local.export("run")
    assert run["tags"]["status"] == "finished" and run["tags"]["project"] == "p" and run["tags"]["job"] == "local"
    assert run["fields"]["energy_j"] > 0 and run["fields"]["in_process"] == 1.0 and run["fields"]["duration_s"] >= 1.5
    jobs = local.export("job")
    assert len(jobs) >= 5 and {j["tags"]["run"] for j in jobs} == {run["tags"]["run"]}
    assert sum(j["fields"]["energy_j"] for j in jobs) == pytest.approx(run["fields"]["energy_j"])
    # the child's CPU time is the run's: the busy loop made the tree's share of the CPU energy clearly positive
    assert sum(j["fields"].get("cpu_energy_j", 0.0) for j in jobs) > 0


def test_without_a_daemon_exit_codes_and_signals_still_propagate(local):
    assert local("track", "--job", "x", "--", "sh", "-c", "exit 3").returncode == 3
    assert local("track", "--job", "x", "--", "sh", "-c", "kill -KILL $$").returncode == 128 + signal.SIGKILL
    statuses = sorted((r["tags"]["status"], r["fields"]["exit_code"]) for r in local.export("run"))
    assert statuses == [("failed", 3.0), ("failed", 137.0)]


def test_without_a_daemon_a_nested_track_adds_units_not_energy(local):
    proc = local("track", "--job", "outer", "--run", "shared-1", "--", sys.executable, "-c", INNER)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["shared-1", "none"]  # the inner block does not measure energy again
    points = {p["fields"].get("energy_j") is not None: p for p in local.export("run")}
    assert points[True]["fields"]["energy_j"] > 0 and points[False]["fields"]["unit_samples"] == 4.0
    doc = json.loads(local("jobs", "--json", "--store", local.store, check=True).stdout)
    (row,) = doc["runs"]
    assert row["run"] == "shared-1" and row["units"] == {"samples": 4.0} and row["metrics"] == {"loss": 0.5}
    assert row["energy_kwh"] == pytest.approx(points[True]["fields"]["energy_j"] / 3.6e6)


def test_jobs_lists_two_processes_of_one_run_as_one(local):
    for _ in range(2):  # two ranks of one launch, one after the other, without a daemon
        assert local("track", "--job", "ddp", "--run", "launch-1", "--quiet", "--", "true").returncode == 0
    assert local("track", "--job", "other", "--quiet", "--", "true").returncode == 0
    runs = local.export("run")
    doc = json.loads(local("jobs", "--json", "--store", local.store, check=True).stdout)
    by_id = {r["run"]: r for r in doc["runs"]}
    assert len(by_id) == 2 and by_id["launch-1"]["job"] == "ddp"
    shared = [r for r in runs if r["tags"]["run"] == "launch-1"]
    assert len(shared) == 2
    assert by_id["launch-1"]["energy_kwh"] == pytest.approx(sum(r["fields"]["energy_j"] for r in shared) / 3.6e6)
    table = local("jobs", "--store", local.store, check=True).stdout
    assert "launch-1" in table and "ddp" in table and "2 runs" in table
