"""The series provider: CSV parsing, line-numbered errors, hour-by-hour selection, reloads."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carbond.errors import UsageError
from carbond.intensity import ProviderSettings, StaticProvider, load_table, make_provider
from carbond.intensity.forecast import forecast
from carbond.intensity.series import SeriesProvider, parse_series

T10 = datetime(2026, 11, 30, 10, tzinfo=UTC)
FALLBACK = StaticProvider(load_table().lookup("DE"))
DE = FALLBACK.intensity.intensity_g_per_kwh


def series(tmp_path: Path, text: str, basis: str = "lifecycle") -> SeriesProvider:
    f = tmp_path / "series.csv"
    f.write_text(text)
    return SeriesProvider(f, FALLBACK, basis)


def test_the_intensity_changes_exactly_at_the_hour_boundary(tmp_path):
    p = series(tmp_path, "time,intensity_g_per_kwh\n2026-11-30T10:00:00Z,100\n2026-11-30T11:00:00Z,300\n")
    last_moment = T10 + timedelta(hours=1) - timedelta(microseconds=1)
    assert (p.intensity_at(T10).intensity_g_per_kwh, p.intensity_at(last_moment).intensity_g_per_kwh) == (100.0, 100.0)
    i = p.intensity_at(T10 + timedelta(hours=1))
    assert (i.intensity_g_per_kwh, i.provider, i.basis) == (300.0, "series", "lifecycle")
    assert "series.csv" in i.source


def test_outside_the_series_the_table_answers(tmp_path):
    p = series(tmp_path, "time,intensity_g_per_kwh\n2026-11-30T10:00:00Z,100\n2026-11-30T11:00:00Z,300\n")
    before, after = p.intensity_at(T10 - timedelta(seconds=1)), p.intensity_at(T10 + timedelta(hours=2))
    assert (before.intensity_g_per_kwh, before.provider) == (DE, "table")
    assert (after.intensity_g_per_kwh, after.provider) == (DE, "table")  # the last row holds one step (1 h)


def test_finer_than_hourly_rows_average_over_the_hour(tmp_path):
    rows = "".join(f"2026-11-30T10:{m:02d}:00Z,{v}\n" for m, v in ((0, 100), (15, 200), (30, 300), (45, 400)))
    p = series(tmp_path, "timestamp,intensity\n" + rows + "2026-11-30T11:00:00+00:00,50\n")
    assert p.intensity_at(T10 + timedelta(minutes=5)).intensity_g_per_kwh == 250.0
    assert p.intensity_at(T10 + timedelta(hours=1, minutes=10)).intensity_g_per_kwh == 50.0  # covered part only


def test_a_gap_is_not_bridged(tmp_path):
    p = series(tmp_path, "time,intensity_g_per_kwh\n2026-11-30T10:00Z,100\n2026-11-30T11:00Z,200\n2026-11-30T14:00Z,300\n")
    assert p.intensity_at(T10 + timedelta(hours=2, minutes=30)).provider == "table"
    assert p.intensity_at(T10 + timedelta(hours=4)).intensity_g_per_kwh == 300.0


def test_offsets_naive_times_comments_and_no_header(tmp_path):
    p = series(tmp_path, "# exported from the utility\n\n2026-11-30T11:00:00+01:00,120\n2026-11-30T11:00:00,140\n")
    assert p.intensity_at(T10).intensity_g_per_kwh == 120.0  # 11:00+01:00 is 10:00Z
    assert p.intensity_at(T10 + timedelta(hours=1)).intensity_g_per_kwh == 140.0  # naive is UTC


def test_marginal_and_basis_columns(tmp_path):
    p = series(tmp_path, "time,intensity_g_per_kwh,marginal_g_per_kwh,basis\n"
                         "2026-11-30T10:00Z,100,650,direct\n2026-11-30T11:00Z,110,,direct\n")
    i = p.intensity_at(T10)
    assert (i.intensity_g_per_kwh, i.marginal_g_per_kwh, i.marginal_source, i.basis) == (100.0, 650.0, "series", "direct")
    assert p.intensity_at(T10 + timedelta(hours=1)).marginal_g_per_kwh is None


@pytest.mark.parametrize(("text", "where", "what"), [
    ("time,intensity_g_per_kwh\n2026-11-30T10:00Z,100\n2026-11-30T25:00Z,100\n", "line 3", "not an ISO 8601 time"),
    ("time,intensity_g_per_kwh\n2026-11-30T10:00Z,100\n2026-11-30T11:00Z,1o0\n", "line 3", "is not a number"),
    ("time,intensity_g_per_kwh\n2026-11-30T10:00Z,-5\n", "line 2", "from 0 to 10000"),
    ("time,intensity_g_per_kwh\n2026-11-30T10:00Z,nan\n", "line 2", "finite"),
    ("time,intensity_g_per_kwh\n# note\n2026-11-30T10:00Z,1\n\n2026-11-30T10:00Z,2\n", "line 5", "not after line 3"),
    ("time,intensity_g_per_kwh\n2026-11-30T11:00Z,1\n2026-11-30T10:00Z,2\n", "line 3", "increasing time order"),
    ("time,intensity_g_per_kwh\n2026-11-30T10:00Z,1,7\n", "line 2", "3 fields, expected at most 2"),
    ("time,intensity_g_per_kwh\n2026-11-30T10:00Z\n", "line 2", "expected a time and an intensity"),
    ("time,co2\n2026-11-30T10:00Z,1\n", "line 1", "no intensity column"),
    ("time,intensity,price\n2026-11-30T10:00Z,1,3\n", "line 1", "unknown column(s) price"),
    ("time,intensity,basis\n2026-11-30T10:00Z,1,direct\n2026-11-30T11:00Z,1,lifecycle\n", "line 3", "one series has one basis"),
    ("time,intensity,basis\n2026-11-30T10:00Z,1,marginal\n", "line 2", "must be one of lifecycle, direct"),
    ("time,intensity\n", "series file", "no data rows"),
    ("# nothing\n\n", "series file", "no rows"),
])
def test_malformed_files_name_the_line(tmp_path, text, where, what):
    with pytest.raises(UsageError) as info:
        series(tmp_path, text)
    message = str(info.value)
    assert str(tmp_path / "series.csv") in message and where in message and what in message, message


def test_a_missing_file_is_a_usage_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match=r"series file .*nope\.csv"):
        SeriesProvider(tmp_path / "nope.csv", FALLBACK)


def test_refresh_reloads_a_changed_file_and_keeps_the_old_one_if_the_edit_is_broken(tmp_path):
    p = series(tmp_path, "time,intensity\n2026-11-30T10:00Z,100\n")
    f = tmp_path / "series.csv"
    assert p.refresh() is True  # unchanged
    f.write_text("time,intensity\n2026-11-30T10:00Z,130\n")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert p.refresh() is True and p.intensity_at(T10).intensity_g_per_kwh == 130.0
    f.write_text("time,intensity\n2026-11-30T10:00Z,oops\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert p.refresh() is False and p.intensity_at(T10).intensity_g_per_kwh == 130.0


def test_a_series_is_a_forecast_source(tmp_path):
    values = [300, 290, 120, 110, 100, 280, 300, 310]
    text = "time,intensity\n" + "".join(f"{T10 + timedelta(hours=h):%Y-%m-%dT%H:%MZ},{v}\n" for h, v in enumerate(values))
    p = series(tmp_path, text)
    now = T10 + timedelta(minutes=30)
    result = forecast(p.forecast(now, 8 * 3600), 3 * 3600, 7 * 3600, now)
    assert result.best.start == T10 + timedelta(hours=2) and result.best.mean_g_per_kwh == 110.0


def test_the_factory_builds_a_series_provider(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("time,intensity\n2026-11-30T10:00Z,42\n")
    p = make_provider(ProviderSettings(zone="FR", provider="series", series_file=str(f), series_basis="direct"))
    i = p.intensity_at(T10)
    assert (i.intensity_g_per_kwh, i.basis, i.zone, i.provider) == (42.0, "direct", "FR", "series")
    assert p.intensity_at(T10 - timedelta(hours=1)).zone == "FR"


def test_parse_series_alone():
    s = parse_series("2026-11-30T10:00Z,1\n2026-11-30T10:30Z,2\n", "inline", "direct")
    assert [(p.start.minute, p.duration_s, p.value_g_per_kwh) for p in s.points] == [(0, 1800.0, 1.0), (30, 1800.0, 2.0)]
    assert s.basis == "direct"
