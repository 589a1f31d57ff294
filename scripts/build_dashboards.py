#!/usr/bin/env python3
"""Build carbond's Grafana dashboards (deploy/grafana/dashboards/*.json) from this one description.

    python scripts/build_dashboards.py            # rewrite the JSON files
    python scripts/build_dashboards.py --check    # exit 1 when a file differs from what this script builds

Every panel queries InfluxDB 1.x with raw InfluxQL through a datasource template variable
(``${datasource}``), so the same files work provisioned from disk and imported through the UI
(no ``__inputs``/``${DS_X}`` placeholders, which only the import dialog resolves). Template
variables host/project/job/phase are multi-value with "All" = ``.*`` and are used as
``"tag" =~ /^$var$/``. Sums of per-interval fields (``energy_j``, ``co2_g``, ``water_l``) are exact
over any range; power by a tag is the sum of per-device (or per-run) means, via a subquery.
tests/integration/test_grafana_dashboards.py runs every query against a real InfluxDB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"
DS = {"type": "influxdb", "uid": "${datasource}"}
PROVISIONED_UID = "carbond-influxdb"  # deploy/grafana/provisioning/datasources/carbond.yaml
SCHEMA_VERSION = 39  # Grafana 10.x/11.x classic JSON model

HOST = '"host" =~ /^$host$/'
RUNS = '"host" =~ /^$host$/ AND "project" =~ /^$project$/ AND "job" =~ /^$job$/'
RUNS_PHASE = RUNS + ' AND "phase" =~ /^$phase$/'
T = "$timeFilter"
EVERY = "time($__interval)"

Panel = dict[str, Any]


# --- building blocks --------------------------------------------------------------------------------------------------


def target(query: str, ref: str = "A", fmt: str = "time_series", alias: str = "") -> dict[str, Any]:
    t: dict[str, Any] = {"refId": ref, "datasource": DS, "rawQuery": True, "query": query, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def _field_config(unit: str, decimals: int | None = None, custom: dict[str, Any] | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "palette-classic"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": []}


def timeseries(title: str, targets: list[dict[str, Any]], unit: str, *, w: int = 12, h: int = 8, desc: str = "",
               stack: bool = False, bars: bool = False) -> Panel:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 15,
              "showPoints": "never", "spanNulls": True, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": _field_config(unit, custom=custom), "w": w, "h": h,
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, query: str, unit: str, *, w: int = 4, h: int = 4, desc: str = "", decimals: int | None = None,
         calc: str = "lastNotNull") -> Panel:
    return {"type": "stat", "title": title, "description": desc, "datasource": DS, "targets": [target(query, fmt="table")],
            "fieldConfig": _field_config(unit, decimals), "w": w, "h": h,
            "options": {"reduceOptions": {"calcs": [calc], "fields": "", "values": False}, "colorMode": "value",
                        "graphMode": "none", "textMode": "auto", "justifyMode": "auto", "orientation": "auto"}}


def bargauge(title: str, query: str, unit: str, alias: str, *, w: int = 8, h: int = 8, desc: str = "") -> Panel:
    return {"type": "bargauge", "title": title, "description": desc, "datasource": DS,
            "targets": [target(query, alias=alias)], "fieldConfig": _field_config(unit), "w": w, "h": h,
            "options": {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}}


def piechart(title: str, query: str, unit: str, alias: str, *, w: int = 6, h: int = 8, desc: str = "") -> Panel:
    return {"type": "piechart", "title": title, "description": desc, "datasource": DS,
            "targets": [target(query, alias=alias)], "fieldConfig": _field_config(unit), "w": w, "h": h,
            "options": {"pieType": "donut", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                   "values": ["value", "percent"]}}}


def table(title: str, query: str, *, w: int = 12, h: int = 8, desc: str = "", sort_by: str = "") -> Panel:
    options: dict[str, Any] = {"showHeader": True, "cellHeight": "sm"}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return {"type": "table", "title": title, "description": desc, "datasource": DS, "targets": [target(query, fmt="table")],
            "fieldConfig": _field_config("none"), "w": w, "h": h, "options": options}


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "w": 24, "h": 1}


def layout(panels: list[Panel]) -> list[Panel]:
    """Ids in order and gridPos left to right, wrapping at 24 columns; a row panel starts a new line."""
    out, x, y, line_h = [], 0, 0, 0
    for pid, p in enumerate(panels, start=1):
        w, h = p.pop("w"), p.pop("h")
        if p["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        out.append({"id": pid, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **p})
        x, line_h = x + w, max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return out


def datasource_variable() -> dict[str, Any]:
    return {"type": "datasource", "name": "datasource", "label": "InfluxDB", "query": "influxdb", "regex": "",
            "hide": 0, "refresh": 1, "options": [],
            "current": {"selected": False, "text": "carbond InfluxDB", "value": PROVISIONED_UID}}


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"type": "query", "name": name, "label": label, "datasource": DS, "query": query, "definition": query,
            "refresh": 2, "regex": "", "sort": 1, "multi": True, "includeAll": True, "allValue": ".*", "hide": 0,
            "options": [], "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


def tag_values(measurement: str, key: str, where: str = "") -> str:
    return f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}"' + (f" WHERE {where}" if where else "")


VAR_HOST = query_variable("host", "Host", tag_values("host", "host"))
VAR_PROJECT = query_variable("project", "Project", tag_values("run", "project", HOST))
VAR_JOB = query_variable("job", "Job", tag_values("run", "job", f'{HOST} AND "project" =~ /^$project$/'))
VAR_PHASE = query_variable("phase", "Phase", tag_values("run", "phase", RUNS))
VAR_DAEMON_HOST = query_variable("host", "Host", tag_values("carbond", "host"))

BUILTIN_ANNOTATION = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
                      "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


def run_annotation(name: str, query: str, color: str, tags: str) -> dict[str, Any]:
    # both shapes: `target` for Grafana >= 9, the top-level fields for older versions
    return {"name": name, "datasource": DS, "enable": True, "hide": False, "iconColor": color,
            "target": {"refId": "Anno", "rawQuery": True, "fromAnnotations": True, "query": query,
                       "textColumn": "job", "tagsColumn": tags, "titleColumn": ""},
            "query": query, "textColumn": "job", "tagsColumn": tags}


def dashboard(uid: str, title: str, description: str, panels: list[Panel], variables: list[dict[str, Any]],
              annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["carbond"], "editable": True,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "graphTooltip": 1, "timezone": "",
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "fiscalYearStartMonth": 0, "liveNow": False,
        "timepicker": {}, "weekStart": "",
        "links": [{"type": "dashboards", "tags": ["carbond"], "asDropdown": True, "title": "carbond dashboards",
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "annotations": {"list": [BUILTIN_ANNOTATION, *(annotations or [])]},
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout(panels),
    }


def per_device_sum(measurement: str, where: str, by: str, inner: str, alias_field: str = "power_w") -> str:
    """Sum over the ``inner`` groups of each group's mean: e.g. power by kind = Σ devices' mean power."""
    return (f'SELECT sum("{alias_field}") FROM (SELECT mean("{alias_field}") AS "{alias_field}" FROM "{measurement}" '
            f'WHERE {where} AND {T} GROUP BY {EVERY}, {inner} fill(none)) WHERE {T} GROUP BY {EVERY}{by} fill(none)')


# --- dashboards -------------------------------------------------------------------------------------------------------


def overview() -> dict[str, Any]:
    panels = [
        row("Now and over the range"),
        stat("Power now", f'SELECT sum("power_w") FROM (SELECT last("power_w") AS "power_w" FROM "host" WHERE {HOST} AND {T} '
             'GROUP BY "host")', "watt", desc="Sum over the selected hosts of each host's last measured power."),
        stat("Energy", f'SELECT sum("energy_j") / 3600000 FROM "host" WHERE {HOST} AND {T}', "kwatth", decimals=3,
             desc="IT energy over the range (exact sum of per-interval energy_j)."),
        stat("CO₂e, operational", f'SELECT sum("co2_g") / 1000 FROM "host" WHERE {HOST} AND {T}', "masskg", decimals=3,
             desc="Energy × PUE × grid intensity, summed over the range."),
        stat("CO₂e, embodied", f'SELECT sum("embodied_g") / 1000 FROM "host" WHERE {HOST} AND {T}', "masskg", decimals=3,
             desc="Embodied carbon of the hosts and GPUs amortized over the measured time."),
        stat("Water", f'SELECT sum("water_l") FROM "host" WHERE {HOST} AND {T}', "litre", decimals=2,
             desc="On-site cooling water plus water consumed generating the electricity."),
        stat("Grid intensity", f'SELECT mean("intensity_g_per_kwh") FROM "host" WHERE {HOST} AND {T}', "suffix: gCO₂e/kWh",
             decimals=0, desc="Mean grid carbon intensity used over the range."),
        row("Power and energy"),
        timeseries("Power by device kind", [target(per_device_sum("device", HOST, ', "kind"', '"host", "device", "kind"'),
                                                   alias="$tag_kind")], "watt", stack=True,
                   desc="Sum of each device's mean power, by kind (cpu, gpu, ram)."),
        timeseries("Power by device", [target(f'SELECT mean("power_w") FROM "device" WHERE {HOST} AND {T} GROUP BY {EVERY}, '
                                              '"host", "device" fill(none)', alias="$tag_host $tag_device")], "watt"),
        timeseries("Energy per interval by device kind", [target(
            f'SELECT sum("energy_j") / 3600 FROM "device" WHERE {HOST} AND {T} GROUP BY {EVERY}, "kind" fill(none)',
            alias="$tag_kind")], "watth", bars=True, stack=True),
        piechart("Energy by device kind", f'SELECT sum("energy_j") / 3600000 FROM "device" WHERE {HOST} AND {T} GROUP BY "kind"',
                 "kwatth", "$tag_kind"),
        timeseries("Utilization", [target(f'SELECT mean("utilization_pct") FROM "device" WHERE {HOST} AND {T} GROUP BY '
                                          f'{EVERY}, "host", "device" fill(none)', alias="$tag_host $tag_device")],
                   "percent", w=6),
        row("Carbon and water"),
        timeseries("CO₂e rate", [target(f'SELECT mean("co2_g") / mean("interval_s") * 3600 FROM "host" WHERE {HOST} AND {T} '
                                        f'GROUP BY {EVERY}, "host" fill(none)', alias="$tag_host")], "suffix: gCO₂e/h",
                   desc="Operational emissions per hour: Σ co2_g / Σ interval_s in each interval."),
        timeseries("Cumulative CO₂e", [target(
            f'SELECT cumulative_sum(sum("co2_g")) AS "operational", cumulative_sum(sum("embodied_g")) AS "embodied" '
            f'FROM "host" WHERE {HOST} AND {T} GROUP BY {EVERY} fill(none)')], "massg"),
        timeseries("Grid carbon intensity", [target(
            f'SELECT mean("intensity_g_per_kwh") FROM "host" WHERE {HOST} AND {T} GROUP BY {EVERY}, "region", '
            '"intensity_source" fill(none)', alias="$tag_region ($tag_intensity_source)")], "suffix: gCO₂e/kWh"),
        timeseries("Water", [
            target(f'SELECT cumulative_sum(sum("water_l")) FROM "host" WHERE {HOST} AND {T} GROUP BY {EVERY} fill(none)',
                   alias="cumulative"),
            target(f'SELECT sum("water_l") FROM "host" WHERE {HOST} AND {T} GROUP BY {EVERY} fill(none)', ref="B",
                   alias="per interval")], "litre"),
        row("Runs"),
        timeseries("Power attributed to runs, by job", [target(
            per_device_sum("job", RUNS, ', "job"', '"host", "job", "run"'), alias="$tag_job")], "watt", stack=True,
            desc="The rest of the host's power is unattributed (idle, system, untagged work)."),
        timeseries("Unattributed power", [target(
            f'SELECT sum("unattributed_j") / sum("interval_s") FROM "host" WHERE {HOST} AND {T} GROUP BY {EVERY}, "host" '
            'fill(none)', alias="$tag_host")], "watt"),
        table("Devices", f'SELECT last("power_w") AS "power_w", last("utilization_pct") AS "utilization_pct", '
              f'sum("energy_j") / 3600000 AS "energy_kwh" FROM "device" WHERE {HOST} AND {T} GROUP BY "host", "device", '
              '"kind", "model", "source"', w=24, sort_by="energy_kwh",
              desc="source: counter (hardware energy counter), power (measured power), model (utilization model)."),
    ]
    return dashboard("carbond-overview", "carbond / Overview",
                     "Power, energy, carbon, intensity and water of the selected hosts.", panels,
                     [VAR_HOST, VAR_PROJECT, VAR_JOB])


def runs() -> dict[str, Any]:
    j = RUNS_PHASE
    panels = [
        row("Runs over the range"),
        stat("Runs", f'SELECT count("energy_j") FROM (SELECT max("energy_j") AS "energy_j" FROM "run" WHERE {j} AND {T} '
             'GROUP BY "host", "run")', "none", decimals=0, desc="Runs with a point in the range."),
        stat("Energy attributed", f'SELECT sum("energy_j") / 3600000 FROM "job" WHERE {j} AND {T}', "kwatth", decimals=4),
        stat("CO₂e, operational", f'SELECT sum("co2_g") FROM "job" WHERE {j} AND {T}', "massg", decimals=2),
        stat("CO₂e, embodied", f'SELECT sum("embodied_g") FROM "job" WHERE {j} AND {T}', "massg", decimals=2),
        stat("Water", f'SELECT sum("water_l") FROM "job" WHERE {j} AND {T}', "litre", decimals=3),
        stat("Power now", f'SELECT sum("power_w") FROM (SELECT last("power_w") AS "power_w" FROM "job" WHERE {j} AND {T} '
             'GROUP BY "host", "run")', "watt", desc="Sum of the runs' last attributed power."),
        row("By job, project and phase"),
        timeseries("Power by job", [target(per_device_sum("job", j, ', "job"', '"host", "job", "run"'), alias="$tag_job")],
                   "watt", stack=True),
        timeseries("Cumulative CO₂e by job", [target(
            f'SELECT cumulative_sum(sum("co2_g")) FROM "job" WHERE {j} AND {T} GROUP BY {EVERY}, "job" fill(none)',
            alias="$tag_job")], "massg"),
        bargauge("Energy by project", f'SELECT sum("energy_j") / 3600000 FROM "job" WHERE {j} AND {T} GROUP BY "project"',
                 "kwatth", "$tag_project"),
        bargauge("Energy by phase", f'SELECT sum("energy_j") / 3600000 FROM "job" WHERE {j} AND {T} GROUP BY "phase"',
                 "kwatth", "$tag_phase"),
        bargauge("CO₂e by job", f'SELECT sum("co2_g") FROM "job" WHERE {j} AND {T} GROUP BY "job"', "massg", "$tag_job"),
        timeseries("Energy per interval by device kind", [target(
            f'SELECT sum("cpu_energy_j") / 3600 AS "cpu", sum("gpu_energy_j") / 3600 AS "gpu", sum("ram_energy_j") / 3600 '
            f'AS "ram" FROM "job" WHERE {j} AND {T} GROUP BY {EVERY} fill(none)')], "watth", bars=True, stack=True, w=24),
        row("Top consumers"),
        table("Top runs by energy", f'SELECT top("energy_j", "run", 10) AS "energy_j", "co2_g", "water_l", "duration_s", '
              f'"job", "project", "phase", "host" FROM "run" WHERE {j} AND {T}', sort_by="energy_j",
              desc="The 10 runs with the most energy; a run's totals grow with each point, so its largest is its latest."),
        table("Finished runs", f'SELECT last("duration_s") AS "duration_s", last("energy_j") / 3600000 AS "energy_kwh", '
              f'last("co2_g") AS "co2_g", last("water_l") AS "water_l" FROM "run" WHERE {j} AND "status" <> \'running\' '
              f'AND {T} GROUP BY "host", "project", "job", "phase", "run", "status"', sort_by="energy_kwh"),
    ]
    # first(): one marker per run even though a run's totals are written again every 10 s
    annotations = [
        run_annotation("Run starts", f'SELECT first("duration_s") AS "duration_s", "job", "project", "phase", "run" FROM '
                       f'"run" WHERE {j} AND "status" = \'running\' AND "duration_s" < 1 AND {T} GROUP BY "host", "run"',
                       "green", "project,phase,run"),
        run_annotation("Run ends", f'SELECT first("energy_j") AS "energy_j", "job", "project", "phase", "run", "status" FROM '
                       f'"run" WHERE {j} AND "status" <> \'running\' AND {T} GROUP BY "host", "run"', "red",
                       "project,phase,run,status"),
    ]
    return dashboard("carbond-runs", "carbond / Runs",
                     "Energy, carbon and water attributed to runs, by project, job and phase, with run annotations.",
                     panels, [VAR_HOST, VAR_PROJECT, VAR_JOB, VAR_PHASE], annotations)


def fleet() -> dict[str, Any]:
    last_host = f'(SELECT last("power_w") AS "power_w" FROM "host" WHERE {HOST} AND {T} GROUP BY "host")'
    panels = [
        row("Fleet"),
        stat("Hosts reporting", f'SELECT count("power_w") FROM {last_host}', "none", decimals=0),
        stat("Fleet power now", f'SELECT sum("power_w") FROM {last_host}', "watt"),
        stat("GPUs", f'SELECT count("power_w") FROM (SELECT last("power_w") AS "power_w" FROM "device" WHERE "kind" = \'gpu\' '
             f'AND {HOST} AND {T} GROUP BY "host", "device")', "none", decimals=0),
        stat("Fleet energy", f'SELECT sum("energy_j") / 3600000 FROM "host" WHERE {HOST} AND {T}', "kwatth", decimals=3),
        stat("Fleet CO₂e", f'SELECT sum("co2_g") / 1000 FROM "host" WHERE {HOST} AND {T}', "masskg", decimals=3),
        stat("Fleet water", f'SELECT sum("water_l") FROM "host" WHERE {HOST} AND {T}', "litre", decimals=2),
        row("Hosts"),
        timeseries("Power by host", [target(f'SELECT mean("power_w") FROM "host" WHERE {HOST} AND {T} GROUP BY {EVERY}, "host" '
                                            'fill(none)', alias="$tag_host")], "watt", stack=True),
        timeseries("CO₂e rate by region", [target(
            f'SELECT sum("rate") FROM (SELECT mean("co2_g") / mean("interval_s") * 3600 AS "rate" FROM "host" WHERE {HOST} '
            f'AND {T} GROUP BY {EVERY}, "host", "region" fill(none)) WHERE {T} GROUP BY {EVERY}, "region" fill(none)',
            alias="$tag_region")], "suffix: gCO₂e/h", stack=True),
        timeseries("GPU utilization by host", [target(
            f'SELECT mean("utilization_pct") FROM "device" WHERE "kind" = \'gpu\' AND {HOST} AND {T} GROUP BY {EVERY}, "host" '
            'fill(none)', alias="$tag_host")], "percent"),
        timeseries("GPU power by host", [target(per_device_sum("device", f'"kind" = \'gpu\' AND {HOST}', ', "host"',
                                                               '"host", "device"'), alias="$tag_host")], "watt", stack=True),
        bargauge("Energy by host", f'SELECT sum("energy_j") / 3600000 FROM "host" WHERE {HOST} AND {T} GROUP BY "host"',
                 "kwatth", "$tag_host"),
        bargauge("CO₂e by host", f'SELECT sum("co2_g") FROM "host" WHERE {HOST} AND {T} GROUP BY "host"', "massg", "$tag_host"),
        bargauge("Energy by project, fleet-wide", f'SELECT sum("energy_j") / 3600000 FROM "job" WHERE {RUNS} AND {T} '
                 'GROUP BY "project"', "kwatth", "$tag_project"),
        table("Hosts", f'SELECT last("power_w") AS "power_w", last("intensity_g_per_kwh") AS "intensity_g_per_kwh", '
              f'last("pue") AS "pue", sum("energy_j") / 3600000 AS "energy_kwh", sum("co2_g") AS "co2_g" FROM "host" '
              f'WHERE {HOST} AND {T} GROUP BY "host", "region"', w=24, sort_by="energy_kwh"),
    ]
    return dashboard("carbond-fleet", "carbond / Fleet", "Many hosts writing to one InfluxDB: power, energy and carbon "
                     "by host, region and project.", panels, [VAR_HOST, VAR_PROJECT, VAR_JOB])


def health() -> dict[str, Any]:
    last = 'FROM "carbond" WHERE ' + HOST + f' AND {T} GROUP BY "host")'
    panels = [
        row("Daemons"),
        stat("Daemons reporting", f'SELECT count("rss_bytes") FROM (SELECT last("rss_bytes") AS "rss_bytes" {last}', "none",
             decimals=0),
        stat("Points waiting", f'SELECT sum("spool_points") FROM (SELECT last("spool_points") AS "spool_points" {last}',
             "none", decimals=0, desc="Measured points not yet in the store (journal and spool)."),
        stat("Dropped points", f'SELECT sum("dropped_points") FROM (SELECT last("dropped_points") AS "dropped_points" {last}',
             "none", decimals=0, desc="Points lost since each daemon started (disk errors, spool over budget)."),
        stat("Dead letters", f'SELECT sum("dead_letter_points") FROM (SELECT last("dead_letter_points") AS '
             f'"dead_letter_points" {last}', "none", decimals=0, desc="Points the store rejected, kept aside."),
        stat("Write errors", f'SELECT sum("write_errors") FROM (SELECT last("write_errors") AS "write_errors" {last}',
             "none", decimals=0),
        stat("Worst tick lag", f'SELECT max("tick_lag_s") FROM "carbond" WHERE {HOST} AND {T}', "s", decimals=3),
        row("Over time"),
        timeseries("Points waiting", [target(f'SELECT max("spool_points") FROM "carbond" WHERE {HOST} AND {T} GROUP BY {EVERY}, '
                                             '"host" fill(none)', alias="$tag_host")], "none"),
        timeseries("Tick lag", [target(f'SELECT max("tick_lag_s") FROM "carbond" WHERE {HOST} AND {T} GROUP BY {EVERY}, "host" '
                                       'fill(none)', alias="$tag_host")], "s"),
        timeseries("Daemon CPU", [target(f'SELECT non_negative_derivative(max("cpu_s"), 1s) * 100 FROM "carbond" WHERE {HOST} '
                                         f'AND {T} GROUP BY {EVERY}, "host" fill(none)', alias="$tag_host")], "percent",
                   desc="CPU time of the daemon as a share of one core."),
        timeseries("Daemon memory (RSS)", [target(f'SELECT max("rss_bytes") FROM "carbond" WHERE {HOST} AND {T} GROUP BY '
                                                  f'{EVERY}, "host" fill(none)', alias="$tag_host")], "bytes"),
        timeseries("New errors and losses", [target(
            f'SELECT non_negative_difference(max("write_errors")) AS "write errors", non_negative_difference(max('
            f'"dropped_points")) AS "dropped", non_negative_difference(max("dead_letter_points")) AS "dead letters" FROM '
            f'"carbond" WHERE {HOST} AND {T} GROUP BY {EVERY}, "host" fill(none)', alias="$tag_host $col")], "none",
            bars=True, w=24),
        table("Last report", f'SELECT last("rss_bytes") AS "rss_bytes" FROM "carbond" WHERE {HOST} AND {T} GROUP BY "host"',
              desc="A host whose last report is old has a stopped daemon (its time column is the last report)."),
        table("Energy sources", f'SELECT count("energy_j") AS "points" FROM "device" WHERE {HOST} AND {T} GROUP BY "host", '
              '"device", "source"', desc="model on a CPU usually means RAPL is not readable: see docs/troubleshooting.md."),
    ]
    return dashboard("carbond-health", "carbond / Health", "The carbond daemons watching themselves: delivery backlog, "
                     "losses, tick lag, CPU and memory.", panels, [VAR_DAEMON_HOST])


DASHBOARDS = {"carbond-overview.json": overview, "carbond-runs.json": runs, "carbond-fleet.json": fleet,
              "carbond-health.json": health}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
