"""What `carbond intensity` and `carbond forecast` print, built from settings (providers against the fake APIs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from carbond.errors import CarbondError, UsageError
from carbond.intensity import ProviderSettings
from carbond.intensity.commands import forecast_report, forecast_settings, intensity_report, zone_list
from tests.fakes.intensity_apis import EM_TOKEN, FakeIntensityApis
from tests.fakes.intensity_apis import intensity_apis as intensity_apis  # the fixture

NOW = datetime(2026, 11, 30, 10, 20, tzinfo=UTC)


def test_a_zone_from_the_table_shows_value_basis_source_and_year():
    doc, line = intensity_report(ProviderSettings(zone="DE"), "france")
    assert (doc["zone"], doc["intensity_g_per_kwh"], doc["basis"], doc["year"], doc["provider"]) == \
        ("FR", 56.039, "lifecycle", 2023, "table")
    assert "marginal_g_per_kwh" not in doc and doc["at"] is None
    assert line.startswith("FR (France): 56.039 gCO2e/kWh, lifecycle basis, Ember") and line.endswith("[table]")
    json.dumps(doc)


def test_the_configured_fixed_intensity_is_shown_as_configured():
    doc, _ = intensity_report(ProviderSettings(zone="DE", intensity_g_per_kwh=123.0))
    assert (doc["intensity_g_per_kwh"], doc["basis"], doc["provider"]) == (123.0, "configured", "config")


def test_the_configured_provider_answers_for_the_configured_zone(intensity_apis):
    s = ProviderSettings(zone="DE", provider="electricitymaps", token=EM_TOKEN, api_url=intensity_apis.url)
    at = NOW - timedelta(days=1)
    doc, line = intensity_report(s, None, at)
    assert (doc["provider"], doc["intensity_g_per_kwh"], doc["at"]) == ("electricitymaps", 200.0, at.isoformat())
    assert "[electricitymaps]" in line and "lifecycle basis" in line
    other, _ = intensity_report(s, "FR", at)  # another zone: the table, no request
    assert other["provider"] == "table" and len(intensity_apis.requests) == 1


def test_a_failing_provider_shows_the_table(intensity_apis):
    intensity_apis.mode = "500"
    s = ProviderSettings(zone="DE", provider="electricitymaps", token=EM_TOKEN, api_url=intensity_apis.url)
    doc, _ = intensity_report(s, "DE", NOW)
    assert doc["provider"] == "table" and doc["intensity_g_per_kwh"] == 380.95


def test_zone_list():
    rows, lines = zone_list()
    assert len(rows) == len(lines) - 1 >= 500
    assert lines[0].split()[:3] == ["ZONE", "NAME", "gCO2e/kWh"]
    cloud, _ = zone_list(kind="cloud")
    assert all(r["kind"] == "cloud" and r["pue"] for r in cloud)
    json.dumps(rows)


def valley(t: datetime) -> float:
    return 60.0 if t.day == 1 and 3 <= t.hour < 9 else 250.0


def test_forecast_report_from_the_uk_api():
    api = FakeIntensityApis(now=NOW, value=valley)
    try:
        s = ProviderSettings(zone="GB", provider="ukci", api_url=api.url)
        doc, lines = forecast_report(s, 6 * 3600, 48 * 3600, now=NOW)
        assert doc["best"]["start"] == "2026-12-01T03:00:00+00:00" and doc["best"]["mean_g_per_kwh"] == 60.0
        assert doc["saving_pct"] == pytest.approx(76.0)
        assert (doc["provider"], doc["signal"], doc["basis"], doc["zone"]) == ("ukci", "average", "direct", "GB")
        assert "start 2026-12-01 03:00Z" in lines[1] and "(76%)" in lines[2]
        json.dumps(doc)
        doc, _ = forecast_report(s, 6 * 3600, 48 * 3600, zone="13", now=NOW)
        assert api.requests[-1][1].startswith("/regional/intensity/") and doc["zone"] == "13"
    finally:
        api.close()


def test_forecast_report_from_a_series(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("time,intensity,basis\n" + "".join(
        f"{NOW.replace(minute=0) + timedelta(hours=h):%Y-%m-%dT%H:%MZ},{v},lifecycle\n"
        for h, v in enumerate([300, 280, 90, 80, 300, 300])))
    doc, _ = forecast_report(ProviderSettings(zone="DE", provider="series", series_file=str(f)), 2 * 3600, 5 * 3600, now=NOW)
    assert doc["best"]["start"] == "2026-11-30T12:00:00+00:00" and doc["basis"] == "lifecycle"


def test_forecast_needs_a_forecasting_provider():
    with pytest.raises(UsageError, match="needs a provider that forecasts"):
        forecast_report(ProviderSettings(zone="DE"), 3600)


def test_forecast_provider_failure_is_a_runtime_error(intensity_apis):
    intensity_apis.mode = "503"
    s = ProviderSettings(zone="GB", provider="ukci", api_url=intensity_apis.url)
    with pytest.raises(CarbondError) as info:
        forecast_report(s, 3600, now=NOW)
    assert not isinstance(info.value, UsageError)


def test_forecast_zone_goes_where_the_provider_needs_it():
    em = ProviderSettings(zone="DE", provider="electricitymaps", token="t")
    assert forecast_settings(em, "FR").zone == "FR"
    assert forecast_settings(em, "US-CAL-CISO").zone == "US-CAL-CISO"  # an Electricity Maps zone in the table
    assert forecast_settings(em, "XX-UNKNOWN").provider_zone == "XX-UNKNOWN"
    assert forecast_settings(ProviderSettings(zone="DE", marginal="watttime"), "CAISO_NORTH").marginal_zone == "CAISO_NORTH"
