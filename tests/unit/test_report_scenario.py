"""Scenario files: every mistake names the file, the table and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbond.errors import ConfigError
from carbond.reports.scenario import load_scenario, parse_scenario

FULL = """
[factors]
zone = "FR"
pue = 1.2
[development]
hours = 400
team_size = 5
workstation_power_w = 150
workstation_embodied_kg = 350
[deployment]
days = 365
servers = 2
server_power_w = 400
[inference]
requests_per_day = 100000
energy_per_request_wh = 0.25
[retraining]
every_days = 90
fraction = 0.5
[[phases]]
name = "data-prep"
energy_kwh = 12.5
hours = 40
"""


def test_full_scenario(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(FULL)
    sc = load_scenario(path)
    assert sc.factors.zone == "FR" and sc.factors.pue == 1.2 and sc.factors.intensity_g_per_kwh is None
    assert sc.development is not None and sc.development.team_size == 5 and sc.development.pue == 1.0
    assert sc.deployment is not None and sc.deployment.servers == 2
    assert sc.inference is not None and sc.inference.energy_per_request_wh == 0.25
    assert sc.retraining is not None and sc.retraining.fraction == 0.5
    assert [p.name for p in sc.phases] == ["data-prep"] and sc.source == str(path)


@pytest.mark.parametrize(("data", "where"), [
    ({"develop": {}}, r"\[develop\]: unknown table; did you mean development"),
    ({"development": {"hours": 1, "team_size": 1, "workstation_power": 1}},
     r"\[development\] workstation_power: unknown key; did you mean workstation_power_w"),
    ({"development": {"hours": 1, "team_size": 2}}, r"\[development\] workstation_power_w: required key is missing"),
    ({"development": {"hours": "many", "team_size": 1, "workstation_power_w": 1}},
     r"\[development\] hours: expected a number, got 'many'"),
    ({"development": {"hours": 1, "team_size": 0, "workstation_power_w": 1}}, r"\[development\] team_size: must be greater"),
    ({"factors": {"pue": 0.8}}, r"\[factors\] pue: must be 1.0 or greater"),
    ({"factors": {"zone": "Atlantis"}}, r"\[factors\] zone: unknown region"),
    ({"factors": {"intensity_g_per_kwh": True}}, r"\[factors\] intensity_g_per_kwh: expected a number"),
    ({"inference": {"requests_per_day": 10}}, r"\[deployment\] days: required by \[inference\]"),
    ({"deployment": {"days": 10, "servers": 2}}, r"\[deployment\] server_power_w: required"),
    ({"deployment": {"days": -1}}, r"\[deployment\] days: must be 0 or greater"),
    ({"phases": [{"name": "Data Prep", "energy_kwh": 1}]}, r"\[\[phases\]\] #1 name: must be a lower-case name"),
    ({"phases": [{"name": "training", "energy_kwh": 1}]}, r"\[\[phases\]\] #1 name: 'training' is a standard phase"),
    ({"phases": [{"name": "x"}]}, r"\[\[phases\]\] #1 energy_kwh: required key is missing"),
    ({"phases": {"name": "x"}}, r"\[\[phases\]\]: must be an array of tables"),
    ({"retraining": {"every_days": 30}}, r"\[deployment\] days: required by \[retraining\]"),
])
def test_errors_name_the_key(data, where):
    with pytest.raises(ConfigError, match=r"^scenario s.toml: " + where):
        parse_scenario(data, "s.toml")


def test_unreadable_or_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[development\nhours = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(bad)
