"""Cited default factors: water per country, PUE per zone, embodied carbon per GPU and server."""

from __future__ import annotations

import pytest

from carbond.errors import UsageError
from carbond.factors import (
    GPU_EMBODIED_DEFAULT,
    PUE_DEFAULT,
    WUE_SITE_DEFAULT_L_PER_KWH,
    gpu_embodied,
    pue_for_zone,
    server_embodied,
    water_table,
    wue_source_l_per_kwh,
    zone_factors,
)


def test_water_table_has_the_world_and_plausible_country_figures():
    table = water_table()
    assert table["WORLD"].value == pytest.approx(3.908)
    assert len(table) >= 40
    assert all(0 < f.value < 30 and f.source for f in table.values())


@pytest.mark.parametrize(("zone", "value"), [("DE", 1.947), ("FR", 3.6737), ("US-CA", 3.1321), ("aws:eu-north-1", 6.0315)])
def test_off_site_water_follows_the_zones_country(zone, value):
    assert wue_source_l_per_kwh(zone).value == pytest.approx(value)


def test_countries_without_a_figure_get_the_world_average_and_say_so():
    w = wue_source_l_per_kwh("KE")
    assert w.value == pytest.approx(3.908) and "world average" in w.source


def test_pue_is_the_providers_for_cloud_regions_else_the_industry_average():
    assert pue_for_zone("aws:us-east-1").value == pytest.approx(1.135)
    assert pue_for_zone("azure:westeurope").value == pytest.approx(1.185)
    assert pue_for_zone("gcp:europe-west4").value == pytest.approx(1.09)
    assert pue_for_zone("DE") == PUE_DEFAULT and PUE_DEFAULT.value == 1.56


def test_zone_factors_bundle_the_defaults():
    f = zone_factors("gcp:us-central1")
    assert f.pue.value == pytest.approx(1.09)
    assert f.wue_site_l_per_kwh == WUE_SITE_DEFAULT_L_PER_KWH
    assert f.wue_source_l_per_kwh.value == pytest.approx(3.1321)


@pytest.mark.parametrize(("model", "kg", "years"), [
    ("NVIDIA H100 80GB HBM3", 273.0, 3.0),
    ("NVIDIA H800", 273.0, 3.0),
    ("NVIDIA H200", 364.0, 3.0),
    ("NVIDIA A100-SXM4-80GB", 150.0, 6.0),
    ("Tesla V100-SXM2-32GB", GPU_EMBODIED_DEFAULT.embodied_kg, GPU_EMBODIED_DEFAULT.lifetime_years),
])
def test_gpu_embodied_by_model_name(model, kg, years):
    spec = gpu_embodied(model)
    assert (spec.embodied_kg, spec.lifetime_years) == (kg, years) and spec.source


def test_server_embodied_classes():
    assert server_embodied().embodied_kg == 2500.0
    assert server_embodied("hgx-8gpu").embodied_kg == 6000.0
    with pytest.raises(UsageError, match="valid: default"):
        server_embodied("mainframe")
