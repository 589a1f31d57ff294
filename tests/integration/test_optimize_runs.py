"""carbond.optimize end to end: variants measured by a real daemon (or in-process), read back by ``report compare``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytest.importorskip("torch")
pytest.importorskip("pandas")

COMPARE = r"""
import json, sys
import torch
from torch import nn
from carbond.optimize import compare

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4))
x = torch.randn(64, 64)
labels = model(x).argmax(1)
df = compare(model, x, ["baseline", "pruned-60", "quantized-int8"], socket=sys.argv[1], n_batches=20, min_time_s=1.0,
             job="opt-it", project="optimize-it", eval_fn=lambda m: float((m(x).argmax(1) == labels).float().mean()))
print(json.dumps({"rows": df.to_dict(orient="records"), "notes": df.attrs["notes"]}))
"""


def _report(carbond, runs: list[str]) -> dict:
    r = carbond("report", "compare", "--store", carbond.store, "--run", *runs, "--per", "items", "--format", "json",
                check=True)
    return json.loads(r.stdout)


def test_compare_runs_measured_by_a_real_daemon_are_read_back_by_report_compare(carbond):
    carbond.env["CARBOND_STORE_FLUSH_INTERVAL_S"] = "0.5"
    daemon = carbond.start("run", "--store", carbond.store, "--interval", "0.25", "--socket", carbond.socket)
    try:
        wait_for(lambda: carbond.status(min_ticks=2), timeout_s=60)
        out = subprocess.run([sys.executable, "-c", COMPARE, carbond.socket], env=carbond.env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, err
    doc = json.loads(out.stdout)
    rows = {r["variant"]: r for r in doc["rows"]}
    assert {r["measured_by"] for r in rows.values()} == {"daemon"}
    assert all(r["energy_j"] > 0 and r["items"] >= 64 * 20 for r in rows.values())
    assert rows["baseline"]["accuracy"] == 1.0
    stored = _report(carbond, [r["run"] for r in doc["rows"]])
    assert [row["label"] for row in stored["rows"]] == [r["run"] for r in doc["rows"]]
    for row in stored["rows"]:
        mine = next(r for r in doc["rows"] if r["run"] == row["label"])
        assert row["tags"] == f"variant={mine['variant']}" and row["phase"] == "inference" and row["job"] == "opt-it"
        assert row["unit_items"] == mine["items"]
        assert row["energy_by"] == mine["energy_source"] != "none"  # how the energy was known, as the store has it
        assert row["energy_j_per_items"] == pytest.approx(mine["energy_j_per_item"], rel=1e-9)
        assert row["co2_g_per_items"] * 1000 == pytest.approx(mine["co2_g_per_1k_items"], rel=1e-9)
        assert row["metric_accuracy"] == pytest.approx(mine["accuracy"])
        assert row["energy_change_pct"] == pytest.approx(mine["energy_change_pct"], rel=1e-6, abs=1e-9)


def _script_model(path: Path) -> None:
    code = ("import torch, sys; from torch import nn; torch.manual_seed(0); "
            "torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4))), sys.argv[1])")
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(path)], check=True, timeout=300)


def test_carbond_optimize_on_a_torchscript_model_in_process(carbond, tmp_path: Path):
    model = tmp_path / "model.pt"
    _script_model(model)
    carbond.env.update({"CARBOND_STORE": carbond.store, "CARBOND_SOCKET": str(tmp_path / "no-daemon.sock")})
    saved = tmp_path / "variants"
    r = carbond("optimize", str(model), "--input-shape", "16,64", "--variants", "baseline,pruned-channels-50,quantized-int8",
                "--n-batches", "10", "--min-time", "0.3", "--project", "cli", "--tag", "model=mlp", "--save-dir", str(saved),
                "--format", "json", check=True, timeout=600)
    doc = json.loads(r.stdout)
    rows = {row["variant"]: row for row in doc["rows"]}
    assert list(rows) == ["baseline", "pruned-channels-50", "quantized-int8"]
    for row in rows.values():
        assert Path(row["saved"]).stat().st_size == row["size_bytes"]
        assert row["measured_by"] == "in-process" and row["energy_j_per_item"] > 0
    assert rows["quantized-int8"]["size_bytes"] < rows["baseline"]["size_bytes"] / 3
    assert rows["pruned-channels-50"]["nonzero_params"] == 128 * 64 // 2 + 128 // 2 + 128 * 4 + 4
    assert rows["baseline"]["flops"] == 2 * 16 * (64 * 128 + 128 * 4)
    stored = _report(carbond, [row["run"] for row in doc["rows"]])
    assert [row["tags"] for row in stored["rows"]] == [f"model=mlp variant={v}" for v in rows]
    for row, mine in zip(stored["rows"], rows.values(), strict=True):
        assert row["energy_j_per_items"] == pytest.approx(mine["energy_j_per_item"], rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--input-shape", "16,65"], "the sample input (shape (16, 65) float32) does not fit the model"),
    (["--input-shape", "16,x"], "--input-shape must be positive integers"),
    (["--input-shape", "16,64", "--variants", "baseline,pruned-100"], "between 0 and 100"),
    (["--input-shape", "16,64", "--variants", "quantized-static-int8"], "a TorchScript model takes quantized-int8"),
    (["--input-shape", "16,64", "--n-batches", "0"], "--n-batches must be at least 1"),
])
def test_carbond_optimize_bad_input_exits_2_before_any_run(carbond, tmp_path: Path, args, message):
    model = tmp_path / "model.pt"
    _script_model(model)
    carbond.env.update({"CARBOND_STORE": carbond.store, "CARBOND_SOCKET": str(tmp_path / "no-daemon.sock")})
    r = carbond("optimize", str(model), *args, timeout=300)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not carbond.db.exists() or carbond.export("run") == []  # nothing was measured or written


def test_carbond_optimize_refuses_a_state_dict(carbond, tmp_path: Path):
    path = tmp_path / "weights.pt"
    subprocess.run([sys.executable, "-c", "import torch, sys; torch.save(torch.nn.Linear(2, 2).state_dict(), sys.argv[1])",
                    str(path)], check=True, timeout=300)
    r = carbond("optimize", str(path), "--input-shape", "1,2", timeout=300)
    assert r.returncode == 2 and "is not a TorchScript file" in r.stderr and "carbond.optimize.compare()" in r.stderr
    r = carbond("optimize", str(tmp_path / "missing.pt"), "--input-shape", "1,2", timeout=300)
    assert r.returncode == 2 and "no such file" in r.stderr
