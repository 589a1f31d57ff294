"""The Grafana files in deploy/grafana: built from scripts/build_dashboards.py, well-formed, self-contained.

Queries are executed against a real InfluxDB in tests/integration/test_grafana_dashboards.py.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from fakes import grafana

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARDS = grafana.dashboards()
DS = {"type": "influxdb", "uid": "${datasource}"}


def _builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", ROOT / "scripts" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_four_dashboards_exist_and_match_their_builder():
    assert set(DASHBOARDS) == {"carbond-overview.json", "carbond-runs.json", "carbond-fleet.json", "carbond-health.json"}
    build = _builder()
    for name, make in build.DASHBOARDS.items():
        assert (grafana.DASHBOARDS / name).read_text() == build.render(make), \
            f"{name} is out of date: run python scripts/build_dashboards.py"


def test_uids_and_titles_are_unique():
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_are_unique_and_grid_positions_valid(name):
    panels = grafana.panels(DASHBOARDS[name])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert set(g) == {"x", "y", "w", "h"}, p["title"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']}: x + w = {g['x'] + g['w']} > 24"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_variable_used_is_defined_before_use(name):
    dash = DASHBOARDS[name]
    defined: list[str] = []
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            used = grafana.variables_used(v["query"]) - grafana.BUILTIN
            assert used <= set(defined), f"variable {v['name']} uses {used - set(defined)} before they are defined"
        defined.append(v["name"])
    assert defined[0] == "datasource"
    for q in grafana.queries(name, dash):
        assert grafana.variables_used(q.text) - grafana.BUILTIN <= set(defined), q.where
    for p in grafana.panels(dash):
        for t in p.get("targets", []):
            aliases = grafana.variables_used(t.get("alias", ""))
            for tag in (a[len("tag_"):] for a in aliases if a.startswith("tag_")):
                assert f'"{tag}"' in t["query"].rsplit("GROUP BY", 1)[-1], f"{p['title']}: alias $tag_{tag} not grouped by"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_variable_everywhere_and_no_import_placeholders(name):
    dash = DASHBOARDS[name]
    text = (grafana.DASHBOARDS / name).read_text()
    assert "__inputs" not in dash and "${DS_" not in text  # placeholders only the import dialog would resolve
    (ds_var,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["name"] == "datasource" and ds_var["query"] == "influxdb"
    for p in grafana.panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS and t["rawQuery"] is True, p["title"]
    for a in dash["annotations"]["list"]:
        if not a.get("builtIn"):
            assert a["datasource"] == DS and a["target"]["query"] == a["query"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DS and v["allValue"] == ".*" and v["multi"] and v["includeAll"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_query_is_bounded_by_the_time_range(name):
    for q in grafana.queries(name, DASHBOARDS[name]):
        if q.where.startswith("variable"):
            assert q.text.startswith("SHOW TAG VALUES"), q.where
            continue
        assert "$timeFilter" in q.text, q.where
        # every subquery has its own time filter too (InfluxQL does not push the outer one down)
        assert q.text.count("$timeFilter") >= q.text.count("SELECT") - (1 if "GROUP BY time(" not in q.text else 0), q.where
        for var in ("host", "project", "job", "phase"):
            for m in re.finditer(rf"\${var}\b", q.text):
                assert q.text[m.start() - 2:m.start()] == "/^" and q.text[m.end():m.end() + 2] == "$/", \
                    f"{q.where}: ${var} must be used as /^${var}$/ (a multi-value regex)"


def test_provisioning_files():
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the provisioning files")
    ds = yaml.safe_load((PROVISIONING / "datasources" / "carbond.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL" and source["access"] == "proxy"
    for dash in DASHBOARDS.values():
        ds_var = dash["templating"]["list"][0]
        assert ds_var["current"]["value"] == source["uid"]  # the provisioned source is the default choice
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "carbond.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
