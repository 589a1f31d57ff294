"""tests/gpu/validate.py, the one-shot GPU node validation, exercised on simulated GPUs.

The script is meant for a lent GPU machine; ``--simulate 2`` runs the same steps against
carbond.sensors.simnvml (and ``carbond run --simulate-gpus 2`` with a CPU workload), so its
bookkeeping, its checks and the parts that need no CUDA are tested here, in one run (~20 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "gpu" / "validate.py"
STATUSES = {"pass", "fail", "skipped"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("gpuval")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--simulate", "2", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    results = out / "results.json"
    assert results.exists(), f"no results.json; exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(results.read_text()), out


def _step(doc: dict, name: str) -> dict:
    return next(s for s in doc["steps"] if s["name"] == name)


def _checks(step: dict) -> dict[str, dict]:
    return {c["name"]: c for c in step["checks"]}


def test_every_step_and_check_has_a_status_and_the_run_passes(simulated):
    proc, doc, out = simulated
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert doc["complete"] and doc["ok"] and doc["mode"] == "simulate 2" and doc["aborted"] is None
    assert [s["name"] for s in doc["steps"]] == ["env", "inventory", "counter_vs_power", "tick_cost", "daemon"]
    for step in doc["steps"]:
        assert step["status"] in STATUSES, step
        assert step["checks"] and all(c["status"] in STATUSES for c in step["checks"]), step
        assert all(c.get("reason") for c in step["checks"] if c["status"] == "skipped"), step
    assert {s["name"]: s["status"] for s in doc["steps"]} == dict.fromkeys(
        ("env", "inventory", "counter_vs_power", "tick_cost", "daemon"), "pass")
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("carbond GPU validation, simulate 2 mode") and "fail 0" in summary
    assert summary == proc.stdout  # what it prints is what it keeps
    assert (out / "daemon.log").exists() and (out / "daemon_device.jsonl").read_text().strip()


def test_inventory_and_carbond_devices_agree_on_the_simulated_gpus(simulated):
    _, doc, _ = simulated
    inv = _step(doc, "inventory")
    gpus = inv["data"]["gpus"]
    assert len(gpus) == 2 and gpus[0]["energy_counter"]["supported"] and gpus[0]["architecture"]["name"] == "hopper"
    assert gpus[0]["enforced_limit_w"] == 700.0
    assert _checks(inv)["carbond_devices"]["status"] == "pass"
    cli = inv["data"]["carbond_devices_cli"]["doc"]["devices"]
    assert [d["source"] for d in cli if d["kind"] == "gpu"] == ["simulated", "simulated"]


def test_counter_agrees_with_integrated_power_and_with_carbond(simulated):
    _, doc, _ = simulated
    step = _step(doc, "counter_vs_power")
    checks = _checks(step)
    assert {checks[n]["status"] for n in ("counter_advances", "counter_vs_power", "carbond_vs_counter")} == {"pass"}
    data = step["data"]
    assert data["counter_j"] > 0 and abs(data["ratio_power_over_counter"] - 1) <= 0.05
    assert abs(data["ratio_carbond_over_counter"] - 1) <= 0.02 and set(data["carbond_methods"]) == {"counter"}
    assert data["power_samples"] >= 10 * data["window_s"]  # ~20 Hz, with room for a noisy machine


def test_tick_cost_times_each_nvml_call_carbond_makes_per_tick(simulated):
    _, doc, _ = simulated
    data = _step(doc, "tick_cost")["data"]
    per_call = data["per_call"]
    for name in ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetUtilizationRates",
                 "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetProcessUtilization"):
        assert per_call[name]["per_tick"] == 2.0 and per_call[name]["median_us"] > 0, name
    assert data["tick_cpu_us"]["median"] > 0 and isinstance(data["within_issue2_budget"], bool)


def test_daemon_step_checks_host_sum_conservation_and_the_run(simulated):
    _, doc, _ = simulated
    checks = _checks(_step(doc, "daemon"))
    for name in ("daemon_started", "workload_started", "track_exit", "daemon_sigterm_exit", "gpu_source",
                 "host_equals_sum_of_devices", "conservation", "run_finished", "pid_seen_by_daemon"):
        assert checks[name]["status"] == "pass", checks[name]
    for name in ("pid_listed_by_nvml", "gpu_share"):  # need a real GPU process
        assert checks[name]["status"] == "skipped" and "simulate" in checks[name]["reason"]
    assert _step(doc, "daemon")["data"]["gpu_sources"] == {"simulated": _step(doc, "daemon")["data"]["points"]["host"]}


def test_without_out_it_is_a_usage_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--simulate", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--out" in proc.stderr
