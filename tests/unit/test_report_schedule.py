"""``[[reports]]``: validation naming the key, report children, cron jobs on a real APScheduler scheduler."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carbond.config import load_settings
from carbond.errors import ConfigError
from carbond.reports import rollup
from carbond.reports.schedule import (
    ReportJob,
    child_env,
    parse_reports,
    run_report_job,
    schedule_reports,
    schedule_rollups,
)
from carbond.store.base import make_point
from carbond.store.sqlite import SqliteStore
from tests.conftest import wait_for

S = 1_000_000_000
T0 = 1_700_000_000 * S


def settings_for(url: str):
    return load_settings(os.devnull, {"store.url": url}, env={}).settings


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    store = SqliteStore(tmp_path / "s.db")
    tags = {"host": "h", "project": "demo", "job": "train", "phase": "training", "run": "r1", "status": "finished"}
    store.write([make_point("run", tags, {"duration_s": 3600.0, "energy_j": 3.6e6, "co2_g": 100.0}, T0)])
    store.close()
    return f"sqlite://{tmp_path}/s.db"


def test_parse_reports_and_arguments(tmp_path: Path):
    (lc, cp) = parse_reports([
        {"name": "weekly", "kind": "lifecycle", "cron": "0 6 * * mon", "out_dir": str(tmp_path), "project": "demo",
         "since": "-7d", "scenario": "/etc/carbond/s.toml"},
        {"name": "variants", "kind": "compare", "cron": "*/5 * * * *", "out_dir": str(tmp_path), "format": "json",
         "runs": ["a", "b"], "per": "samples", "keep": 3, "timeout_s": 60},
    ])
    assert lc == ReportJob("weekly", "lifecycle", "0 6 * * mon", str(tmp_path), since="-7d", project="demo",
                           scenario="/etc/carbond/s.toml")
    assert lc.arguments() == ["report", "lifecycle", "--since=-7d", "--project=demo", "--scenario=/etc/carbond/s.toml"]
    assert cp.arguments() == ["report", "compare", "--per=samples", "--metric-goal", "max", "--run", "a", "b"]
    assert cp.job_id == "report:variants" and cp.keep == 3 and cp.format == "json"
    assert parse_reports(None) == () and parse_reports([]) == ()


GOOD = {"name": "r", "kind": "lifecycle", "cron": "0 * * * *", "out_dir": "/tmp/reports"}


@pytest.mark.parametrize(("change", "message"), [
    ({"cron": "61 * * * *"}, r"#1 \(r\) cron: '61 \* \* \* \*' is not a crontab expression"),
    ({"cron": "every hour"}, r"#1 \(r\) cron:"),
    ({"kind": "weekly"}, r"#1 \(r\) kind: must be one of lifecycle, compare"),
    ({"format": "pdf"}, r"#1 \(r\) format: must be one of"),
    ({"out_dir": "reports"}, r"#1 \(r\) out_dir: must be an absolute path"),
    ({"outdir": "/x"}, r"#1 \(r\) outdir: unknown key; did you mean out_dir"),
    ({"keep": -1}, r"#1 \(r\) keep: expected an integer 0 or greater"),
    ({"timeout_s": 0}, r"#1 \(r\) timeout_s: expected a number greater than 0"),
    ({"since": "last week"}, r"#1 \(r\) since: 'last week' is neither ISO 8601"),
    ({"runs": ["a"]}, r"#1 \(r\) runs: only for kind = compare"),
    ({"name": "a b"}, r"#1 \(a b\) name: use letters"),
    ({"kind": "compare"}, r"#1 \(r\) runs: kind = compare needs exactly one of runs or jobs"),
    ({"kind": "compare", "jobs": ["x"], "project": "p"}, r"#1 \(r\) project: only for kind = lifecycle"),
    ({"kind": "compare", "jobs": []}, r"#1 \(r\) jobs: expected a non-empty array"),
])
def test_errors_name_the_entry_and_key(change, message):
    with pytest.raises(ConfigError, match=r"^\[\[reports\]\] " + message):
        parse_reports([{**GOOD, **change}])


def test_structural_errors():
    with pytest.raises(ConfigError, match=r"#1: must be a table"):
        parse_reports(["x"])
    with pytest.raises(ConfigError, match=r"must be an array of tables"):
        parse_reports({"name": "x"})
    with pytest.raises(ConfigError, match=r"#1 \(x\) out_dir: required key is missing"):
        parse_reports([{"name": "x", "kind": "lifecycle", "cron": "0 * * * *"}])
    with pytest.raises(ConfigError, match=r"#2 \(r\) name: another report already has this name"):
        parse_reports([GOOD, GOOD])


def test_child_env_carries_the_effective_settings(store_url: str):
    env = child_env(settings_for(store_url), base={"PATH": "/bin", "CARBOND_STORE": "sqlite:///elsewhere.db"})
    assert env["CARBOND_STORE_URL"] == store_url and "CARBOND_STORE" not in env and env["PATH"] == "/bin"
    assert env["CARBOND_CONFIG"] == os.devnull and env["CARBOND_STORE_CREATE_DATABASE"] == "false"
    assert Path(env["PYTHONPATH"].split(os.pathsep)[0], "carbond", "reports").is_dir()


def test_a_report_child_writes_its_file_and_old_files_are_pruned(store_url: str, tmp_path: Path):
    pytest.importorskip("pandas")
    out = tmp_path / "out"
    job = ReportJob("demo", "lifecycle", "0 * * * *", str(out), format="json", project="demo", keep=2)
    settings = settings_for(store_url)
    paths = [run_report_job(job, settings, now=datetime(2026, 1, d, tzinfo=UTC)) for d in (1, 2, 3)]
    assert all(p is not None for p in paths)
    assert sorted(p.name for p in out.iterdir()) == ["demo-20260102T000000Z.json", "demo-20260103T000000Z.json"]
    assert '"energy_kwh": 1.0' in paths[-1].read_text()


def test_no_data_and_failures_are_logged_never_raised(store_url: str, tmp_path: Path, caplog):
    pytest.importorskip("pandas")
    caplog.set_level(logging.INFO, logger="carbond.reports.schedule")
    settings = settings_for(store_url)
    empty = ReportJob("empty", "lifecycle", "0 * * * *", str(tmp_path / "o"), format="csv", since="2030-01-01")
    assert run_report_job(empty, settings) is None and list((tmp_path / "o").iterdir()) == []
    assert "no data" in caplog.text
    broken = ReportJob("broken", "lifecycle", "0 * * * *", str(tmp_path / "o"), scenario=str(tmp_path / "missing.toml"))
    assert run_report_job(broken, settings) is None
    assert "scheduled report broken failed (exit 2)" in caplog.text and "missing.toml" in caplog.text
    unknown = ReportJob("unknown", "compare", "0 * * * *", str(tmp_path / "o"), runs=("nope",))
    assert run_report_job(unknown, settings) is None and "runs there: r1" in caplog.text
    hung = ReportJob("hung", "lifecycle", "0 * * * *", str(tmp_path / "o"), timeout_s=0.001)
    assert run_report_job(hung, settings) is None and "killed after" in caplog.text


def test_cron_jobs_fire_on_a_running_scheduler(store_url: str, tmp_path: Path, caplog):
    pytest.importorskip("pandas")
    from apscheduler.schedulers.background import BackgroundScheduler

    caplog.set_level(logging.INFO, logger="carbond.reports.schedule")
    jobs = parse_reports([
        {"name": "bad", "kind": "lifecycle", "cron": "0 0 1 1 *", "out_dir": str(tmp_path / "o"), "project": "nope"},
        {"name": "good", "kind": "lifecycle", "cron": "0 0 1 1 *", "out_dir": str(tmp_path / "o"), "format": "md"},
    ])
    scheduler = BackgroundScheduler(timezone="UTC")
    settings = settings_for(store_url)
    ids = schedule_reports(scheduler, jobs, settings)
    assert schedule_rollups(scheduler, settings, every_s=3600) == "report-rollups"
    scheduler.start()
    try:
        assert ids == ["report:bad", "report:good"]
        assert str(scheduler.get_job("report:good").trigger).startswith("cron[")
        now = datetime.now(UTC)
        for job_id in (*ids, "report-rollups"):  # fire now instead of waiting for the cron time
            scheduler.get_job(job_id).modify(next_run_time=now)
        wait_for(lambda: list((tmp_path / "o").glob("good-*.md")), timeout_s=120)
        wait_for(lambda: "scheduled report bad failed (exit 2)" in caplog.text, timeout_s=120)
        wait_for(lambda: rollup.watermark(SqliteStore(tmp_path / "s.db", readonly=True)._db) == 1, timeout_s=60)
        assert scheduler.running and scheduler.get_job("report:good") is not None
    finally:
        scheduler.shutdown(wait=True)
    assert "# Lifecycle footprint" in next((tmp_path / "o").glob("good-*.md")).read_text()


def test_rescheduling_replaces_and_removes_report_jobs(store_url: str, tmp_path: Path):
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start(paused=True)  # a reload happens on a running scheduler
    try:
        settings = settings_for(store_url)
        first = parse_reports([{**GOOD, "name": "a"}, {**GOOD, "name": "b"}])
        schedule_reports(scheduler, first, settings)
        schedule_rollups(scheduler, settings)
        second = parse_reports([{**GOOD, "name": "b", "cron": "30 2 * * *"}])
        assert schedule_reports(scheduler, second, settings) == ["report:b"]
        assert sorted(j.id for j in scheduler.get_jobs()) == ["report-rollups", "report:b"]
        assert "hour='2'" in str(scheduler.get_job("report:b").trigger)
    finally:
        scheduler.shutdown(wait=False)


def test_rollups_are_only_scheduled_for_sqlite():
    from apscheduler.schedulers.background import BackgroundScheduler

    assert schedule_rollups(BackgroundScheduler(), settings_for("influxdb+v1://localhost:8086/db")) is None

