"""``carbond estimate`` / ``carbond.estimate``: published training footprints from their published inputs."""

from __future__ import annotations

import json

import pytest

import carbond
from carbond.cli import main
from carbond.errors import UnknownZoneError, UsageError
from carbond.reports.estimate import estimate

LB_PER_KG = 1 / 0.45359237


# --- published footprints -------------------------------------------------------------------------------------------
# Luccioni, Viguier & Ligozat (2023), "Estimating the Carbon Footprint of BLOOM, a 176B Parameter Language Model",
# JMLR 24(253), arXiv:2211.02001: final training 1,082,990 GPU-hours on A100s at their 400 W TDP = 433,196 kWh of
# dynamic consumption, French grid 57 gCO2eq/kWh → 24.7 t CO2eq ("24.69"); idle consumption 256,646 kWh → 14.6 t.
def test_bloom_dynamic_consumption_luccioni_2023():
    e = estimate(gpu_hours=1_082_990, gpu_power_w=400, intensity_g_per_kwh=57, pue=1.0)
    assert e.energy_kwh == pytest.approx(433_196, rel=1e-6)
    assert e.co2_kg / 1000 == pytest.approx(24.69, abs=0.005)


def test_bloom_idle_consumption_luccioni_2023():
    e = estimate(energy_kwh=256_646, intensity_g_per_kwh=57, pue=1.0)
    assert e.co2_kg / 1000 == pytest.approx(14.6, abs=0.05)


# Patterson et al. (2021), "Carbon Emissions and Large Neural Network Training", arXiv:2104.10350, Table 4, GPT-3:
# 10,000 V100 for 14.8 days at 330 W average per processor, datacenter PUE 1.10, 0.429 kgCO2e/kWh →
# 1,287 MWh (facility) and 552 tCO2e. Their rounded inputs reproduce both within 0.2%.
def test_gpt3_patterson_2021():
    e = estimate(gpu_hours=10_000 * 14.8 * 24, gpu_power_w=330, intensity_g_per_kwh=429, pue=1.10)
    assert e.facility_energy_kwh / 1000 == pytest.approx(1287, rel=0.002)
    assert e.co2_kg / 1000 == pytest.approx(552, rel=0.003)


# Strubell, Ganesh & McCallum (2019), "Energy and Policy Considerations for Deep Learning in NLP", ACL,
# arXiv:1906.02243: p_t = 1.58 × t × p / 1000 (kWh with PUE 1.58), CO2e = 0.954 lb/kWh × p_t (US average, EPA);
# Table 3 (average power of the whole machine in W, hours, kWh·PUE, CO2e in lb).
STRUBELL_TABLE_3 = [
    ("Transformer big (P100x8)", 1515.43, 84, 201, 192),
    ("ELMo (P100x3)", 517.66, 336, 275, 262),
    ("BERT base (V100x64)", 12041.51, 79, 1507, 1438),
    ("NAS (P100x8)", 1515.43, 274_120, 656_347, 626_155),
]


@pytest.mark.parametrize(("model", "power_w", "hours", "kwh_pue", "co2_lb"), STRUBELL_TABLE_3)
def test_strubell_2019_table_3(model, power_w, hours, kwh_pue, co2_lb):
    e = estimate(gpu_hours=hours, gpu_power_w=power_w, intensity_g_per_kwh=0.954 * 453.59237, pue=1.58)
    assert e.facility_energy_kwh == pytest.approx(kwh_pue, rel=0.005), model
    assert e.co2_kg * LB_PER_KG == pytest.approx(co2_lb, rel=0.005), model


# --- inputs, outputs, errors -------------------------------------------------------------------------------------


def test_every_input_is_echoed_with_unit_and_origin():
    e = estimate(gpu_hours=10, gpu_power_w=300, region="FR", wue_site_l_per_kwh=0.5, embodied_kg=150, lifetime_years=5)
    by_name = {i.name: i for i in e.inputs}
    assert by_name["gpu_hours"].unit == "h" and by_name["gpu_power_w"].unit == "W"
    assert by_name["intensity_g_per_kwh"].unit == "gCO2e/kWh" and "FR zone table" in by_name["intensity_g_per_kwh"].origin
    assert by_name["pue"].origin.startswith("Uptime")  # FR is no cloud region: the industry average, cited
    assert by_name["wue_site_l_per_kwh"].origin == "given" and by_name["wue_source_l_per_kwh"].unit == "L/kWh"
    assert by_name["embodied_kg"].unit == "kgCO2e per device" and by_name["lifetime_years"].value == 5
    kwh = 3.0
    assert e.energy_kwh == pytest.approx(kwh)
    pue, intensity = by_name["pue"].value, by_name["intensity_g_per_kwh"].value
    assert e.co2_kg == pytest.approx(kwh * pue * intensity / 1000)
    assert e.water_l == pytest.approx(kwh * (0.5 + pue * by_name["wue_source_l_per_kwh"].value))
    assert e.embodied_kg == pytest.approx(10 * 150 / (5 * 8766))


def test_water_and_embodied_only_when_their_inputs_are_given():
    doc = estimate(energy_kwh=2, intensity_g_per_kwh=100, pue=1.5).as_dict()
    assert doc["energy_kwh"] == 2 and doc["co2_kg"] == pytest.approx(0.3)
    assert "water_l" not in doc and "embodied_kg" not in doc


def test_python_api_is_exported_lazily():
    assert carbond.estimate is estimate and "estimate" in dir(carbond)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({}, "nothing to estimate"),
    ({"gpu_hours": 5}, "--gpu-power-w is missing"),
    ({"gpu_power_w": 5}, "--gpu-hours is missing"),
    ({"energy_kwh": 1, "gpu_hours": 2, "gpu_power_w": 3}, "not both"),
    ({"energy_kwh": -1}, "--energy-kwh"),
    ({"energy_kwh": 1, "pue": 0.9}, "--pue"),
    ({"energy_kwh": 1, "region": "FR", "intensity_g_per_kwh": 10}, "exclude each other"),
    ({"energy_kwh": 1, "embodied_kg": 100}, "device hours"),
    ({"energy_kwh": 1, "lifetime_years": 4}, "only apply with --embodied-kg"),
])
def test_bad_inputs_name_the_argument(kwargs, words):
    with pytest.raises(UsageError, match=words):
        estimate(**kwargs)


def test_unknown_region_suggests_close_zones():
    with pytest.raises(UnknownZoneError, match="unknown region"):
        estimate(energy_kwh=1, region="Frnace")


def test_cli_json_and_table(capsys):
    assert main(["estimate", "--gpu-hours", "1082990", "--gpu-power-w", "400", "--intensity", "57", "--pue", "1",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["energy_kwh"] == pytest.approx(433_196) and doc["co2_kg"] == pytest.approx(24_692.172)
    assert doc["inputs"]["gpu_hours"] == {"value": 1082990.0, "unit": "h", "origin": "given"}
    assert main(["estimate", "--energy-kwh", "10", "--region", "DE", "--wue-source", "2"]) == 0
    out = capsys.readouterr().out
    assert "energy_kwh" in out and "kWh" in out and "water_l" in out and "(given)" in out


def test_cli_bad_usage_exits_2(capsys):
    assert main(["estimate", "--gpu-hours", "3"]) == 2
    assert "--gpu-power-w is missing" in capsys.readouterr().err
    assert main(["estimate", "--energy-kwh", "1", "--region", "nowhere-land"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["estimate", "--energy-kwh", "1", "--region", "FR", "--intensity", "5"])
    assert exc.value.code == 2
