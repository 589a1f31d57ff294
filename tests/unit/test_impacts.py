"""Energy → carbon, water, embodied: the formulas with values worked out by hand."""

from __future__ import annotations

import pytest

from carbond.impacts import HOURS_PER_YEAR, J_PER_KWH, Embodied, Factors, embodied_g, operational


def factors(intensity: float = 400.0, pue: float = 1.2, wue_site: float = 0.2, wue_source: float = 3.0) -> Factors:
    return Factors(intensity_g_per_kwh=intensity, pue=pue, wue_site_l_per_kwh=wue_site, wue_source_l_per_kwh=wue_source)


def test_units():
    assert J_PER_KWH == 1000.0 * 3600.0
    assert HOURS_PER_YEAR == 365.25 * 24


def test_one_kwh():
    # 1 kWh × PUE 1.2 × 400 g/kWh = 480 g; water 1 kWh × (0.2 + 1.2 × 3.0) = 3.8 L
    impact = operational(3.6e6, factors())
    assert impact.co2_g == pytest.approx(480.0)
    assert impact.water_l == pytest.approx(3.8)


def test_a_gpu_hour():
    # a 700 W GPU for one hour = 0.7 kWh; France 57 g/kWh, PUE 1.1: 0.7 × 1.1 × 57 = 43.89 g
    # water at WUE_site 0.18 and WUE_source 1.5: 0.7 × (0.18 + 1.1 × 1.5) = 0.7 × 1.83 = 1.281 L
    impact = operational(700.0 * 3600.0, factors(intensity=57.0, pue=1.1, wue_site=0.18, wue_source=1.5))
    assert impact.co2_g == pytest.approx(43.89)
    assert impact.water_l == pytest.approx(1.281)


def test_pue_enters_co2_and_only_the_source_part_of_water():
    # doubling PUE doubles co2; water goes from 1 × (0.5 + 1 × 2) = 2.5 to 1 × (0.5 + 2 × 2) = 4.5
    a = operational(3.6e6, factors(pue=1.0, wue_site=0.5, wue_source=2.0))
    b = operational(3.6e6, factors(pue=2.0, wue_site=0.5, wue_source=2.0))
    assert b.co2_g == pytest.approx(2 * a.co2_g)
    assert (a.water_l, b.water_l) == (pytest.approx(2.5), pytest.approx(4.5))


def test_zero_energy_zero_impact():
    impact = operational(0.0, factors())
    assert (impact.co2_g, impact.water_l) == (0.0, 0.0)


def test_embodied_host_and_gpus():
    # 8.766 kg over 1 year: 8766 g / 8766 h = 1 g/h; 17.532 kg over 2 years: 17532 g / 17532 h = 1 g/h per GPU
    e = Embodied(host_kg=8.766, host_lifetime_years=1.0, gpu_kg=17.532, gpu_lifetime_years=2.0)
    assert embodied_g(3600.0, 0, e) == pytest.approx(1.0)
    assert embodied_g(3600.0, 3, e) == pytest.approx(4.0)
    assert embodied_g(1800.0, 8, e) == pytest.approx(4.5)
    assert e.host_g_per_s(1) == pytest.approx(2.0 / 3600.0)


def test_embodied_realistic_server():
    # 2,500 kg host over 5 years and 8 GPUs of 150 kg over 5 years, for one day:
    # (2,500,000 + 8 × 150,000) g / (5 × 8766 h) × 24 h = 84.417 g/h × 24 h ≈ 2026.01 g
    e = Embodied(host_kg=2500.0, host_lifetime_years=5.0, gpu_kg=150.0, gpu_lifetime_years=5.0)
    assert embodied_g(86400.0, 8, e) == pytest.approx(3_700_000.0 / 43_830.0 * 24.0)
    assert embodied_g(86400.0, 8, e) == pytest.approx(2026.01, abs=0.01)


def test_factors_defaults_name_the_basis():
    f = factors()
    assert (f.zone, f.intensity_source, f.basis) == ("WORLD", "table", "lifecycle")


def test_energy_basis_names_the_source_or_the_shares():
    from carbond.impacts import energy_basis, sources_in

    assert energy_basis({"counter": 10.0}) == "counter"
    assert energy_basis({"counter": 800.0, "model": 200.0}) == "counter 80%, model 20%"
    assert energy_basis({"counter": 999.7, "model": 0.3}) == "counter"  # a rounding's worth is not a mix
    assert energy_basis({"power": 0.0}) == energy_basis({}) == "none"
    assert sources_in({"source_model_j": 3.0, "energy_j": 3.0, "source_counter_j": 1.0, "sources": 2.0}) == {
        "model": 3.0, "counter": 1.0}
