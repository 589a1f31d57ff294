"""``carbond.track`` against a fake daemon on a real Unix socket, and without any daemon."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from carbond import client
from carbond.store.sqlite import SqliteStore
from tests.fakes.daemon import ENERGY_J, FakeDaemon

ENV_IDS = ("CARBOND_RUN", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID", "CARBOND_SOCKET", "CARBOND_CONFIG",
           client.INPROCESS_ENV, "CARBOND_JOB", "CARBOND_PROJECT", "CARBOND_PHASE")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ENV_IDS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("CARBOND_STORE", f"sqlite://{tmp_path / 'c.db'}")
    monkeypatch.setenv("CARBOND_SENSORS_NVML", "false")
    monkeypatch.setenv("CARBOND_INTERVAL", "0.1")
    monkeypatch.setattr(client, "_warned", False)
    monkeypatch.setattr(client, "_socket_cache", {})
    return tmp_path


@pytest.fixture
def fake(tmp_path: Path):
    daemon = FakeDaemon(str(tmp_path / "d.sock"))
    yield daemon
    daemon.close()


def _carbond_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, client.CarbondWarning)]


def test_context_manager_registers_logs_and_ends(fake: FakeDaemon):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with client.track("bert-ft", project="sentiment", phase="Training", tags={"variant": "pruned-30"},
                          socket=fake.path) as run:
            assert run.run_id == "bert-ft-1" and run.mode == "daemon"
            run.log(samples=10)
            run.log(samples=5, loss=0.3)
            run.log(loss=0.2, accuracy=1)
            run.progress(3, 10)
    assert _carbond_warnings(record) == []
    (start,) = fake.ops_seen("run.start")
    assert {k: v for k, v in start.items() if k != "_peer"} == {
        "job": "bert-ft", "project": "sentiment", "phase": "training", "tags": {"variant": "pruned-30"}}
    (end,) = fake.ops_seen("run.end")
    assert end["run"] == "bert-ft-1" and end["status"] == "finished" and end["pid"] == os.getpid()
    stored = fake.runs["bert-ft-1"]
    assert stored["units"] == {"samples": 15.0}
    assert stored["metrics"] == {"loss": 0.2, "accuracy": 1.0}
    assert stored["progress"] == {"done": 3.0, "total": 10.0}
    r = run.result
    assert r is not None and r.measured_by == "daemon" and r.status == "finished" and r.run_id == "bert-ft-1"
    assert r.energy_kwh == pytest.approx(ENERGY_J / 3.6e6) and r.energy_j == pytest.approx(ENERGY_J)
    assert (r.co2_kg, r.water_l, r.embodied_kg) == pytest.approx((0.001, 0.5, 0.002))
    assert r.sources == {"model": ENERGY_J} and r.units == {"samples": 15.0} and r.hosts == ("fakehost",)


def test_logs_are_buffered_and_sent_from_the_caller_thread(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client, "FLUSH_EVERY_S", 3600.0)
    def client_threads() -> int:  # the fake daemon's per-connection threads end on their own time: not ours
        return sum(1 for t in threading.enumerate() if t.name != "carbond-client")

    threads = client_threads()
    with client.track("j", socket=fake.path) as run:
        for _ in range(10_000):
            run.log(samples=2, tokens=3, loss=0.5)
        assert client_threads() == threads  # no thread per run, none per step
        assert fake.ops_seen("run.log") == []  # nothing went out per step
    (batch,) = fake.ops_seen("run.log")
    assert batch["values"] == {"samples": 20_000.0, "tokens": 30_000.0, "loss": 0.5}
    assert [name for name, _ in fake.calls] == ["run.start", "run.log", "run.end"]  # one exchange at exit

    monkeypatch.setattr(client, "FLUSH_EVERY_S", 0.0)  # due on every call: sent opportunistically, in order
    with client.track("j2", socket=fake.path) as run:
        run.log(samples=1)
        run.log(samples=2)
        assert len(fake.ops_seen("run.log")) == 3
    assert fake.runs[run.run_id]["units"] == {"samples": 3.0}


def test_decorator_each_call_is_a_run(fake: FakeDaemon):
    @client.track("nightly-eval", phase="validation", socket=fake.path)
    def evaluate(x: int) -> int:
        return x * 2

    @client.track("async-eval", socket=fake.path)
    async def aevaluate(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert evaluate(2) == 4 and evaluate(5) == 10
    assert asyncio.run(aevaluate(1)) == 2
    assert evaluate.__name__ == "evaluate"
    assert [a["job"] for a in fake.ops_seen("run.start")] == ["nightly-eval", "nightly-eval", "async-eval"]
    assert len({a["run"] for a in fake.ops_seen("run.end")}) == 3


def test_exception_ends_the_run_failed_and_is_reraised_untouched(fake: FakeDaemon):
    boom = KeyError("boom")
    with pytest.raises(KeyError) as caught:
        with client.track("j", socket=fake.path) as run:
            raise boom
    assert caught.value is boom
    assert fake.ops_seen("run.end")[0]["status"] == "failed"
    assert run.result is not None and run.result.status == "failed"

    with pytest.raises(SystemExit):
        with client.track("j", socket=fake.path):
            sys.exit(0)  # a clean exit is not a failure
    assert fake.ops_seen("run.end")[1]["status"] == "finished"


class _RawServer:
    """A Unix socket that misbehaves: answers garbage, closes at once, or never answers."""

    def __init__(self, path: str, behaviour: str) -> None:
        self.path, self.behaviour = path, behaviour
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.behaviour == "garbage":
                conn.sendall(b"\x00\xffnot json at all\n")
                conn.close()
            elif self.behaviour == "close":
                conn.close()
            else:
                self.conns.append(conn)  # silent: hold the connection open

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("behaviour", ["garbage", "close", "silent", "stale", "missing"])
def test_never_raises_when_the_socket_misbehaves(tmp_path: Path, behaviour: str):
    path = str(tmp_path / "bad.sock")
    server = None
    if behaviour in ("garbage", "close", "silent"):
        server = _RawServer(path, behaviour)
    elif behaviour == "stale":  # a socket file nobody listens on (a daemon killed with -9)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            t0 = time.monotonic()
            with client.track("j", socket=path, timeout_s=0.2) as run:
                entered_s = time.monotonic() - t0
                run.log(samples=1)
                run.progress(1, 2)
        assert entered_s < 1.5
        assert run.result is not None and run.result.measured_by == "in-process"
        assert run.result.units == {"samples": 1.0}
        expected = 0 if behaviour in ("stale", "missing") else 1  # no daemon at all is not a failure
        assert len(_carbond_warnings(record)) == expected
    finally:
        if server is not None:
            server.close()


def test_slow_daemon_times_out_and_falls_back(tmp_path: Path):
    slow = FakeDaemon(str(tmp_path / "slow.sock"), delay_s=1.0)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            t0 = time.monotonic()
            with client.track("j", socket=slow.path, timeout_s=0.1) as run:
                assert time.monotonic() - t0 < 0.9
        assert run.result is not None and run.result.measured_by == "in-process"
        assert len(_carbond_warnings(record)) == 1
    finally:
        slow.close()


def test_bad_log_values_warn_once_and_never_raise(fake: FakeDaemon):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with client.track("j", socket=fake.path, tags={"bad-tag": "x", "ok": 5}) as run:
            run.log(samples="many", **{"bad-name": 1.0}, loss=float("nan"), converged=True, steps=2)
            run.progress(-1, 0)
    assert len(_carbond_warnings(record)) == 1
    assert fake.ops_seen("run.start")[0]["tags"] == {"ok": "5"}
    assert fake.ops_seen("run.log")[0]["values"] == {"steps": 2.0, "converged": 1.0}
    assert run.result is not None and run.result.measured_by == "daemon"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with the fake daemon's threads alive
def test_forked_child_forwards_its_logs_but_never_ends_the_run(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client, "FLUSH_EVERY_S", 3600.0)
    tracker = client.track("loader", socket=fake.path)
    run = tracker.__enter__()
    run.log(samples=1)  # pending in the parent when it forks
    pid = os.fork()
    if pid == 0:  # a DataLoader worker, say
        code = 1
        try:
            run.log(samples=5)
            tracker.__exit__(None, None, None)  # leaving the block in the child: no run.end
            code = 0 if run.result is None else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_logs = [a for a in fake.ops_seen("run.log") if a["_peer"][0] == pid]
    assert [a["values"] for a in child_logs] == [{"samples": 5.0}]  # the parent's pending 1 is not re-sent
    assert fake.ops_seen("run.end") == []
    tracker.__exit__(None, None, None)
    (end,) = fake.ops_seen("run.end")
    assert end["pid"] == os.getpid()
    assert fake.runs[run.run_id]["units"] == {"samples": 6.0} and fake.runs[run.run_id]["status"] == "finished"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"SLURM_JOB_ID": "12"}, "12"),
    ({"SLURM_JOB_ID": "12", "SLURM_STEP_ID": "3"}, "12.3"),
    ({"SLURM_JOB_ID": "12", "TORCHELASTIC_RUN_ID": "te-1"}, "te-1"),
    ({"SLURM_JOB_ID": "12", "TORCHELASTIC_RUN_ID": "te-1", "CARBOND_RUN": "cr-1"}, "cr-1"),
])
def test_run_id_from_environment(env: dict[str, str], expected: str | None):
    assert client.run_id_from_env(env) == expected


def test_ranks_share_a_run_id_from_the_environment(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-7")
    with client.track("ddp", socket=fake.path) as run:
        assert run.run_id == "launch-7"
    assert fake.ops_seen("run.start")[0]["run"] == "launch-7"
    with client.track("ddp", socket=fake.path, run="explicit-1") as run:
        pass
    assert run.run_id == "explicit-1"  # an explicit id beats the environment


def test_nested_blocks_of_one_run_end_it_once(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CARBOND_RUN", "shared")
    with client.track("outer", socket=fake.path) as outer:
        with client.track("inner", socket=fake.path) as inner:
            inner.log(samples=1)
        assert fake.ops_seen("run.end") == [] and len(fake.ops_seen("run.get")) == 1
        assert inner.result is not None and inner.result.status == "running"
    assert len(fake.ops_seen("run.end")) == 1
    assert outer.result is not None and outer.result.status == "finished"


def test_daemon_restart_mid_run_loses_nothing(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client, "FLUSH_EVERY_S", 0.0)
    retrying = threading.Event()

    def sleep(seconds: float) -> None:
        retrying.set()
        time.sleep(seconds)

    monkeypatch.setattr(client, "_sleep", sleep)
    tracker = client.track("long", socket=fake.path)
    run = tracker.__enter__()
    run.log(samples=1)
    fake.close()  # the daemon goes away (restart): the socket file is gone
    run.log(samples=2)  # kept for later, not lost and not raised
    ended = threading.Thread(target=tracker.__exit__, args=(None, None, None))
    ended.start()
    assert retrying.wait(10)  # the exit is retrying on the missing socket
    fake.start()  # the daemon is back, with its run registry
    ended.join(15)
    assert not ended.is_alive()
    assert run.result is not None and run.result.measured_by == "daemon" and run.result.status == "finished"
    assert fake.runs[run.run_id]["units"] == {"samples": 3.0}


def test_gives_up_after_the_retry_window(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client, "RETRY_S", 0.2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with client.track("j", socket=fake.path) as run:
            fake.close()
    assert run.result is not None and run.result.measured_by == "none" and run.result.status == "finished"
    assert len(_carbond_warnings(record)) == 1


def test_enter_and_exit_cost_milliseconds(fake: FakeDaemon):
    client.track("warm", socket=fake.path).__enter__().end()
    costs = []
    for _ in range(20):
        t0 = time.perf_counter()
        with client.track("fast", socket=fake.path) as run:
            run.log(samples=1)
        costs.append(time.perf_counter() - t0)
    costs.sort()
    assert costs[len(costs) // 2] < 0.05  # two round trips to a Python fake; the real budget is 5 ms


def test_without_a_daemon_measures_in_process_and_writes_the_store(isolated: Path):
    with client.track("local", project="p", phase="training", tags={"variant": "a"},
                      socket=str(isolated / "none.sock")) as run:
        assert run.mode == "in-process"
        deadline = time.monotonic() + 30
        while run._meter.ticks < 3 and time.monotonic() < deadline:  # real work until three ticks measured it
            sum(i * i for i in range(20_000))
            run.log(samples=100)
        run.log(accuracy=0.9)
    r = run.result
    assert r is not None and r.measured_by == "in-process" and r.status == "finished"
    assert r.energy_kwh > 0 and r.co2_kg > 0 and r.water_l > 0 and r.embodied_kg > 0
    assert r.duration_s > 0 and sum(r.sources.values()) == pytest.approx(r.energy_j)
    store = SqliteStore(isolated / "c.db", readonly=True)
    try:
        jobs = list(store.scan("job"))
        (point,) = list(store.scan("run"))
    finally:
        store.close()
    assert len(jobs) >= 3 and all(p.tags["run"] == r.run_id for p in jobs)
    assert sum(p.fields["energy_j"] for p in jobs) == pytest.approx(r.energy_j)
    assert point.tags == {"host": r.hosts[0], "project": "p", "job": "local", "phase": "training", "run": r.run_id,
                          "status": "finished", "variant": "a"}
    assert point.fields["energy_j"] == pytest.approx(r.energy_j)
    assert point.fields["unit_samples"] == r.units["samples"] and point.fields["metric_accuracy"] == 0.9
    assert point.fields["in_process"] == 1.0


def test_import_stays_light():
    code = ("import sys, carbond; carbond.track; carbond.RunResult; "
            "heavy = [m for m in ('pandas', 'torch', 'influxdb_client', 'numpy', 'carbond.daemon', 'carbond.inprocess') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
