"""What Grafana does to a dashboard's InfluxQL before sending it: list the queries, substitute macros and variables.

Grafana's InfluxDB data source replaces ``$timeFilter`` with the range (``time >= …ms and time <= …ms``),
``$__interval`` with the auto interval, and template variables with their values; a multi-value or
"All" variable in a regex becomes ``(a|b)`` of regex-escaped values, or its ``allValue``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]")
BUILTIN = {"timeFilter", "__interval", "__interval_ms", "interval", "__range", "__range_s", "__from", "__to",
           "col", "tag_host", "tag_device", "tag_kind", "tag_job", "tag_project", "tag_phase", "tag_region",
           "tag_intensity_source", "__all"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # "panel 3 'Power by device' target A", "annotation 'Run ends'", "variable host"
    text: str


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: load(p) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def queries(name: str, dash: dict[str, Any]) -> list[Query]:
    """Every InfluxQL query of a dashboard: panel targets, annotations, query variables."""
    out = []
    for p in panels(dash):
        for t in p.get("targets", []):
            out.append(Query(name, f"panel {p['id']} {p['title']!r} target {t['refId']}", t["query"]))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        text = a.get("target", {}).get("query") or a.get("query")
        out.append(Query(name, f"annotation {a['name']!r}", text))
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "query":
            out.append(Query(name, f"variable {v['name']}", v["query"] if isinstance(v["query"], str) else v["query"]["query"]))
    return out


def variables_used(text: str) -> set[str]:
    names = set()
    for m in VARIABLE.finditer(text):
        names.add(m.group(1) or m.group(2) or m.group(4))
    return names


def regex_escape(value: str) -> str:
    """Grafana's kbn.regexEscape for InfluxDB regex values."""
    return re.sub(r"([\\^$*+?.()|{}\[\]/-])", r"\\\1", value)


def substitute(text: str, values: dict[str, list[str] | str], *, time_filter: str = "time > now() - 1h",
               interval: str = "10s") -> str:
    """The query as Grafana would send it. ``values[name]`` is a list (multi-value: regex group) or a raw string."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        if name == "timeFilter":
            return time_filter
        if name in ("__interval", "interval"):
            return interval
        if name not in values:
            return m.group(0)  # $tag_x, $col: Grafana's alias patterns, not in queries
        v = values[name]
        if isinstance(v, str):
            return v
        return v[0] if len(v) == 1 else "(" + "|".join(v) + ")"

    return VARIABLE.sub(one, text)
