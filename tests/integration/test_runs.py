"""Runs on a real daemon: attribution between concurrent runs, conservation, shared ids, zero-code
tagging, restarts, and the socket's security — real processes, a real socket, the real store."""

from __future__ import annotations

import grp
import json
import os
import pwd
import random
import signal
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

from carbond import ipc
from tests.conftest import wait_for

WORKER = str(Path(__file__).with_name("worker.py"))


def _daemon(carbond, *extra: str) -> subprocess.Popen:
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.5"
    proc = carbond.start("run", "--store", carbond.store, "--interval", "0.25", "--socket", carbond.socket, *extra)
    wait_for(lambda: carbond.status(), timeout_s=60)
    return proc


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return err


def _worker(carbond, job: str, run_id: str, duty: float, seconds: float, out: Path, go: Path | None = None,
            sock: str | None = None) -> subprocess.Popen:
    wait = ["--wait", str(go)] if go else []
    return subprocess.Popen([sys.executable, WORKER, *wait, sock or carbond.socket, job, run_id, str(duty), str(seconds),
                             str(out)], env=carbond.env)


def _tracked(carbond, job: str, duty: float, out: Path, go: Path) -> subprocess.Popen:
    """``carbond track --job JOB -- python worker.py ...``: the worker itself does not talk to the daemon."""
    return subprocess.Popen([sys.executable, "-m", "carbond", "track", "--job", job, "--project", "tests", "--socket",
                             carbond.socket, "--quiet", "--", sys.executable, WORKER, "--wait", str(go), "-", job, "-",
                             str(duty), "6", str(out)], env=carbond.env)


def test_two_concurrent_runs_split_cpu_energy_by_cpu_time_and_conserve_energy(carbond, tmp_path):
    daemon = _daemon(carbond)
    try:
        go = tmp_path / "go"
        a = _tracked(carbond, "heavy", 1.0, tmp_path / "a.json", go)
        b = _tracked(carbond, "light", 0.35, tmp_path / "b.json", go)
        wait_for(lambda: (tmp_path / "a.json.started").exists() and (tmp_path / "b.json.started").exists(), 60)
        wait_for(lambda: len((carbond.status() or {"runs": []})["runs"]) == 2, timeout_s=60)
        run_ids = {r["job"]: r["run"] for r in carbond.status()["runs"]}
        go.write_text("go")
        assert a.wait(120) == 0 and b.wait(120) == 0
        wait_for(lambda: not (carbond.status() or {"runs": [1]})["runs"], timeout_s=30)
    finally:
        _stop(daemon)
    ra, rb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    ra["run"], rb["run"] = run_ids["heavy"], run_ids["light"]
    jobs = carbond.export("job")
    cpu_j: dict[str, float] = defaultdict(float)
    for p in jobs:
        cpu_j[p["tags"]["run"]] += p["fields"].get("cpu_energy_j", 0.0)
    assert cpu_j[ra["run"]] > 0 and cpu_j[rb["run"]] > 0
    energy_ratio = cpu_j[ra["run"]] / cpu_j[rb["run"]]
    time_ratio = ra["cpu_s"] / rb["cpu_s"]
    assert energy_ratio == pytest.approx(time_ratio, rel=0.05)
    # conservation on every tick, read back from the store
    by_time: dict[int, float] = defaultdict(float)
    for p in jobs:
        by_time[p["time_ns"]] += p["fields"]["energy_j"]
    hosts = {p["time_ns"]: p["fields"] for p in carbond.export("host")}
    assert set(by_time) <= set(hosts)
    for t, host in hosts.items():
        assert by_time.get(t, 0.0) + host["unattributed_j"] == pytest.approx(host["energy_j"], rel=1e-9, abs=1e-9)
    # the run points carry totals, units and metrics, and the final status
    runs = {p["tags"]["run"]: p for p in carbond.export("run") if p["tags"]["status"] == "finished"}
    assert set(runs) == {ra["run"], rb["run"]}
    assert runs[ra["run"]]["fields"]["energy_j"] > runs[rb["run"]]["fields"]["energy_j"] > 0


def test_processes_sharing_a_run_id_are_one_run(carbond, tmp_path):
    daemon = _daemon(carbond)
    try:
        go = tmp_path / "go"
        ranks = [_worker(carbond, "ddp", "launch-42", 0.5, 2, tmp_path / f"r{i}.json", go) for i in range(2)]
        wait_for(lambda: all((tmp_path / f"r{i}.json.started").exists() for i in range(2)), 60)
        runs = carbond.status()["runs"]
        assert [r["run"] for r in runs] == ["launch-42"] and len(runs[0]["pids"]) >= 2
        go.write_text("go")
        assert all(r.wait(120) == 0 for r in ranks)
    finally:
        _stop(daemon)
    results = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    assert {r["run"] for r in results} == {"launch-42"}
    # the first rank to leave gets the run as it goes on; the last one ends it
    assert sorted(r["result"]["status"] for r in results) == ["finished", "running"]
    finals = [p for p in carbond.export("run") if p["tags"]["status"] == "finished"]
    assert {p["tags"]["run"] for p in finals} == {"launch-42"}
    assert finals[-1]["fields"]["unit_samples"] == 2000.0  # both ranks' units in one run
    listed = json.loads(carbond("jobs", "--json", "--store", carbond.store, check=True).stdout)["runs"]
    assert [r["run"] for r in listed] == ["launch-42"] and listed[0]["units"]["samples"] == 2000.0


def test_env_tagged_process_is_a_run_without_any_client(carbond, tmp_path):
    daemon = _daemon(carbond)
    try:
        env = {**carbond.env, "CARBOND_JOB": "zero-code", "CARBOND_PROJECT": "envproj", "CARBOND_PHASE": "inference"}
        child = subprocess.Popen([sys.executable, WORKER, "-", "x", "-", "0.8", "4", str(tmp_path / "e.json")], env=env)
        seen = wait_for(lambda: [r for r in (carbond.status() or {"runs": []})["runs"] if r["job"] == "zero-code"], 60)
        assert seen[0]["origin"] == "env" and seen[0]["project"] == "envproj" and seen[0]["phase"] == "inference"
        assert child.wait(120) == 0
        wait_for(lambda: not [r for r in carbond.status()["runs"] if r["job"] == "zero-code"], timeout_s=60)
    finally:
        _stop(daemon)
    finals = [p for p in carbond.export("run") if p["tags"]["job"] == "zero-code" and p["tags"]["status"] == "finished"]
    assert len(finals) == 1 and finals[0]["fields"]["energy_j"] > 0 and finals[0]["tags"]["project"] == "envproj"


def test_daemon_restart_mid_run_keeps_the_run(carbond, tmp_path):
    daemon = _daemon(carbond)
    go = tmp_path / "go"
    w = _worker(carbond, "long", "-", 0.5, 6, tmp_path / "w.json", go)
    try:
        wait_for(lambda: (tmp_path / "w.json.started").exists(), 60)
        go.write_text("go")
        wait_for(lambda: [r for r in carbond.status()["runs"] if r["energy_j"] > 0], timeout_s=60)
        _stop(daemon)  # the daemon goes away while the run goes on
        daemon = _daemon(carbond)
        runs = carbond.status()["runs"]
        assert [r["job"] for r in runs] == ["long"] and runs[0]["energy_j"] > 0
        assert w.wait(120) == 0  # its run.end reaches the new daemon
    finally:
        if w.poll() is None:
            w.kill()
        _stop(daemon)
    result = json.loads((tmp_path / "w.json").read_text())["result"]
    assert result["status"] == "finished" and result["energy_j"] > 0


@pytest.fixture
def other_user():
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user")
    try:
        grp.getgrnam("carbond")
    except KeyError:
        subprocess.run(["groupadd", "--system", "carbond"], check=True)
    name = "carbond-test"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-G", "carbond", name], check=True)
    return pwd.getpwnam(name)


def _as_user(user, fn) -> dict:
    """Run ``fn()`` in a forked child with the user's uid/gid; return what it returned (or the error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([grp.getgrnam("carbond").gr_gid])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            try:
                out = {"ok": fn()}
            except Exception as exc:
                out = {"error": str(exc)}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_another_uid_cannot_register_a_process_it_does_not_own(carbond, other_user):
    run_dir = Path(tempfile.mkdtemp(prefix="carbond-sock-", dir="/tmp"))
    run_dir.chmod(0o755)
    carbond.socket = str(run_dir / "carbond.sock")
    daemon = _daemon(carbond)
    try:
        assert grp.getgrgid(os.stat(carbond.socket).st_gid).gr_name == "carbond"
        assert oct(os.stat(carbond.socket).st_mode & 0o777) == "0o660"
        foreign = _as_user(other_user, lambda: ipc.request(carbond.socket, "run.start", job="steal", pid=1))
        assert "permission denied" in foreign["error"] and "uid 0" in foreign["error"]
        own = _as_user(other_user, lambda: ipc.request(carbond.socket, "run.start", job="mine"))
        assert own["ok"]["run"].startswith("mine-")
        run_id = own["ok"]["run"]
        # and it may not end someone else's run either
        root_run = ipc.request(carbond.socket, "run.start", job="roots")["run"]
        hijack = _as_user(other_user, lambda: ipc.request(carbond.socket, "run.end", run=root_run))
        assert "permission denied" in hijack["error"]
        # its process (the fork) is gone, so the run ends by itself
        wait_for(lambda: run_id not in [r["run"] for r in carbond.status()["runs"]], timeout_s=60)
    finally:
        _stop(daemon)


def test_bad_messages_get_error_replies_and_10000_fuzzed_ones_crash_nothing(carbond):
    daemon = _daemon(carbond)
    try:
        def raw(data: bytes) -> dict:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(30)
                s.connect(carbond.socket)
                s.sendall(data)
                with s.makefile("rb") as fh:
                    return json.loads(ipc.read_line(fh) or b"{}")

        assert "limit" in raw(b'{"v":1,"op":"run.start","job":"' + b"x" * 70000 + b'"}\n')["error"]
        assert "not valid JSON" in raw(b"{nope\n")["error"]
        assert "unknown field 'cmdline'" in raw(b'{"v":1,"op":"run.start","job":"j","cmdline":"x"}\n')["error"]
        assert "missing field 'job'" in raw(b'{"v":1,"op":"run.start"}\n')["error"]
        assert "phase" in raw(b'{"v":1,"op":"run.start","job":"j","phase":"Training!"}\n')["error"]
        assert "no run 'nope'" in raw(b'{"v":1,"op":"run.log","run":"nope","values":{"a":1}}\n')["error"]
        mine = ipc.request(carbond.socket, "run.start", job="fuzz-target")["run"]
        bad_value = json.dumps({"v": 1, "op": "run.log", "run": mine, "values": {"a": "b"}}).encode() + b"\n"
        assert "finite number" in raw(bad_value)["error"]

        rng = random.Random(1234)
        ops = ["run.start", "run.log", "run.end", "run.progress", "run.get", "runs", "status", "x", ""]
        keys = ["job", "run", "values", "done", "total", "pid", "phase", "tags", "status", "exit_code", "v", "op", "zz"]
        values = [None, True, -1, 0, 2**40, 1.5, float("1e308"), "", "a" * 300, "job\n", [], {}, {"samples": 1},
                  {"a": "b"}, {"x": None}, "training", "finished"]
        replies = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(carbond.socket)
            with s.makefile("rb") as fh:
                for _ in range(10_000):
                    kind = rng.random()
                    if kind < 0.1:
                        line = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b" ")
                    else:
                        msg = {"v": 1 if rng.random() < 0.9 else rng.choice(values), "op": rng.choice(ops)}
                        for _ in range(rng.randrange(0, 4)):
                            msg[rng.choice(keys)] = rng.choice(values)
                        line = json.dumps(msg).encode()
                    if not line.strip():
                        continue
                    s.sendall(line + b"\n")
                    reply = json.loads(ipc.read_line(fh))
                    assert reply["v"] == 1 and isinstance(reply["ok"], bool)
                    replies += 1
        assert replies > 9000
        assert carbond.status() is not None and daemon.poll() is None
    finally:
        err = _stop(daemon)
    assert "Traceback" not in err


CLIENT = """
import json, sys, time
import carbond
with carbond.track("client-job", project="p", phase="validation", tags={"variant": "pruned-30"}) as run:
    t = time.process_time() + 1.5
    n = 0
    while time.process_time() < t:
        n += 1
        if n % 100000 == 0:
            run.log(samples=10)
    run.log(accuracy=0.91)
r = run.result
print(json.dumps({"mode": r.measured_by, "energy_kwh": r.energy_kwh, "co2_kg": r.co2_kg, "water_l": r.water_l,
                  "run": r.run_id, "units": r.units, "metrics": r.metrics, "status": r.status}))
"""


def test_client_and_track_and_jobs_against_the_real_daemon(carbond, tmp_path):
    daemon = _daemon(carbond)
    try:
        out = subprocess.run([sys.executable, "-c", CLIENT], env={**carbond.env, "CARBOND_SOCKET": carbond.socket},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        assert r["mode"] == "daemon" and r["energy_kwh"] > 0 and r["co2_kg"] > 0 and r["status"] == "finished"
        assert r["units"]["samples"] > 0 and r["metrics"] == {"accuracy": 0.91}
        burn = "import time\nt = time.process_time() + 1.0\nwhile time.process_time() < t: pass\nraise SystemExit(3)"
        tr = carbond("track", "--job", "cli-job", "--project", "p", "--socket", carbond.socket, "--",
                     sys.executable, "-c", burn)
        assert tr.returncode == 3  # the command's exit code
        wait_for(lambda: not carbond.status()["runs"], timeout_s=60)
    finally:
        _stop(daemon)
    doc = json.loads(carbond("jobs", "--json", "--store", carbond.store, "--socket", carbond.socket, check=True).stdout)
    runs = {j["job"]: j for j in doc["runs"]}
    assert runs["client-job"]["status"] == "finished" and runs["client-job"]["energy_kwh"] > 0
    assert runs["client-job"]["tags"]["variant"] == "pruned-30"
    assert runs["cli-job"]["status"] == "failed" and runs["cli-job"]["energy_kwh"] > 0
    text = carbond("jobs", "--store", carbond.store, "--socket", carbond.socket, check=True).stdout
    assert "client-job" in text and "cli-job" in text


def test_with_the_daemon_down_the_client_measures_in_process(carbond):
    carbond.env["CARBOND_SOCKET"] = str(carbond.tmp / "run" / "nobody.sock")
    carbond.env["CARBOND_STORE"] = carbond.store
    out = subprocess.run([sys.executable, "-c", CLIENT], env=carbond.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["mode"] == "in-process" and r["energy_kwh"] > 0 and r["status"] == "finished"
    finals = [p for p in carbond.export("run") if p["tags"]["run"] == r["run"]]
    assert finals and finals[-1]["fields"]["energy_j"] == pytest.approx(r["energy_kwh"] * 3.6e6, rel=1e-6)


def test_a_run_shorter_than_a_tick_still_gets_its_energy(carbond):
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.5"
    daemon = carbond.start("run", "--store", carbond.store, "--interval", "5", "--socket", carbond.socket)
    try:
        wait_for(lambda: carbond.status(), timeout_s=60)
        burn = ("import json, time, carbond\nwith carbond.track('blink') as run:\n"
                "    t = time.process_time() + 0.5\n    while time.process_time() < t: pass\n"
                "print(json.dumps({'e': run.result.energy_kwh, 'm': run.result.measured_by}))")
        out = subprocess.run([sys.executable, "-c", burn], env={**carbond.env, "CARBOND_SOCKET": carbond.socket},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        assert r["m"] == "daemon" and r["e"] > 0  # run.end measured up to the end, between two 5 s ticks
    finally:
        _stop(daemon)
