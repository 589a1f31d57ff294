"""Live providers against a local server speaking each API's documented shape.

Every failure (401, 429 with Retry-After, 5xx, malformed JSON, wrong shape, timeout, dropped
connection) leaves ``intensity_at`` answering from the table, backs off, and never raises.
Clocks are injected: no test sleeps.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from carbond.errors import ConfigError
from carbond.httputil import retry_after_s as parse_retry_after
from carbond.intensity import ProviderSettings, load_table, make_provider
from carbond.intensity.forecast import forecast
from carbond.intensity.http import HttpClient, ProviderAuthError
from carbond.intensity.live import Backoff, LiveProvider, MarginalOverlay
from tests.fakes.intensity_apis import EM_TOKEN, WT_PASSWORD, WT_USER, FakeIntensityApis, default_value
from tests.fakes.intensity_apis import intensity_apis as intensity_apis  # the fixture

NOW = datetime(2026, 11, 30, 10, 20, tzinfo=UTC)
DE = load_table().zone("DE").intensity_g_per_kwh
GB = load_table().zone("GB").intensity_g_per_kwh
FAILURES = ["401", "429", "500", "503", "malformed", "shape", "hang", "drop"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def provider(api: FakeIntensityApis, clock: Clock, kind: str, timeout_s: float = 10.0,
             **overrides: str) -> LiveProvider | MarginalOverlay:
    """A provider against the fake. Timeouts are generous (a loaded CI machine) except where a hang is tested."""
    settings = {
        "electricitymaps": ProviderSettings(zone="DE", provider="electricitymaps", token=EM_TOKEN, api_url=api.url),
        "ukci": ProviderSettings(zone="GB", provider="ukci", api_url=api.url),
        "ukci-regional": ProviderSettings(zone="GB", provider="ukci", provider_zone="13", api_url=api.url),
        "watttime": ProviderSettings(zone="DE", marginal="watttime", marginal_zone="CAISO_NORTH",
                                     watttime_username=WT_USER, watttime_password=WT_PASSWORD, marginal_api_url=api.url),
    }[kind]
    if overrides:
        settings = ProviderSettings(**{**vars(settings), **overrides})
    return make_provider(settings, http=HttpClient(timeout_s), clock=clock, wall=lambda: api.now)  # type: ignore[return-value]


def live_part(p: LiveProvider | MarginalOverlay) -> LiveProvider:
    return p.marginal if isinstance(p, MarginalOverlay) else p


# --- success ------------------------------------------------------------------------------


def test_electricitymaps_fills_the_past_day_then_follows_the_latest_hour(intensity_apis):
    p = provider(intensity_apis, Clock(), "electricitymaps")
    assert p.refresh(NOW) is True
    i = p.intensity_at(NOW)
    assert (i.intensity_g_per_kwh, i.provider, i.basis, i.zone) == (default_value(NOW), "electricitymaps", "lifecycle", "DE")
    assert p.intensity_at(NOW - timedelta(hours=5)).intensity_g_per_kwh == default_value(NOW - timedelta(hours=5))
    far = p.intensity_at(NOW + timedelta(days=2))
    assert (far.intensity_g_per_kwh, far.provider) == (DE, "table")  # no value for that hour: the table
    assert [r[1] for r in intensity_apis.requests] == ["/v3/carbon-intensity/history"]
    assert intensity_apis.requests[0][3]["auth-token"] == EM_TOKEN
    assert intensity_apis.requests[0][2]["zone"] == ["DE"]
    intensity_apis.now = NOW + timedelta(hours=1)
    assert p.refresh(intensity_apis.now) is True
    assert intensity_apis.requests[-1][1] == "/v3/carbon-intensity/latest"
    assert p.intensity_at(intensity_apis.now).intensity_g_per_kwh == default_value(intensity_apis.now)


def test_intensity_at_never_touches_the_network(intensity_apis):
    p = provider(intensity_apis, Clock(), "electricitymaps")
    p.refresh(NOW)
    before = len(intensity_apis.requests)
    for s in range(0, 7200, 7):
        p.intensity_at(NOW + timedelta(seconds=s))
    assert len(intensity_apis.requests) == before


def test_each_tick_uses_the_hour_it_falls_in(intensity_apis):
    p = provider(intensity_apis, Clock(), "electricitymaps")
    p.refresh(NOW)
    end_of_9 = datetime(2026, 11, 30, 9, 59, 59, 999999, tzinfo=UTC)
    assert p.intensity_at(end_of_9).intensity_g_per_kwh == 190.0
    assert p.intensity_at(end_of_9 + timedelta(microseconds=1)).intensity_g_per_kwh == 200.0


@pytest.mark.parametrize("kind", ["ukci", "ukci-regional"])
def test_uk_carbon_intensity_national_and_regional(intensity_apis, kind):
    p = provider(intensity_apis, Clock(), kind)
    assert p.refresh(NOW) is True
    i = p.intensity_at(NOW)
    assert (i.intensity_g_per_kwh, i.provider, i.basis) == (200.0, "ukci", "direct")
    assert "forecast" in i.source  # 10:00-10:30 is measured, 10:30-11:00 not yet: the hour holds a forecast
    assert p.intensity_at(NOW + timedelta(hours=30)).intensity_g_per_kwh == default_value(NOW + timedelta(hours=30))
    path = intensity_apis.requests[-1][1]
    assert path == ("/intensity/2026-11-30T10:00Z/fw48h" if kind == "ukci"
                    else "/regional/intensity/2026-11-30T10:00Z/fw48h/regionid/13")


def test_watttime_marginal_is_its_own_field_never_the_average(intensity_apis):
    p = provider(intensity_apis, Clock(), "watttime")
    assert isinstance(p, MarginalOverlay)
    assert p.refresh(NOW) is True
    i = p.intensity_at(NOW)
    assert (i.intensity_g_per_kwh, i.provider) == (DE, "table")  # the average stays the table's
    assert i.marginal_g_per_kwh == pytest.approx(2 * default_value(NOW), rel=1e-4)  # lb/MWh converted to g/kWh
    assert i.marginal_source == "watttime"
    login, data = intensity_apis.requests[0], intensity_apis.requests[1]
    assert login[1] == "/login" and login[3]["authorization"].startswith("Basic ")
    assert data[1] == "/v3/forecast" and data[3]["authorization"] == "Bearer wt-token-1"
    assert data[2]["signal_type"] == ["co2_moer"] and data[2]["region"] == ["CAISO_NORTH"]


def test_watttime_logs_in_again_when_the_token_expires(intensity_apis):
    clock = Clock()
    p = provider(intensity_apis, clock, "watttime")
    assert p.refresh(NOW)
    intensity_apis.valid_tokens.clear()  # revoked server-side
    assert p.refresh(NOW)
    assert intensity_apis.logins == 2
    clock.t += 26 * 60  # past the token's lifetime: renewed before use
    assert p.refresh(NOW) and intensity_apis.logins == 3


def test_average_and_marginal_together(intensity_apis):
    p = make_provider(ProviderSettings(zone="GB", provider="ukci", api_url=intensity_apis.url, marginal="watttime",
                                       marginal_zone="UK", watttime_username=WT_USER, watttime_password=WT_PASSWORD,
                                       marginal_api_url=intensity_apis.url),
                      http=HttpClient(10.0), clock=Clock(), wall=lambda: NOW)
    assert p.refresh(NOW)  # type: ignore[attr-defined]
    i = p.intensity_at(NOW)
    assert (i.intensity_g_per_kwh, i.provider, i.marginal_source) == (200.0, "ukci", "watttime")
    assert i.marginal_g_per_kwh == pytest.approx(400.0, rel=1e-4)


# --- failures: the table answers, the provider backs off -----------------------------------


@pytest.mark.parametrize("mode", FAILURES)
@pytest.mark.parametrize("kind", ["electricitymaps", "ukci", "ukci-regional", "watttime"])
def test_every_failure_falls_back_to_the_table_and_backs_off(intensity_apis, kind, mode):
    clock = Clock()
    p = provider(intensity_apis, clock, kind, timeout_s=1.0 if mode == "hang" else 10.0)
    intensity_apis.mode = mode
    assert p.refresh(NOW) is False
    i = p.intensity_at(NOW)
    table = GB if kind.startswith("ukci") else DE
    assert (i.intensity_g_per_kwh, i.provider, i.marginal_g_per_kwh) == (table, "table", None)
    live = live_part(p)
    status = live.status()
    assert status["failures"] == 1 and status["failures_in_a_row"] == 1 and status["retry_in_s"] > 0
    assert status["last_error"] and EM_TOKEN not in status["last_error"] and WT_PASSWORD not in status["last_error"]
    # while backing off, refresh does not call the server
    seen = intensity_apis.data_requests()
    assert p.refresh(NOW) is False and intensity_apis.data_requests() == seen
    # the server recovers; once the backoff has passed the provider's values come back
    intensity_apis.mode = "ok"
    clock.t += status["retry_in_s"]
    assert p.refresh(NOW) is True
    i = p.intensity_at(NOW)
    if kind == "watttime":
        assert i.marginal_g_per_kwh == pytest.approx(400.0, rel=1e-4) and i.provider == "table"
    else:
        assert i.intensity_g_per_kwh == 200.0 and i.provider == live.name
    assert live.status()["failures_in_a_row"] == 0


def test_429_honours_retry_after_seconds_and_http_dates(intensity_apis):
    clock = Clock()
    p = provider(intensity_apis, clock, "electricitymaps")
    intensity_apis.mode, intensity_apis.retry_after = "429", "600"
    p.refresh(NOW)
    assert p.status()["retry_in_s"] == pytest.approx(600)  # the server's word beats the 30 s first step
    clock.t += 599
    assert p.refresh(NOW) is False and intensity_apis.data_requests() == 1
    clock.t += 1
    intensity_apis.retry_after = None  # no header: exponential, second step 60 s
    p.refresh(NOW)
    assert p.status()["retry_in_s"] == pytest.approx(60)
    later = datetime.now(UTC) + timedelta(seconds=900)
    assert parse_retry_after(format_datetime(later, usegmt=True)) == pytest.approx(900, abs=5)
    assert parse_retry_after("soon") is None and parse_retry_after("-5") == 0.0


def test_backoff_doubles_up_to_its_cap():
    clock = Clock()
    b = Backoff(base_s=30, max_s=300, clock=clock)
    assert [b.failure() for _ in range(6)] == [30, 60, 120, 240, 300, 300]
    assert not b.ready()
    clock.t += 300
    assert b.ready()
    b.success()
    assert b.failure() == 30


def test_a_timeout_is_a_failure_not_a_hang(intensity_apis):
    p = provider(intensity_apis, Clock(), "ukci", timeout_s=0.3)
    intensity_apis.mode = "hang"
    assert p.refresh(NOW) is False
    assert "no answer within 0.3s" in p.status()["last_error"]


def test_a_wrong_key_is_reported_as_an_auth_error(intensity_apis):
    p = provider(intensity_apis, Clock(), "electricitymaps", token="wrong")
    assert p.refresh(NOW) is False
    assert "HTTP 401" in p.status()["last_error"] and "wrong" not in p.status()["last_error"]
    with pytest.raises(ProviderAuthError):
        p.forecast(NOW, 3600)


# --- construction errors: at start, clear ---------------------------------------------------


@pytest.mark.parametrize(("settings", "message"), [
    (ProviderSettings(zone="DE", provider="electricitymaps"), "needs an API token"),
    (ProviderSettings(zone="US-VA", provider="electricitymaps", token="t"), "no zone for US-VA"),
    (ProviderSettings(zone="DE", marginal="watttime", marginal_zone="X"), "watttime_username and watttime_password"),
    (ProviderSettings(zone="DE", marginal="watttime", watttime_username="u", watttime_password="p"), "needs a region"),
    (ProviderSettings(zone="DE", provider="ukci"), "Great Britain only"),
    (ProviderSettings(zone="GB", provider="ukci", provider_zone="99"), "region id"),
    (ProviderSettings(zone="DE", provider="series"), "series_file"),
    (ProviderSettings(zone="DE", provider="carbonara"), "valid: table, series, electricitymaps, ukci, watttime"),
    (ProviderSettings(zone="DE", marginal="electricitymaps"), "valid: '' (none), watttime"),
])
def test_bad_configuration_fails_at_construction(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_provider(settings)


def test_construction_does_not_touch_the_network(intensity_apis):
    provider(intensity_apis, Clock(), "watttime")
    provider(intensity_apis, Clock(), "electricitymaps")
    assert intensity_apis.requests == []


def test_cloud_region_zone_maps_to_its_grid_zone_for_electricitymaps(intensity_apis):
    p = make_provider(ProviderSettings(zone="gcp:europe-west4", provider="electricitymaps", token=EM_TOKEN,
                                       api_url=intensity_apis.url), http=HttpClient(10.0), wall=lambda: NOW)
    p.refresh(NOW)  # type: ignore[attr-defined]
    assert intensity_apis.requests[0][2]["zone"] == ["NL"]
    assert p.intensity_at(NOW).zone == "gcp:europe-west4"


# --- forecasts and lookups at a moment -------------------------------------------------------


def valley(t: datetime) -> float:
    """300 everywhere except a 3-hour valley at 02:00-05:00 UTC the next day (and 250 at 01:00)."""
    if t.day == 1 and 2 <= t.hour < 5:
        return 80.0
    return 250.0 if t.day == 1 and t.hour == 1 else 300.0


@pytest.mark.parametrize("kind", ["electricitymaps", "ukci", "watttime"])
def test_forecast_picks_the_known_best_window(kind):
    api = FakeIntensityApis(now=NOW, value=valley)
    try:
        p = provider(api, Clock(), kind)
        points = p.forecast(NOW, 24 * 3600)  # type: ignore[union-attr]
        best = forecast(points, 3 * 3600, 24 * 3600, NOW)
        assert best.best.start == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
        factor = 2.0 if kind == "watttime" else 1.0  # the fake's marginal rate is twice its average
        assert best.best.mean_g_per_kwh == pytest.approx(80.0 * factor, rel=1e-4)
        assert best.now is not None and best.saving_pct == pytest.approx(100 * (300 - 80) / 300, rel=1e-3)
    finally:
        api.close()


def test_forecast_horizon_asks_electricitymaps_for_enough_hours(intensity_apis):
    p = provider(intensity_apis, Clock(), "electricitymaps")
    points = p.forecast(NOW, 40 * 3600)
    assert intensity_apis.requests[-1][2]["horizonHours"] == ["48"] and len(points) == 48
    assert all(pt.forecast for pt in points)


@pytest.mark.parametrize("kind", ["electricitymaps", "ukci", "ukci-regional", "watttime"])
def test_fetch_at_a_past_hour(intensity_apis, kind):
    p = live_part(provider(intensity_apis, Clock(), kind))
    at = datetime(2026, 11, 29, 7, 30, tzinfo=UTC)
    i = p.fetch_at(at)
    factor = 2.0 if kind == "watttime" else 1.0
    assert i.intensity_g_per_kwh == pytest.approx(factor * default_value(at), rel=1e-4)
    assert i.provider == p.name and i.year == 2026


def test_fetch_at_falls_back_to_the_table_when_the_provider_fails(intensity_apis):
    p = provider(intensity_apis, Clock(), "electricitymaps")
    intensity_apis.mode = "503"
    i = p.fetch_at(NOW - timedelta(days=1))
    assert (i.intensity_g_per_kwh, i.provider) == (DE, "table")
