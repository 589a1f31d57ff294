"""deploy/slurm/taskprolog.sh as slurmstepd runs it, and a real daemon attributing the Slurm task it tagged:
no carbond code in the job, no client, only the environment."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_for

TASKPROLOG = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "taskprolog.sh"
TASK = ("import pathlib, time, sys\ngo = pathlib.Path(sys.argv[1])\nwhile not go.exists(): time.sleep(0.05)\n"
        "t = time.process_time() + 1.0\nwhile time.process_time() < t: pass\n")


def taskprolog(env: dict[str, str]) -> dict[str, str]:
    """Run the TaskProlog and apply its ``export NAME=value`` lines, as slurmstepd does."""
    out = subprocess.run(["/bin/sh", str(TASKPROLOG)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    exports = {}
    for line in out.stdout.splitlines():
        assert line.startswith("export "), line
        name, _, value = line[len("export "):].partition("=")
        exports[name] = value
    return exports


def test_taskprolog_exports():
    base = {"PATH": "/usr/bin:/bin"}
    assert taskprolog(base) == {}  # not a Slurm task: nothing
    slurm = {**base, "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "3", "SLURM_JOB_NAME": "bert-ft", "SLURM_JOB_ACCOUNT": "nlp lab"}
    assert taskprolog(slurm) == {"CARBOND_PROJECT": "nlp_lab", "CARBOND_RUN": "77.3"}
    assert taskprolog({**slurm, "SLURM_JOB_ACCOUNT": "", "SLURM_JOB_PARTITION": "gpu"})["CARBOND_PROJECT"] == "gpu"
    # what the job chose itself stays
    assert taskprolog({**slurm, "CARBOND_PROJECT": "mine", "CARBOND_RUN": "r1"}) == {}
    assert "CARBOND_RUN" in taskprolog({k: v for k, v in slurm.items() if k != "SLURM_STEP_ID"})


def test_a_slurm_task_is_attributed_with_no_code_change(carbond, tmp_path):
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.5"
    daemon = carbond.start("run", "--store", carbond.store, "--interval", "0.25", "--socket", carbond.socket)
    go = tmp_path / "go"
    try:
        wait_for(lambda: carbond("status", "--socket", carbond.socket).returncode == 0, timeout_s=60)
        job_id = str(random.randrange(10**6, 10**7))  # unique: another copy of this suite may run on the machine
        slurm = {"SLURM_JOB_ID": job_id, "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "bert-ft", "SLURM_JOB_ACCOUNT": "nlp",
                 "SLURM_JOB_PARTITION": "gpu"}
        env = {**carbond.env, **slurm}
        env.update(taskprolog(env))
        task = subprocess.Popen([sys.executable, "-c", TASK, str(go)], env=env)

        def active() -> list[dict]:
            r = carbond("status", "--json", "--socket", carbond.socket)
            return json.loads(r.stdout)["runs"] if r.returncode == 0 else []

        def ours() -> list[dict]:  # the daemon sees every tagged process on the machine, other tests' too
            return [r for r in active() if r["run"] == f"{job_id}.0"]

        (run,) = wait_for(ours, timeout_s=60)  # found by its environment (discovery every few seconds)
        assert (run["job"], run["run"], run["project"]) == ("bert-ft", f"{job_id}.0", "nlp")
        go.write_text("go")
        assert task.wait(120) == 0
        wait_for(lambda: not ours(), timeout_s=60)
    finally:
        go.write_text("go")
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, err
    doc = json.loads(carbond("jobs", "--json", "--store", carbond.store, "--socket", carbond.socket, check=True).stdout)
    (job,) = [r for r in doc["runs"] if r["run"] == f"{job_id}.0"]
    assert job["job"] == "bert-ft" and job["project"] == "nlp" and job["status"] == "finished" and job["energy_kwh"] > 0
