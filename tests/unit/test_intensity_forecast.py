"""forecast(): the greenest start for a job, exact on step-wise series, checked against brute force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbond.errors import CarbondError, UsageError
from carbond.intensity.forecast import forecast
from carbond.intensity.live import IntensityPoint

T0 = datetime(2026, 11, 30, 0, tzinfo=UTC)


def hourly(values: list[float], start: datetime = T0, step_s: float = 3600.0) -> list[IntensityPoint]:
    return [IntensityPoint(start + timedelta(seconds=i * step_s), step_s, v, True) for i, v in enumerate(values)]


def test_picks_the_known_best_window_and_the_saving_against_now():
    points = hourly([400, 380, 350, 200, 150, 160, 300, 420, 430, 410, 390, 380])
    r = forecast(points, 3 * 3600, 12 * 3600, T0)
    assert r.best.start == T0 + timedelta(hours=3) and r.best.end == T0 + timedelta(hours=6)
    assert r.best.mean_g_per_kwh == pytest.approx(170.0)
    assert r.now is not None and r.now.mean_g_per_kwh == pytest.approx((400 + 380 + 350) / 3)
    assert r.saving_g_per_kwh == pytest.approx(r.now.mean_g_per_kwh - 170.0)
    assert r.saving_pct == pytest.approx(100 * (1 - 170.0 / r.now.mean_g_per_kwh))
    assert r.saving_g(2.0) == pytest.approx(2 * r.saving_g_per_kwh)
    doc = r.as_dict()
    assert doc["best"]["start"] == "2026-11-30T03:00:00+00:00" and doc["duration_s"] == 3 * 3600


def test_the_best_window_need_not_start_on_the_hour():
    points = hourly([300, 300, 120, 100, 110, 300])
    r = forecast(points, 1.5 * 3600, 6 * 3600, T0)
    assert r.best.start == T0 + timedelta(hours=3)  # 03:00-04:30: (100 + 0.5 × 110) / 1.5
    assert r.best.mean_g_per_kwh == pytest.approx(155.0 / 1.5)


def test_now_need_not_be_on_a_boundary():
    now = T0 + timedelta(minutes=20)
    r = forecast(hourly([100, 300, 300]), 3600, 3 * 3600, now)
    assert r.best.start == now and r.now == r.best and r.saving_g_per_kwh == 0.0


def test_the_job_must_finish_within_the_window():
    points = hourly([300, 300, 300, 300, 50, 50])
    r = forecast(points, 2 * 3600, 5 * 3600, T0)  # 04:00-06:00 would end after 05:00
    assert r.best.end <= T0 + timedelta(hours=5)
    assert r.best.start == T0 + timedelta(hours=3)


def test_windows_across_a_gap_in_the_forecast_are_skipped():
    points = hourly([300, 100]) + hourly([90, 300], start=T0 + timedelta(hours=3))  # 02:00-03:00 missing
    r = forecast(points, 2 * 3600, 6 * 3600, T0)
    assert r.best.start == T0 + timedelta(hours=3) and r.best.mean_g_per_kwh == pytest.approx(195.0)


def test_ties_go_to_the_earliest_start():
    r = forecast(hourly([200] * 6), 3600, 6 * 3600, T0)
    assert r.best.start == T0


def test_a_forecast_that_starts_later_has_no_now_window():
    r = forecast(hourly([200, 100], start=T0 + timedelta(hours=1)), 3600, 4 * 3600, T0)
    assert r.now is None and r.saving_pct is None and r.best.start == T0 + timedelta(hours=2)


def test_unsorted_and_overlapping_points():
    points = [IntensityPoint(T0 + timedelta(hours=1), 3600, 50), IntensityPoint(T0, 7200, 300)]  # the later overrides
    r = forecast(points, 3600, 2 * 3600, T0)
    assert r.best.start == T0 + timedelta(hours=1) and r.best.mean_g_per_kwh == 50


def test_bad_arguments():
    with pytest.raises(UsageError, match="shorter than --duration"):
        forecast(hourly([1, 2]), 3 * 3600, 3600, T0)
    with pytest.raises(UsageError, match="--duration must be positive"):
        forecast(hourly([1, 2]), 0, 3600, T0)
    with pytest.raises(CarbondError, match="no forecast points"):
        forecast([], 3600, 7200, T0)
    with pytest.raises(CarbondError, match="try a shorter --duration"):
        forecast(hourly([1, 2]), 3 * 3600, 6 * 3600, T0)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(0, 900), min_size=2, max_size=16),
       step_min=st.sampled_from([5, 15, 30, 60]),
       duration_min=st.integers(5, 180),
       now_offset_min=st.integers(0, 30))
def test_matches_brute_force_over_every_minute(values, step_min, duration_min, now_offset_min):
    points = hourly([float(v) for v in values], step_s=step_min * 60)
    total_min = len(values) * step_min
    now = T0 + timedelta(minutes=now_offset_min)
    within_min = total_min - now_offset_min
    if duration_min > within_min:
        return
    r = forecast(points, duration_min * 60, within_min * 60, now)

    def mean(start_min: int) -> float:
        per_min = [values[m // step_min] for m in range(start_min, start_min + duration_min)]
        return sum(per_min) / duration_min

    brute = min(mean(s) for s in range(now_offset_min, total_min - duration_min + 1))
    assert r.best.mean_g_per_kwh <= brute + 1e-9
    start_min = (r.best.start - T0).total_seconds() / 60
    assert now_offset_min - 1e-6 <= start_min <= total_min - duration_min + 1e-6
