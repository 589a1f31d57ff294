"""Every query of every Grafana dashboard (panels, annotations, variables) against a real InfluxDB 1.6.7 that
real daemons filled: two hosts (one with two simulated GPUs, one in another region) and tagged work on each.

Grafana itself does not run here: its macros are substituted the way its InfluxDB data source does
(``$timeFilter`` → ``time > now() - 1h``, ``$__interval`` → ``10s``, variables → "All" (``.*``), one value
present in the data, or several values as a regex group), then each query must return at least one value.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import grafana, influx_servers
from fakes.influx_servers import Influxd

from tests.conftest import Carbond, wait_for

influx_server = influx_servers.influx_server
BURN = "import time\nt = time.process_time() + {s}\nwhile time.process_time() < t: pass"
TOKEN = uuid.uuid4().hex[:6]  # job names unique to this run: the daemons also see other suites' tagged processes
WORK = [  # (daemon index, job, project, phase)
    (0, f"train-a-{TOKEN}", "proj-x", "training"),
    (1, f"eval-b-{TOKEN}", "proj-y", "validation"),
]
PREFERRED = {"host": "gpu-node-1", "project": "proj-x", "job": WORK[0][1], "phase": "training"}


def _rows(server: Influxd, database: str, query: str) -> list[dict]:
    return server.series(query, database)


def _has_values(series: list[dict]) -> bool:
    return any(v is not None for s in series for row in s["values"] for v in row[1:])


class Fleet:
    """Two `carbond run` processes writing to one database, as a fleet does."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.daemons: list[tuple[Carbond, subprocess.Popen]] = []
        for i, (host, extra) in enumerate((("gpu-node-1", ["--simulate-gpus", "2"]),
                                           ("gpu-node-2", ["--simulate-gpus", "1", "--region", "FR"]))):
            (tmp / f"d{i}").mkdir()
            c = Carbond(tmp / f"d{i}")
            c.env.update({"CARBOND_DAEMON_HOST": host, "CARBOND_STORE_FLUSH_INTERVAL_S": "0.5"})
            proc = c.start("run", "--store", url, "--interval", "0.25", "--socket", c.socket, *extra)
            self.daemons.append((c, proc))

    def status(self, i: int) -> dict | None:
        c, _ = self.daemons[i]
        r = c("status", "--json", "--socket", c.socket)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def active_jobs(self, i: int) -> set[str] | None:
        status = self.status(i)
        return None if status is None else {r["job"] for r in status["runs"]}

    def track(self, i: int, job: str, project: str, phase: str, seconds: float) -> subprocess.Popen:
        c, _ = self.daemons[i]
        return subprocess.Popen([sys.executable, "-m", "carbond", "track", "--job", job, "--project", project, "--phase",
                                 phase, "--socket", c.socket, "--quiet", "--", sys.executable, "-c", BURN.format(s=seconds)],
                                env=c.env)

    def stop(self) -> None:
        for _, proc in self.daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.daemons:
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def filled(influx_server: Influxd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Influxd, str]]:
    """A database with ~25 s of two daemons' points, one finished run per host, and self-metrics in 3+ intervals."""
    database = influx_server.create_database("grafana")
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), influx_server.url(database))
    try:
        for i in range(2):
            wait_for(lambda i=i: fleet.status(i), timeout_s=60)
        tracked = [fleet.track(i, job, project, phase, 1.5) for i, job, project, phase in WORK]
        for t in tracked:
            assert t.wait(120) == 0
        ours = {job for _, job, _, _ in WORK}
        for i in range(2):  # our runs have ended (other tests' tagged processes may be running too)
            wait_for(lambda i=i: fleet.active_jobs(i) is not None and not fleet.active_jobs(i) & ours, timeout_s=60)
        # self-metrics every 10 s: three reports per daemon span at least two 10 s intervals
        wait_for(lambda: all(_rows(influx_server, database, f'SELECT count("rss_bytes") FROM "carbond" WHERE "host" = '
                                                            f"'gpu-node-{n}'")
                             and _rows(influx_server, database, f'SELECT count("rss_bytes") FROM "carbond" WHERE "host" = '
                                                                f"'gpu-node-{n}'")[0]["values"][0][1] >= 3
                             for n in (1, 2)), timeout_s=90, interval_s=0.5)
    finally:
        fleet.stop()
    yield influx_server, database
    influx_server.query(f'DROP DATABASE "{database}"')


def _variable_values(server: Influxd, database: str, dash: dict, chosen: dict[str, list[str] | str]) -> dict[str, list[str]]:
    """Each query variable's values, resolved in order with the values ``chosen`` so far (chained variables)."""
    out: dict[str, list[str]] = {}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        series = _rows(server, database, grafana.substitute(v["query"], {**chosen}))
        out[v["name"]] = [row[1] for s in series for row in s["values"]]
    return out


def _scenarios(server: Influxd, database: str, dash: dict) -> dict[str, dict[str, list[str] | str]]:
    names = [v["name"] for v in dash["templating"]["list"] if v["type"] == "query"]
    every = {n: ".*" for n in names}  # "All" is the allValue, unescaped
    one: dict[str, list[str] | str] = {}
    for name in names:  # one value of each, the later variables filtered by the earlier choices
        values = _variable_values(server, database, dash, {**every, **one})[name]
        assert values, f"variable {name} has no values"
        # ours when offered: the daemons also tag processes of other tests running on this machine
        pick = PREFERRED.get(name) if PREFERRED.get(name) in values else values[0]
        one[name] = [grafana.regex_escape(pick)]
    several = {n: [grafana.regex_escape(x) for x in vals]
               for n, vals in _variable_values(server, database, dash, every).items()}
    return {"All": every, "one value each": one, "every value selected": several}


@pytest.mark.parametrize("name", sorted(grafana.dashboards()))
def test_every_query_of_the_dashboard_returns_data(filled, name):
    server, database = filled
    dash = grafana.dashboards()[name]
    queries = grafana.queries(name, dash)
    assert queries
    empty = []
    for label, values in _scenarios(server, database, dash).items():
        for q in queries:
            text = grafana.substitute(q.text, values)
            assert "$" not in text.replace("$/", ""), f"{q.where}: unsubstituted macro in {text}"
            series = _rows(server, database, text)  # raises on an InfluxQL error
            if not _has_values(series):
                empty.append(f"[{label}] {q.where}: {text}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_variables_list_what_the_daemons_wrote(filled):
    server, database = filled
    values = _variable_values(server, database, grafana.dashboards()["carbond-runs.json"],
                              {"host": ".*", "project": ".*", "job": ".*", "phase": ".*"})
    assert set(values["host"]) >= {"gpu-node-1", "gpu-node-2"}
    assert set(values["project"]) >= {"proj-x", "proj-y"}
    assert set(values["job"]) >= {job for _, job, _, _ in WORK}
    assert set(values["phase"]) >= {"training", "validation"}


def test_run_annotations_mark_each_run_once(filled):
    server, database = filled
    runs = grafana.dashboards()["carbond-runs.json"]
    (ends,) = [a for a in runs["annotations"]["list"] if a.get("name") == "Run ends"]
    text = grafana.substitute(ends["query"], {"host": ".*", "project": ".*", "job": ".*", "phase": ".*"})
    by_run: dict[tuple[str, str, str], int] = {}
    for series in _rows(server, database, text):
        cols = series["columns"]
        for column in [*ends["tagsColumn"].split(","), ends["textColumn"]]:
            assert column in cols  # Grafana maps annotation text and tags from these columns
        for row in series["values"]:
            rec = dict(zip(cols, row, strict=True))
            if rec["job"] not in {job for _, job, _, _ in WORK}:
                continue  # the daemons also attribute tagged processes of other tests running on this machine
            assert rec["status"] == "finished" and rec["energy_j"] > 0
            key = (series["tags"]["host"], rec["job"], rec["run"])
            by_run[key] = by_run.get(key, 0) + 1
    assert {job for _, job, _ in by_run} >= {job for _, job, _, _ in WORK}
    assert set(by_run.values()) == {1}  # one marker per run, however often its totals were written
