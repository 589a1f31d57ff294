"""docs/examples/optimize_digits.py runs as documented and writes its reports, plots, CSV and model."""

from __future__ import annotations

import csv
import html.parser
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "optimize_digits.py"
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_digits_example_runs_and_writes_every_output(carbond, tmp_path: Path):
    out = tmp_path / "out"
    env = {**carbond.env, "CARBOND_SOCKET": str(tmp_path / "no-daemon.sock")}
    r = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(out), "--store", carbond.store, "--min-time", "1"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "done in" in r.stdout
    for name in ("lifecycle.html", "lifecycle.md", "compare.html", "compare.md", "variants.csv", "deployed.pt"):
        assert (out / name).stat().st_size > 0, name
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"lifecycle-share-energy.png", "lifecycle-water.png", "compare-pareto.png"}
    for p in pngs:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, p.name  # a drawn plot, not an empty canvas
    page = (out / "lifecycle.html").read_text()
    html.parser.HTMLParser().feed(page)
    assert page.count("data:image/png;base64,") >= 2 and "http://" not in page and "https://" not in page
    lifecycle = (out / "lifecycle.md").read_text()
    for phase in ("development", "training", "validation", "deployment", "inference"):
        assert f"| {phase} | measured |" in lifecycle, phase
    assert lifecycle.count("as recorded: energy by model;") == 5  # no RAPL, no GPU here: every joule is modelled
    with open(out / "variants.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["variant"] for row in rows] == ["baseline", "pruned-50", "pruned-channels-25", "quantized-int8",
                                                "quantized-static-int8", "pruned-50+quantized-int8"]
    assert all(float(row["energy_j_per_item"]) > 0 for row in rows)
    assert float(rows[0]["accuracy"]) > 0.9  # a real model was trained on real data
    assert int(rows[3]["size_bytes"]) < int(rows[0]["size_bytes"]) / 2
