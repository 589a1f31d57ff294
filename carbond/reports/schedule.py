"""Scheduled reports (``[[reports]]`` in the config) and the SQLite rollup refresh, for the daemon.

Each ``[[reports]]`` table becomes a :class:`ReportJob`; :func:`schedule_reports` adds one
APScheduler ``CronTrigger`` job per report (UTC). A run starts ``python -m carbond.reports report
KIND ...`` as a child process with the daemon's effective settings in its environment (so
pandas and matplotlib never load into the daemon, and a crash or hang of a report stays in
the child), writes ``OUT_DIR/NAME-YYYYmmddTHHMMSSZ.EXT`` atomically, keeps the newest ``keep``
files, and logs the outcome. A failing report is logged and never raises into the scheduler.

``[[reports]]`` keys (required: name, kind, cron, out_dir)::

    [[reports]]
    name = "weekly-bert"            # letters, digits, _ . - (file names, job id); unique
    kind = "lifecycle"              # lifecycle | compare
    cron = "0 6 * * mon"            # crontab: minute hour day month day_of_week, in UTC
    out_dir = "/var/lib/carbond/reports"   # absolute; created when missing
    format = "html"                 # table | csv | json | md | html (default html)
    since = "-7d"                   # optional, relative times are taken when the report runs
    until = ""                      # optional
    project = "bert-ft"             # lifecycle only
    scenario = "/etc/carbond/bert-scenario.toml"   # lifecycle only, absolute
    runs = ["run-a", "run-b"]       # compare: runs or jobs (one of them)
    jobs = ["bert-ft", "bert-ft-pruned"]
    baseline = "bert-ft"            # compare only
    per = "samples"                 # compare only
    metric = "accuracy"             # compare only
    metric_goal = "max"             # compare only: max | min
    keep = 0                        # newest files to keep (0: all)
    timeout_s = 600                 # the child is killed after this long
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carbond.errors import ConfigError, UsageError
from carbond.reports.formats import EXTENSIONS, FORMATS

log = logging.getLogger(__name__)

KINDS = ("lifecycle", "compare")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ROLLUP_EVERY_S = 600.0


@dataclass(frozen=True)
class ReportJob:
    name: str
    kind: str
    cron: str
    out_dir: str
    format: str = "html"
    since: str = ""
    until: str = ""
    project: str = ""
    scenario: str = ""
    runs: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    baseline: str = ""
    per: str = ""
    metric: str = ""
    metric_goal: str = "max"
    keep: int = 0
    timeout_s: float = 600.0

    @property
    def job_id(self) -> str:
        return f"report:{self.name}"

    def arguments(self) -> list[str]:
        """``report KIND ...`` arguments of ``python -m carbond.reports`` (without --format/--out)."""
        args = ["report", self.kind]
        for flag, value in (("--since", self.since), ("--until", self.until), ("--project", self.project),
                            ("--scenario", self.scenario), ("--baseline", self.baseline), ("--per", self.per),
                            ("--metric", self.metric)):
            if value:
                args.append(f"{flag}={value}")
        if self.kind == "compare":
            args += ["--metric-goal", self.metric_goal]
            args += ["--run", *self.runs] if self.runs else ["--job", *self.jobs]
        return args


# key → (kind, required); kinds: str, strs (array of strings), int, pos (number > 0)
_KEYS: dict[str, tuple[str, bool]] = {
    "name": ("str", True), "kind": ("str", True), "cron": ("str", True), "out_dir": ("str", True),
    "format": ("str", False), "since": ("str", False), "until": ("str", False), "project": ("str", False),
    "scenario": ("str", False), "runs": ("strs", False), "jobs": ("strs", False), "baseline": ("str", False),
    "per": ("str", False), "metric": ("str", False), "metric_goal": ("str", False), "keep": ("int", False),
    "timeout_s": ("pos", False),
}
_COMPARE_ONLY = ("runs", "jobs", "baseline", "per", "metric", "metric_goal")
_LIFECYCLE_ONLY = ("project", "scenario")


def _value(label: str, key: str, raw: Any) -> Any:
    kind = _KEYS[key][0]
    if kind == "str":
        if not isinstance(raw, str):
            raise ConfigError(f"{label} {key}: expected a string, got {raw!r}")
        return raw.strip()
    if kind == "strs":
        if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v.strip() for v in raw):
            raise ConfigError(f"{label} {key}: expected a non-empty array of names, got {raw!r}")
        return tuple(v.strip() for v in raw)
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise ConfigError(f"{label} {key}: expected an integer 0 or greater, got {raw!r}")
        return raw
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0 or raw == float("inf"):
        raise ConfigError(f"{label} {key}: expected a number greater than 0, got {raw!r}")
    return float(raw)


def cron_trigger(expression: str) -> Any:
    """APScheduler's ``CronTrigger`` for a 5-field crontab line, in UTC (ValueError when invalid)."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(expression, timezone="UTC")


def _one(i: int, raw: Any, where: str) -> ReportJob:
    label = f"{where} #{i + 1}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: must be a table ([[reports]])")
    if isinstance(raw.get("name"), str):
        label += f" ({raw['name']})"
    for key in raw:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), list(_KEYS), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{label} {key}: unknown key{hint} (valid: {', '.join(_KEYS)})")
    for key, (_, required) in _KEYS.items():
        if required and key not in raw:
            raise ConfigError(f"{label} {key}: required key is missing")
    v = {key: _value(label, key, value) for key, value in raw.items()}
    if not _NAME.match(v["name"]):
        raise ConfigError(f"{label} name: use letters, digits, _ . - (it names files and the job), got {v['name']!r}")
    if v["kind"] not in KINDS:
        raise ConfigError(f"{label} kind: must be one of {', '.join(KINDS)}, got {v['kind']!r}")
    if v.get("format", "html") not in FORMATS:
        raise ConfigError(f"{label} format: must be one of {', '.join(FORMATS)}, got {v['format']!r}")
    if v.get("metric_goal", "max") not in ("max", "min"):
        raise ConfigError(f"{label} metric_goal: must be max or min, got {v['metric_goal']!r}")
    try:
        cron_trigger(v["cron"])
    except ValueError as exc:
        raise ConfigError(f"{label} cron: {v['cron']!r} is not a crontab expression (minute hour day month "
                          f"day_of_week, UTC): {exc}") from None
    for key in ("out_dir", "scenario"):
        if v.get(key) and not Path(v[key]).is_absolute():
            raise ConfigError(f"{label} {key}: must be an absolute path, got {v[key]!r}")
    if not v["out_dir"]:
        raise ConfigError(f"{label} out_dir: must not be empty")
    for key in ("since", "until"):
        if v.get(key):
            from carbond.timeutil import parse_time

            try:
                parse_time(v[key], name=key)
            except UsageError as exc:
                raise ConfigError(f"{label} {exc}") from None
    wrong = _LIFECYCLE_ONLY if v["kind"] == "compare" else _COMPARE_ONLY
    for key in wrong:
        if key in raw:
            raise ConfigError(f"{label} {key}: only for kind = {'lifecycle' if v['kind'] == 'compare' else 'compare'}")
    if v["kind"] == "compare" and ("runs" in v) == ("jobs" in v):
        raise ConfigError(f"{label} runs: kind = compare needs exactly one of runs or jobs")
    return ReportJob(**v)


def parse_reports(raw_list: Any, where: str = "[[reports]]") -> tuple[ReportJob, ...]:
    """Validate the ``[[reports]]`` array of tables; :class:`ConfigError` naming the entry and key."""
    if raw_list is None:
        return ()
    if not isinstance(raw_list, list):
        raise ConfigError(f"{where}: must be an array of tables ([[reports]]), got {type(raw_list).__name__}")
    jobs = tuple(_one(i, raw, where) for i, raw in enumerate(raw_list))
    seen: set[str] = set()
    for i, job in enumerate(jobs):
        if job.name in seen:
            raise ConfigError(f"{where} #{i + 1} ({job.name}) name: another report already has this name")
        seen.add(job.name)
    return jobs


# --- running ------------------------------------------------------------------------------------------------------


def child_env(settings: Any, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a report child: the daemon's effective settings as ``CARBOND_*`` variables."""
    from carbond.config import SPECS

    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("CARBOND_")}
    env["CARBOND_CONFIG"] = os.devnull  # everything comes from the variables below
    for spec in SPECS:
        value = getattr(getattr(settings, spec.section), spec.key)
        env[spec.env_names[0]] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _prune(job: ReportJob) -> None:
    if job.keep <= 0:
        return
    files = sorted(Path(job.out_dir).glob(f"{job.name}-*.{EXTENSIONS[job.format]}"))
    for old in files[:-job.keep]:
        try:
            old.unlink()
        except OSError as exc:
            log.warning("scheduled report %s: cannot remove old file %s: %s", job.name, old, exc.strerror)


def run_report_job(job: ReportJob, settings: Any, *, python: str = sys.executable, now: datetime | None = None) -> Path | None:
    """Run one scheduled report now; the file written, or None (no data, or failed — logged). Never raises."""
    try:
        out_dir = Path(job.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        target = out_dir / f"{job.name}-{stamp}.{EXTENSIONS[job.format]}"
        cmd = [python, "-m", "carbond.reports", *job.arguments(), "--format", job.format, "--out", str(target)]
        proc = subprocess.run(cmd, env=child_env(settings), capture_output=True, text=True, timeout=job.timeout_s,
                              stdin=subprocess.DEVNULL, cwd=str(out_dir))
        tail = proc.stderr.strip().splitlines()[-3:]
        if proc.returncode != 0:
            log.error("scheduled report %s failed (exit %d): %s", job.name, proc.returncode, " | ".join(tail) or "no output")
            return None
        if not target.exists():
            log.info("scheduled report %s: %s", job.name, " | ".join(tail) or "no data, no file written")
            return None
        log.info("scheduled report %s wrote %s", job.name, target)
        _prune(job)
        return target
    except subprocess.TimeoutExpired:
        log.error("scheduled report %s: killed after %gs (timeout_s)", job.name, job.timeout_s)
    except Exception:  # a report must never take the daemon's scheduler down
        log.exception("scheduled report %s failed", job.name)
    return None


def schedule_reports(scheduler: Any, reports: Sequence[ReportJob], settings: Any, store_factory: Any = None) -> list[str]:
    """Add one cron job per report to an APScheduler 3 scheduler; returns the job ids.

    Idempotent, so a reload calls it again with the new settings: report jobs no longer
    configured are removed, the others replaced. ``store_factory`` is not used: each report
    runs in a child process that opens the store itself from ``settings`` (accepted so the
    daemon may pass one).
    """
    wanted = {job.job_id for job in reports}
    for existing in list(scheduler.get_jobs()):
        if existing.id.startswith("report:") and existing.id not in wanted:
            scheduler.remove_job(existing.id)
    ids = []
    for job in reports:
        scheduler.add_job(run_report_job, cron_trigger(job.cron), args=(job, settings), id=job.job_id,
                          name=f"report {job.name}", max_instances=1, coalesce=True, misfire_grace_time=300,
                          replace_existing=True)
        ids.append(job.job_id)
    return ids


def refresh_rollups_safely(path: str) -> None:
    """Fold new points into the SQLite rollups; logged, never raised."""
    from carbond.reports import rollup

    try:
        stats = rollup.refresh(path)
        if stats.rows_scanned:
            log.debug("rollups of %s: %d new points folded", path, stats.rows_scanned)
    except Exception as exc:
        log.warning("refreshing the report rollups of %s failed: %s", path, exc)


def schedule_rollups(scheduler: Any, settings: Any, every_s: float = ROLLUP_EVERY_S) -> str | None:
    """For a SQLite store: refresh the report rollups every ``every_s`` (first after a minute); the job id."""
    from carbond.store.urls import parse_store_url

    parsed = parse_store_url(settings.store.url)
    if parsed.kind != "sqlite":
        return None
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler.add_job(refresh_rollups_safely, IntervalTrigger(seconds=every_s), args=(str(parsed.path),), id="report-rollups",
                      name="report rollups", max_instances=1, coalesce=True, replace_existing=True,
                      next_run_time=datetime.now(UTC) + timedelta(seconds=min(60.0, every_s)))
    return "report-rollups"
