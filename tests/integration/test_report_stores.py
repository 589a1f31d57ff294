"""Reports on the embedded SQLite store and on a real InfluxDB 1.6.7: the same exact numbers.

One fixture of ``run`` points with totals computable by hand (constant power, so a run's
energy at ``t`` seconds is ``power × t``) is written to each store; ``python -m carbond.reports``
must give the expected lifecycle and compare tables on both, in every format, and the
expected exit codes for bad input.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fakes import influx_servers

from carbond.store import open_store
from carbond.store.base import Point, make_point

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

S = 1_000_000_000
H = 3600 * S
T0 = 1_699_999_200 * S  # hour-aligned
ROOT = Path(__file__).parents[2]
BACKENDS = ["sqlite", "influxdb-v1"]
influx_server, influx_db = influx_servers.influx_server, influx_servers.influx_db  # fixtures
KWH = 3.6e6
CO2_G_PER_KWH, WATER_L_PER_KWH, EMBODIED_G_PER_S = 400.0, 3.0, 0.004


@dataclass(frozen=True)
class Spec:
    run: str
    job: str
    phase: str
    hosts: tuple[str, ...]
    start_ns: int
    seconds: int
    power_w: float
    project: str = "nlp"
    samples_per_s: float = 0.0
    requests_per_s: float = 0.0
    metrics: tuple[tuple[str, float], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    def fields(self, t: float) -> dict[str, float]:
        kwh = self.power_w * t / KWH
        f = {"duration_s": float(t), "energy_j": self.power_w * t, "co2_g": kwh * CO2_G_PER_KWH,
             "water_l": kwh * WATER_L_PER_KWH, "embodied_g": EMBODIED_G_PER_S * t}
        if self.samples_per_s:
            f["unit_samples"] = self.samples_per_s * t
        if self.requests_per_s:
            f["unit_requests"] = self.requests_per_s * t
        f.update({f"metric_{k}": v for k, v in self.metrics})
        return f

    def points(self) -> list[Point]:
        out = []
        for host in self.hosts:
            for t in range(60, self.seconds + 1, 60):
                tags = {**dict(self.tags), "host": host, "project": self.project, "job": self.job, "phase": self.phase,
                        "run": self.run, "status": "finished" if t == self.seconds else "running"}
                out.append(make_point("run", tags, self.fields(t), self.start_ns + t * S))
        return out


SPECS = [
    Spec("bert-base-1", "bert", "training", ("h1",), T0 + 1800 * S, 9000, 250.0, samples_per_s=8,
         metrics=(("accuracy", 0.90), ("loss", 0.30)), tags=(("variant", "base"),)),
    Spec("bert-pruned-1", "bert-pruned", "training", ("h1",), T0 + 3 * H, 3600, 125.0, samples_per_s=8,
         metrics=(("accuracy", 0.89), ("loss", 0.32)), tags=(("variant", "pruned-30"),)),
    Spec("bert-eval-1", "bert-eval", "validation", ("h2",), T0 + H, 1800, 100.0, metrics=(("accuracy", 0.905),)),
    Spec("bert-serve-1", "bert-serve", "inference", ("h1", "h2"), T0 + 2 * H, 3600, 50.0, requests_per_s=1),
    Spec("resnet-1", "resnet", "training", ("h1",), T0, 1800, 200.0, project="vision"),
]
NOTEBOOK = [  # one run measured in-process by two processes (one final point each, which add up)
    make_point("run", {"host": "h3", "project": "nlp", "job": "notebook", "phase": "development", "run": "notebook-1",
                       "status": "finished"},
               {"duration_s": 600.0, "energy_j": 36000.0, "co2_g": 4.0, "water_l": 0.03, "embodied_g": 2.4, "in_process": 1.0},
               T0 + 4 * H + end_s * S) for end_s in (600, 900)]


def expected_totals(spec: Spec, until_ns: int | None = None) -> dict[str, float]:
    """A run's totals as of its last point before ``until_ns``, summed over its hosts."""
    last = spec.seconds if until_ns is None else min(spec.seconds, (until_ns - 1 - spec.start_ns) // S // 60 * 60)
    f = spec.fields(last)
    n = len(spec.hosts)
    return {"duration_h": last / 3600, "energy_kwh": f["energy_j"] * n / KWH, "co2_kg": f["co2_g"] * n / 1000,
            "water_l": f["water_l"] * n, "embodied_kg": f["embodied_g"] * n / 1000}


def write_fixture(url: str) -> None:
    store = open_store(url)
    try:
        store.write([p for spec in SPECS for p in spec.points()] + NOTEBOOK)
    finally:
        store.close()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path}/reports.db"
    else:
        url = request.getfixturevalue("influx_db").url
    write_fixture(url)
    yield url


def carbond_reports(*args: str, tmp: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "carbond.reports", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp)


def report_json(*args: str) -> dict:
    proc = carbond_reports(*args, "--config", os.devnull, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def approx_row(row: dict, want: dict) -> None:
    for key, value in want.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (row["phase"] if "phase" in row else row, key)


def add(*totals: dict[str, float]) -> dict[str, float]:
    return {k: sum(t[k] for t in totals) for k in totals[0]}


def test_lifecycle_equals_the_expected_totals(store_url: str):
    doc = report_json("report", "lifecycle", "--store", store_url, "--project", "nlp")
    rows = {r["phase"]: r for r in doc["rows"]}
    assert list(rows) == ["development", "training", "validation", "inference", "TOTAL"]
    base, pruned, evaluation, serve = (expected_totals(s) for s in SPECS[:4])
    approx_row(rows["training"], {**add(base, pruned), "runs": 2})
    approx_row(rows["validation"], {**evaluation, "runs": 1})
    approx_row(rows["inference"], {**serve, "duration_h": 1.0, "runs": 1})  # two hosts, one hour of wall time
    approx_row(rows["development"], {"runs": 1, "duration_h": 0.25, "energy_kwh": 0.02, "co2_kg": 0.008,
                                     "water_l": 0.06, "embodied_kg": 0.0048})
    total = {k: sum(rows[p][k] for p in ("development", "training", "validation", "inference"))
             for k in ("energy_kwh", "co2_kg", "water_l", "embodied_kg")}
    approx_row(rows["TOTAL"], {**total, "runs": 5, "share_pct": 100.0})
    assert total["energy_kwh"] == pytest.approx(0.625 + 0.125 + 0.05 + 0.1 + 0.02)
    co2e = total["co2_kg"] + total["embodied_kg"]
    assert rows["training"]["share_pct"] == pytest.approx((rows["training"]["co2_kg"] + rows["training"]["embodied_kg"])
                                                          / co2e * 100)
    assert all(r["basis"] == "measured" for r in doc["rows"][:-1])


def test_lifecycle_over_a_range_cutting_through_runs(store_url: str):
    since, until = T0 + 2 * H + 90 * S, T0 + 3 * H + 1800 * S  # neither edge on an hour for `until`
    from carbond.timeutil import iso

    doc = report_json("report", "lifecycle", "--store", store_url, "--project", "nlp", "--since", iso(since),
                      "--until", iso(until))
    rows = {r["phase"]: r for r in doc["rows"]}
    assert list(rows) == ["training", "inference", "TOTAL"]  # the eval run and the notebook are outside
    base, pruned, serve = expected_totals(SPECS[0], until), expected_totals(SPECS[1], until), expected_totals(SPECS[3], until)
    assert pruned["duration_h"] == pytest.approx(1740 / 3600)  # its last point before `until`
    approx_row(rows["training"], {**add(base, pruned), "runs": 2})
    approx_row(rows["inference"], {**serve, "duration_h": 1.0})


def test_compare_runs_and_jobs(store_url: str):
    doc = report_json("report", "compare", "--store", store_url, "--run", "bert-base-1", "bert-pruned-1", "bert-eval-1",
                      "--per", "samples")
    rows = {r["label"]: r for r in doc["rows"]}
    assert list(rows) == ["bert-base-1", "bert-pruned-1", "bert-eval-1"]
    approx_row(rows["bert-base-1"], {"energy_kwh": 0.625, "co2_kg": 0.25, "unit_samples": 72000.0,
                                     "energy_j_per_samples": 31.25, "metric_accuracy": 0.90, "energy_change_pct": 0.0})
    approx_row(rows["bert-pruned-1"], {"energy_kwh": 0.125, "energy_j_per_samples": 15.625, "energy_change_pct": -50.0,
                                       "co2_change_pct": -50.0, "metric_accuracy_change_pct": (0.89 - 0.90) / 0.90 * 100})
    assert rows["bert-pruned-1"]["tags"] == "variant=pruned-30" and rows["bert-eval-1"]["energy_j_per_samples"] is None
    assert [rows[r]["pareto"] for r in rows] == ["yes", "yes", None]
    jobs = report_json("report", "compare", "--store", store_url, "--job", "bert-pruned", "bert", "--baseline", "bert",
                       "--metric", "loss", "--metric-goal", "min")
    rows = {r["label"]: r for r in jobs["rows"]}
    approx_row(rows["bert-pruned"], {"runs": 1, "energy_kwh": 0.125, "energy_change_pct": -80.0, "metric_loss": 0.32})
    assert jobs["meta"]["baseline"] == "bert" and [rows[r]["pareto"] for r in rows] == ["yes", "yes"]


def test_the_timeline_ends_at_the_measured_total(store_url: str):
    from carbond.reports.data import Selection, load

    store = open_store(store_url, readonly=True)
    try:
        loaded = load(store, Selection(where=(("project", ("nlp",)),)), timeline=True)
    finally:
        store.close()
    total_g = sum(r.totals["co2_g"] for r in loaded.runs)
    assert loaded.timeline[0][1] == 0.0 and loaded.timeline[-1][1] == pytest.approx(total_g, rel=1e-9)
    assert [t for t, _ in loaded.timeline] == sorted(t for t, _ in loaded.timeline)
    assert total_g == pytest.approx(368.0)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]
        self.urls += found
        if tag == "img":
            self.images += found


def test_html_reports_are_self_contained(store_url: str, tmp_path: Path):
    from matplotlib.image import imread

    scenario = tmp_path / "s.toml"
    scenario.write_text('[factors]\nzone = "FR"\n[deployment]\ndays = 30\n[inference]\nrequests_per_day = 1000\n')
    for name, args, n_images in (
            ("l.html", ("report", "lifecycle", "--project", "nlp", "--scenario", str(scenario)), 3),
            ("c.html", ("report", "compare", "--run", "bert-base-1", "bert-pruned-1"), 2)):
        out = tmp_path / name
        proc = carbond_reports(*args, "--store", store_url, "--config", os.devnull, "--format", "html", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        page = _Page()
        page.feed(out.read_text())
        assert len(page.images) == n_images and page.urls == page.images
        assert all(u.startswith("data:image/png;base64,") for u in page.images)
        for url in page.images:
            assert imread(io.BytesIO(base64.b64decode(url.split(",", 1)[1])), format="png").std() > 0.01
    lifecycle = json.loads(carbond_reports("report", "lifecycle", "--project", "nlp", "--scenario", str(scenario),
                                           "--store", store_url, "--config", os.devnull, "--format", "json").stdout)
    (projected,) = [r for r in lifecycle["rows"] if r["basis"] == "projected"]
    # measured: 0.1 kWh for 7200 requests; projected 30 days × 1000 requests/day
    assert projected["phase"] == "inference" and projected["energy_kwh"] == pytest.approx(0.1 / 7200 * 30_000)


def test_bad_input(store_url: str, tmp_path: Path):
    proc = carbond_reports("report", "lifecycle", "--store", store_url, "--config", os.devnull, "--project", "nl")
    assert proc.returncode == 2 and "no project 'nl'" in proc.stderr and "projects there: nlp, vision" in proc.stderr
    proc = carbond_reports("report", "compare", "--store", store_url, "--config", os.devnull, "--run", "bert-base-1", "x")
    assert proc.returncode == 2 and "no run 'x'" in proc.stderr and "bert-base-1" in proc.stderr
    proc = carbond_reports("report", "compare", "--store", store_url, "--config", os.devnull, "--job", "nope")
    assert proc.returncode == 2 and "jobs there: bert, bert-eval, bert-pruned, bert-serve, notebook, resnet" in proc.stderr
    proc = carbond_reports("report", "lifecycle", "--store", store_url, "--config", os.devnull, "--project", "nlp",
                           "--since", "2031-01-01")
    assert proc.returncode == 0 and proc.stdout == "" and "no data for project 'nlp'" in proc.stderr
    proc = carbond_reports("report", "compare", "--store", store_url, "--config", os.devnull, "--run", "bert-base-1",
                           "--until", "2000-01-01", "--format", "json")
    assert proc.returncode == 0 and "no data for run(s) bert-base-1" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[development]\nhours = 10\nteam_size = 2\nworkstation_powr_w = 100\n")
    proc = carbond_reports("report", "lifecycle", "--store", store_url, "--config", os.devnull, "--scenario", str(bad))
    assert proc.returncode == 2 and "[development] workstation_powr_w: unknown key; did you mean workstation_power_w" in proc.stderr
    proc = carbond_reports("report", "compare", "--store", store_url, "--config", os.devnull, "--run", "bert-base-1",
                           "--per", "tokens")
    assert proc.returncode == 2 and "logged units: samples" in proc.stderr
