"""The bundled zone table: integrity, coverage, addressing and spot values against published figures."""

from __future__ import annotations

import csv
from collections import Counter
from importlib import resources

import pytest

from carbond.errors import UnknownZoneError, UsageError
from carbond.intensity import StaticProvider, load_table
from carbond.intensity.table import BASES, KINDS

TABLE = load_table()


def raw_rows() -> list[dict[str, str]]:
    text = resources.files("carbond.intensity").joinpath("data/zones.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_no_duplicate_zone_and_every_name_addresses_one_zone():
    rows = raw_rows()
    codes = Counter(r["zone"].casefold() for r in rows)
    assert [c for c, n in codes.items() if n > 1] == []
    keys = Counter(k for r in rows for k in {n.casefold() for n in (r["zone"], r["name"], *r["aliases"].split(";")) if n})
    assert [k for k, n in keys.items() if n > 1] == []


def test_every_row_has_basis_source_license_year_and_a_plausible_value():
    for z in TABLE.rows:
        assert z.basis in BASES, z
        assert z.kind in KINDS, z
        assert z.source.strip() and z.license.strip(), z
        assert 2005 <= z.year <= 2026, z
        assert 0 < z.intensity_g_per_kwh < 1400, z  # Turkmenistan, the highest, is ~1306 (gas, 2023)


def test_coverage():
    kinds = Counter(z.kind for z in TABLE.rows)
    assert kinds["country"] >= 200
    assert kinds["cloud"] >= 80
    providers = Counter(z.zone.split(":")[0] for z in TABLE.of_kind("cloud"))
    assert all(providers[p] >= 20 for p in ("aws", "gcp", "azure")), providers
    subdivisions = {z.zone for z in TABLE.of_kind("subdivision")}
    for prefix, at_least in (("US-", 51), ("CA-", 13), ("AU-", 7), ("CN-", 30)):
        assert sum(z.startswith(prefix) for z in subdivisions) >= at_least, prefix
    bidding = {z.zone for z in TABLE.of_kind("bidding_zone")}
    assert {f"SE-SE{i}" for i in range(1, 5)} | {f"NO-NO{i}" for i in range(1, 6)} | {"DK-DK1", "DK-DK2"} <= bidding


@pytest.mark.parametrize("name", ["DE", "de", "DEU", "deu", "Germany", "GERMANY", " germany "])
def test_country_by_alpha2_alpha3_and_name_case_insensitive(name):
    assert TABLE.lookup(name).zone == "DE"


@pytest.mark.parametrize(("name", "zone"), [
    ("WORLD", "WORLD"), ("FI", "FI"), ("FR", "FR"), ("US", "US"), ("usa", "US"), ("United States", "US"),
    ("uk", "GB"), ("South Korea", "KR"), ("us-ca", "US-CA"), ("California", "US-CA"), ("CA-QC", "CA-QC"),
    ("quebec", "CA-QC"), ("AU-NSW", "AU-NSW"), ("New South Wales", "AU-NSW"), ("CN-GD", "CN-GD"),
    ("guangdong", "CN-GD"), ("se-se3", "SE-SE3"), ("NO-NO1", "NO-NO1"), ("DK-DK2", "DK-DK2"),
    ("AWS:US-EAST-1", "aws:us-east-1"), ("gcp:europe-west4", "gcp:europe-west4"), ("azure:westeurope", "azure:westeurope"),
])
def test_addressing(name, zone):
    assert TABLE.zone(name).zone == zone


def test_georgia_the_country_wins_the_name_the_state_keeps_its_code():
    assert TABLE.zone("Georgia").zone == "GE"
    assert TABLE.zone("US-GA").name == "Georgia, United States"


# Published figures: Ember (via Our World in Data) 2023 country averages, lifecycle; EPA eGRID2023
# state CO2e output rates (lb/MWh × 0.45359237), direct; China MEE 2023 provincial factors, direct;
# Electricity Maps 2025 yearly averages, lifecycle.
@pytest.mark.parametrize(("zone", "value", "basis", "year"), [
    ("DE", 380.95, "lifecycle", 2023),
    ("FR", 56.039, "lifecycle", 2023),
    ("FI", 79.158, "lifecycle", 2023),
    ("US", 369.473, "lifecycle", 2023),
    ("GB", 237.589, "lifecycle", 2023),
    ("IN", 713.441, "lifecycle", 2023),
    ("CN", 582.317, "lifecycle", 2023),
    ("PL", 661.926, "lifecycle", 2023),
    ("US-CA", 394.769 * 0.45359237, "direct", 2023),
    ("US-WV", 893.1, "direct", 2023),
    ("CN-BJ", 555.4, "direct", 2023),
    ("SE-SE3", 20.0, "lifecycle", 2025),
    ("CA-QC", 41.0, "lifecycle", 2025),
    ("AU-NSW", 525.0, "lifecycle", 2025),
])
def test_spot_values_match_published_figures(zone, value, basis, year):
    z = TABLE.zone(zone)
    assert z.intensity_g_per_kwh == pytest.approx(value, abs=0.06)
    assert (z.basis, z.year) == (basis, year)


def test_cloud_regions_take_their_grid_zones_value_and_carry_the_providers_pue():
    for z in TABLE.of_kind("cloud"):
        grid = TABLE.zone(z.grid_zone)
        assert grid.kind != "cloud"
        assert (z.intensity_g_per_kwh, z.basis, z.year) == (grid.intensity_g_per_kwh, grid.basis, grid.year), z.zone
        assert z.pue is not None and 1.0 <= z.pue < 1.3 and z.pue_source, z.zone
        assert z.source.startswith(f"grid zone {grid.zone}: ")
    assert TABLE.zone("aws:us-east-1").grid_zone == "US-VA"
    assert TABLE.zone("gcp:europe-west4").grid_zone == "NL"
    assert TABLE.zone("azure:westeurope").grid_zone == "NL"
    assert TABLE.zone("aws:eu-north-1").grid_zone == "SE-SE3"


def test_country_of_a_zone():
    assert TABLE.zone("US-CA").country == "US"
    assert TABLE.zone("aws:eu-north-1").country == "SE"
    assert TABLE.zone("WORLD").country == ""


def test_unknown_zone_is_a_usage_error_with_close_matches():
    with pytest.raises(UnknownZoneError) as info:
        TABLE.lookup("Germny")
    assert isinstance(info.value, UsageError)
    assert "unknown region 'Germny'" in str(info.value) and "DE (Germany)" in str(info.value)
    with pytest.raises(UnknownZoneError, match=r"FR \(France\)"):
        TABLE.lookup("frnace")


def test_lookup_gives_a_table_intensity_and_the_static_provider_repeats_it():
    i = TABLE.lookup("FR")
    assert (i.zone, i.provider, i.marginal_g_per_kwh) == ("FR", "table", None)
    assert StaticProvider(i).intensity_at(None) is i  # type: ignore[arg-type]
