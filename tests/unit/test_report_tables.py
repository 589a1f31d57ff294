"""Lifecycle and compare tables from known runs: exact numbers, projections, baselines, Pareto."""

from __future__ import annotations

import pytest

pytest.importorskip("pandas")

from carbond.errors import ConfigError, UsageError
from carbond.jobs_cli import RunSummary
from carbond.reports import compare as cmp
from carbond.reports.data import runs_frame
from carbond.reports.estimate import resolve_factors
from carbond.reports.lifecycle import lifecycle_rows
from carbond.reports.scenario import parse_scenario

S = 1_000_000_000
KWH = 3.6e6


def run(run_id: str, phase: str, hours: float, kwh: float, *, co2_g: float = 0.0, water_l: float = 0.0,
        embodied_g: float = 0.0, job: str = "", units: dict | None = None, metrics: dict | None = None,
        tags: dict | None = None, ended_s: float = 0.0) -> RunSummary:
    ended = int((ended_s or hours * 3600) * S)
    return RunSummary(run_id, job or run_id, "p", phase, "finished", ["h"], ended - int(hours * 3600 * S), ended,
                      {"energy_j": kwh * KWH, "co2_g": co2_g, "water_l": water_l, "embodied_g": embodied_g},
                      dict(units or {}), dict(metrics or {}), tags=dict(tags or {}))


RUNS = [
    run("t1", "training", 2.0, 4.0, co2_g=1600.0, water_l=12.0, embodied_g=100.0),
    run("t2", "training", 1.0, 2.0, co2_g=800.0, water_l=6.0, embodied_g=50.0),
    run("v1", "validation", 0.5, 0.5, co2_g=200.0, water_l=1.5, embodied_g=10.0),
    run("i1", "inference", 1.0, 1.0, co2_g=400.0, water_l=3.0, embodied_g=40.0, units={"requests": 2000}),
    run("x1", "distill", 0.25, 0.5, co2_g=200.0, water_l=1.5, embodied_g=0.0),
]


def by_label(rows):
    return {(r["phase"], r["basis"]): r for r in rows}


def test_measured_rows_sum_runs_by_phase_in_lifecycle_order():
    rows = lifecycle_rows(runs_frame(RUNS), None, None)
    assert [(r["phase"], r["basis"]) for r in rows] == [
        ("training", "measured"), ("validation", "measured"), ("inference", "measured"), ("distill", "measured"),
        ("TOTAL", "measured")]
    t = by_label(rows)[("training", "measured")]
    assert (t["runs"], t["duration_h"], t["energy_kwh"], t["co2_kg"], t["water_l"], t["embodied_kg"]) == pytest.approx(
        (2, 3.0, 6.0, 2.4, 18.0, 0.15))
    assert "400 gCO2e/kWh" in t["factors"] and "3 L/kWh" in t["factors"]
    total = rows[-1]
    assert total["energy_kwh"] == pytest.approx(8.0) and total["co2_kg"] == pytest.approx(3.2)
    assert total["embodied_kg"] == pytest.approx(0.2) and total["runs"] == 5 and total["share_pct"] == 100.0
    assert t["share_pct"] == pytest.approx((2.4 + 0.15) / (3.2 + 0.2) * 100)
    assert sum(r["share_pct"] for r in rows[:-1]) == pytest.approx(100.0)


SCENARIO = {
    "factors": {"intensity_g_per_kwh": 100.0, "pue": 1.5, "wue_site_l_per_kwh": 1.0, "wue_source_l_per_kwh": 2.0},
    "development": {"hours": 100, "team_size": 4, "workstation_power_w": 250, "workstation_embodied_kg": 876.6,
                    "workstation_lifetime_years": 1},
    "deployment": {"days": 100, "servers": 2, "server_power_w": 500},
    "inference": {"requests_per_day": 1000},
    "retraining": {"every_days": 30, "fraction": 0.5},
    "phases": [{"name": "labelling", "energy_kwh": 10, "hours": 20, "embodied_kg": 1}],
}


def test_projected_rows_from_a_scenario():
    sc = parse_scenario(SCENARIO, "s.toml")
    f = resolve_factors(intensity_g_per_kwh=100.0, pue=1.5, wue_site_l_per_kwh=1.0, wue_source_l_per_kwh=2.0)
    rows = by_label(lifecycle_rows(runs_frame(RUNS), sc, f))
    dev = rows[("development", "projected")]
    # 100 h × 4 × 250 W = 100 kWh; PUE 1 for offices; no site water; embodied 4 × 100 h × 876.6 kg / 8766 h
    assert (dev["energy_kwh"], dev["co2_kg"], dev["water_l"], dev["embodied_kg"], dev["duration_h"]) == pytest.approx(
        (100.0, 10.0, 200.0, 40.0, 400.0))
    dep = rows[("deployment", "projected")]
    assert (dep["energy_kwh"], dep["co2_kg"], dep["water_l"]) == pytest.approx((2400.0, 360.0, 2400 * (1 + 1.5 * 2)))
    inf = rows[("inference", "projected")]
    # measured: 1 kWh / 2000 requests = 0.5 Wh/request; 1000/day × 100 days; embodied 40 g / 2000 requests each
    assert (inf["energy_kwh"], inf["co2_kg"], inf["embodied_kg"]) == pytest.approx((50.0, 7.5, 2.0))
    assert "0.5 Wh/request measured over 1 inference runs" in inf["factors"]
    ret = rows[("training (retraining ×3)", "projected")]
    # 3 retrainings × 0.5 × the measured training (6 kWh, 0.15 kg embodied, 3 h)
    assert (ret["energy_kwh"], ret["co2_kg"], ret["embodied_kg"], ret["duration_h"]) == pytest.approx((9.0, 1.35, 0.225, 4.5))
    lab = rows[("labelling", "projected")]
    assert (lab["energy_kwh"], lab["co2_kg"], lab["embodied_kg"]) == pytest.approx((10.0, 1.5, 1.0))
    every = lifecycle_rows(runs_frame(RUNS), sc, f)
    assert every[-1]["energy_kwh"] == pytest.approx(8.0 + 100 + 2400 + 50 + 9 + 10)
    assert [r["phase"] for r in every[:-1]] == ["development", "training", "training (retraining ×3)", "validation",
                                                "deployment", "inference", "inference", "distill", "labelling"]


def test_projections_without_measurements_need_the_scenario_values():
    sc = parse_scenario({"deployment": {"days": 10}, "inference": {"requests_per_day": 5}}, "s.toml")
    f = resolve_factors(intensity_g_per_kwh=100.0, pue=1.0)
    with pytest.raises(ConfigError, match=r"\[inference\] energy_per_request_wh: required"):
        lifecycle_rows(runs_frame([]), sc, f)
    sc = parse_scenario({"deployment": {"days": 10}, "retraining": {"every_days": 5}}, "s.toml")
    with pytest.raises(ConfigError, match=r"\[retraining\] energy_kwh: required"):
        lifecycle_rows(runs_frame([]), sc, f)
    sc = parse_scenario({"deployment": {"days": 10}, "inference": {"requests_per_day": 5, "energy_per_request_wh": 2}},
                        "s.toml")
    (inf, total) = lifecycle_rows(runs_frame([]), sc, f)
    assert inf["energy_kwh"] == pytest.approx(0.1) and total["energy_kwh"] == pytest.approx(0.1)


# --- compare -------------------------------------------------------------------------------------------------------

VARIANTS = [
    run("base", "training", 2.0, 4.0, co2_g=1600, units={"samples": 1000}, metrics={"accuracy": 0.90, "loss": 0.3},
        tags={"variant": "base"}),
    run("pruned", "training", 1.0, 2.0, co2_g=800, units={"samples": 1000}, metrics={"accuracy": 0.89, "loss": 0.35},
        tags={"variant": "pruned-30"}),
    run("quant", "training", 1.0, 3.0, co2_g=1200, units={"samples": 2000}, metrics={"accuracy": 0.85, "loss": 0.5},
        tags={"variant": "int8"}),
    run("bad", "training", 1.0, 5.0, co2_g=2000, units={"samples": 1000}, metrics={"accuracy": 0.80}),
]


def test_compare_runs_against_a_baseline_per_unit():
    items = cmp.run_items(VARIANTS, ["base", "pruned", "quant", "bad"])
    c = cmp.compare(items, kind="run", per="samples")
    rows = {r["label"]: r for r in c.rows}
    assert rows["base"]["energy_j_per_samples"] == pytest.approx(4 * KWH / 1000)
    assert rows["pruned"]["energy_change_pct"] == pytest.approx(-50.0)
    assert rows["quant"]["energy_change_pct"] == pytest.approx(-62.5)  # 1.5 kWh per 1000 samples vs 4
    assert rows["quant"]["co2_change_pct"] == pytest.approx(-62.5)
    assert rows["pruned"]["metric_accuracy_change_pct"] == pytest.approx((0.89 - 0.90) / 0.90 * 100)
    assert [rows[k]["pareto"] for k in ("base", "pruned", "quant", "bad")] == ["yes", "yes", "yes", "no"]
    assert c.metric == "accuracy" and c.baseline == 0 and rows["pruned"]["tags"] == "variant=pruned-30"
    assert "baseline: base" in c.notes[0]


def test_compare_totals_with_another_baseline_and_a_metric_to_minimise():
    items = cmp.run_items(VARIANTS, ["base", "pruned", "quant"])
    c = cmp.compare(items, kind="run", baseline="pruned", metric="loss", maximize=False)
    rows = {r["label"]: r for r in c.rows}
    assert rows["base"]["energy_change_pct"] == pytest.approx(100.0) and rows["pruned"]["energy_change_pct"] == 0.0
    assert [rows[k]["pareto"] for k in ("base", "pruned", "quant")] == ["yes", "yes", "no"]


def test_compare_jobs_sums_their_runs():
    runs = [run("a1", "training", 1, 1.0, job="A", units={"tokens": 10}, metrics={"accuracy": 0.5}, ended_s=10),
            run("a2", "training", 1, 2.0, job="A", units={"tokens": 30}, metrics={"accuracy": 0.7}, ended_s=20),
            run("b1", "training", 1, 1.0, job="B", units={"tokens": 40}, metrics={"accuracy": 0.6})]
    c = cmp.compare(cmp.job_items(runs, ["A", "B"]), kind="job", per="tokens")
    a, b = c.rows
    assert (a["runs"], a["energy_kwh"], a["unit_tokens"], a["metric_accuracy"]) == (2, pytest.approx(3.0), 40.0, 0.7)
    assert b["energy_change_pct"] == pytest.approx((1 / 40 - 3 / 40) / (3 / 40) * 100)


def test_compare_errors_list_what_exists():
    items = cmp.run_items(VARIANTS, ["base", "pruned"])
    with pytest.raises(UsageError, match=r"--per tokens: .* logged units: samples"):
        cmp.compare(items, kind="run", per="tokens")
    with pytest.raises(UsageError, match=r"--metric f1: .* logged metrics: accuracy, loss"):
        cmp.compare(items, kind="run", metric="f1")
    with pytest.raises(UsageError, match="--baseline 'quant' is not one of the compared runs: base, pruned"):
        cmp.compare(items, kind="run", baseline="quant")


def test_pareto_front():
    assert cmp.pareto_front([1, 2, 3, 2, None], [0.5, 0.9, 0.95, 0.8, 1.0]) == [True, True, True, False, None]
    assert cmp.pareto_front([1, 1], [0.5, 0.5]) == [True, True]  # ties do not dominate


def test_query_frame_keeps_the_aggregation_in_the_store(tmp_path):
    from carbond.reports.data import query_frame
    from carbond.store.base import Query, make_point
    from carbond.store.sqlite import SqliteStore

    t0 = 1_700_000_000 * S // (3600 * S) * (3600 * S)
    store = SqliteStore(tmp_path / "s.db")
    store.write([make_point("job", {"host": "h", "phase": phase, "run": "r"}, {"energy_j": e}, t0 + i * 1800 * S)
                 for i, (phase, e) in enumerate([("training", 1.0), ("training", 2.0), ("inference", 4.0)])])
    frame = query_frame(store, Query("job", ("energy_j",), "sum", group_by=("phase",), every_s=3600))
    store.close()
    assert list(frame.columns) == ["time", "phase", "energy_j"]
    assert frame.to_dict("list")["energy_j"] == [4.0, 3.0] and list(frame["phase"]) == ["inference", "training"]
    assert str(frame["time"].dt.tz) == "UTC"


def test_the_daemon_side_imports_no_pandas_or_matplotlib():
    import subprocess
    import sys

    code = ("import sys, carbond, carbond.reports.schedule, carbond.reports.rollup, carbond.reports.cli; "
            "carbond.estimate; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'matplotlib', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_the_daemon_and_the_cli_parser_leave_the_renderer_unloaded():
    """render brings ``html`` and its entity table (about 0.5 MB of the daemon's RSS): loaded only to render."""
    import subprocess
    import sys

    code = ("import sys, carbond.cli, carbond.daemon, carbond.reports.schedule, carbond.reports.rollup; "
            "carbond.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m in ('html', 'html.entities', 'carbond.reports.render')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
    from carbond.reports import render
    from carbond.reports.formats import EXTENSIONS, FORMATS

    assert render.FORMATS is FORMATS and set(EXTENSIONS) == set(FORMATS)
