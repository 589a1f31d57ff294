"""The ``series`` provider: a user CSV of timestamped intensities, hourly or finer.

Format (a header line is recommended; ``#`` starts a comment line)::

    time,intensity_g_per_kwh,marginal_g_per_kwh,basis
    2026-11-30T00:00:00Z,212.5,,lifecycle
    2026-11-30T01:00:00Z,198.0,,lifecycle

- ``time``: ISO 8601 (``Z`` or an offset; naive = UTC), strictly increasing. Each row holds
  until the next row, or for the series' usual step after the last row or before a gap.
- ``intensity_g_per_kwh`` (aliases ``intensity``, ``carbon_intensity``, ``value``): required.
- ``marginal_g_per_kwh``: optional, a marginal rate kept apart from the average.
- ``basis``: optional, ``lifecycle`` or ``direct``, the same on every row (default from config).

Each tick uses the time-weighted mean of the hour it falls in. A malformed file is a
:class:`UsageError` naming the file and line.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carbond.errors import UsageError
from carbond.intensity.live import IntensityPoint, hour_of, hourly_means, points_from_starts
from carbond.intensity.table import BASES, Intensity, IntensityProvider

log = logging.getLogger(__name__)

TIME_COLUMNS = ("time", "timestamp", "datetime", "start")
VALUE_COLUMNS = ("intensity_g_per_kwh", "intensity", "carbon_intensity", "value")


@dataclass(frozen=True)
class Series:
    points: tuple[IntensityPoint, ...]
    marginal: tuple[IntensityPoint, ...]
    basis: str


def _parse_time(text: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        t = (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"{where}: {text!r} is not an ISO 8601 time (e.g. 2026-11-30T13:00:00Z)") from None
    if not 1970 <= t.year <= 9998:  # room for a period's end; before 1970 is no grid data we know
        raise UsageError(f"{where}: {text!r} is outside the years 1970–9998")
    return t


def _parse_value(text: str, column: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0 or v >= 10000:
        raise UsageError(f"{where}: {column} {text!r} must be a finite number from 0 to 10000 gCO2e/kWh")
    return v


def parse_series(text: str, name: str = "series", default_basis: str = "lifecycle") -> Series:
    """Parse a series CSV; ``name`` (the file) appears in every error."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise UsageError(f"{name}: no rows (expected `time,intensity_g_per_kwh` and one row per period)")
    first_no, first = lines[0]
    header = [h.strip().casefold() for h in next(csv.reader([first]))]
    cols: dict[str, int] = {}
    if header and header[0] in TIME_COLUMNS:
        for i, h in enumerate(header):
            key = "time" if h in TIME_COLUMNS else "value" if h in VALUE_COLUMNS else h
            if key in cols:
                raise UsageError(f"{name} line {first_no}: column {h!r} given twice")
            cols[key] = i
        if "value" not in cols:
            raise UsageError(f"{name} line {first_no}: no intensity column; expected one of {', '.join(VALUE_COLUMNS)}")
        unknown = set(cols) - {"time", "value", "marginal_g_per_kwh", "basis"}
        if unknown:
            raise UsageError(f"{name} line {first_no}: unknown column(s) {', '.join(sorted(unknown))}; valid: "
                             f"time, intensity_g_per_kwh, marginal_g_per_kwh, basis")
        rows, ncols = lines[1:], len(header)
    else:
        cols = {"time": 0, "value": 1}  # no header: time,intensity
        rows, ncols = lines, 2
    if not rows:
        raise UsageError(f"{name}: a header but no data rows")
    if default_basis not in BASES:
        raise UsageError(f"{name}: basis {default_basis!r} must be one of {', '.join(BASES)}")

    values: list[tuple[datetime, float]] = []
    marginal: list[tuple[datetime, float]] = []
    basis, basis_line = "", 0
    prev: tuple[datetime, int] | None = None
    for (no, line), fields in zip(rows, csv.reader([r for _, r in rows]), strict=True):
        where = f"{name} line {no}"
        if len(fields) > ncols:
            raise UsageError(f"{where}: {len(fields)} fields, expected at most {ncols}: {line.strip()!r}")
        if len(fields) <= max(cols["time"], cols["value"]):
            raise UsageError(f"{where}: expected a time and an intensity, got {line.strip()!r}")
        t = _parse_time(fields[cols["time"]], where)
        if prev is not None and t <= prev[0]:
            raise UsageError(f"{where}: time {fields[cols['time']].strip()} is not after line {prev[1]}'s; "
                             "rows must be in increasing time order without duplicates")
        prev = (t, no)
        values.append((t, _parse_value(fields[cols["value"]].strip(), "intensity_g_per_kwh", where)))
        m = cols.get("marginal_g_per_kwh")
        if m is not None and m < len(fields) and fields[m].strip():
            marginal.append((t, _parse_value(fields[m].strip(), "marginal_g_per_kwh", where)))
        b = cols.get("basis")
        if b is not None and b < len(fields) and fields[b].strip():
            row_basis = fields[b].strip().casefold()
            if row_basis not in BASES:
                raise UsageError(f"{where}: basis {fields[b].strip()!r} must be one of {', '.join(BASES)}")
            if basis and row_basis != basis:
                raise UsageError(f"{where}: basis {row_basis!r} differs from line {basis_line}'s {basis!r}; "
                                 "one series has one basis")
            basis, basis_line = row_basis, no
    return Series(tuple(points_from_starts(values, 3600.0)), tuple(points_from_starts(marginal, 3600.0)),
                  basis or default_basis)


class SeriesProvider:
    """Intensity from a CSV series, hour by hour; the fallback (table) outside the series."""

    name = "series"
    signal = "average"

    def __init__(self, path: str | Path, fallback: IntensityProvider, basis: str = "lifecycle") -> None:
        self.path = Path(path)
        self.fallback = fallback
        self.default_basis = basis
        self._mtime_ns = -1
        self._load(self._read())

    def _read(self) -> tuple[Series, int]:
        try:
            st = os.stat(self.path)
            text = self.path.read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"series file {self.path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"series file {self.path}: not UTF-8 text ({exc.reason})") from exc
        return parse_series(text, f"series file {self.path}", self.default_basis), st.st_mtime_ns

    def _load(self, loaded: tuple[Series, int]) -> None:
        series, self._mtime_ns = loaded
        self.series = series
        self._hours = hourly_means(series.points)
        self._marginal_hours = hourly_means(series.marginal)

    def intensity_at(self, when: datetime) -> Intensity:
        base = self.fallback.intensity_at(when)
        h = hour_of(when)
        found = self._hours.get(h)
        marginal = self._marginal_hours.get(h)
        if found is not None:
            base = replace(base, intensity_g_per_kwh=found[0], basis=self.series.basis, provider=self.name,
                           source=f"series file {self.path.name} (hour {datetime.fromtimestamp(h, UTC):%Y-%m-%dT%H}Z)",
                           year=when.year)
        if marginal is not None:
            base = replace(base, marginal_g_per_kwh=marginal[0], marginal_source=self.name)
        return base

    fetch_at = intensity_at

    def value_at(self, when: datetime) -> tuple[float, bool] | None:
        return self._hours.get(hour_of(when))

    def refresh(self, now: datetime | None = None) -> bool:
        """Reload the file if it changed; a broken edit is logged and the old series kept."""
        try:
            if os.stat(self.path).st_mtime_ns == self._mtime_ns:
                return True
            self._load(self._read())
        except (OSError, UsageError) as exc:
            log.warning("keeping the series loaded before: %s", exc)
            return False
        log.info("reloaded series file %s (%d periods)", self.path, len(self.series.points))
        return True

    def forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        end = now + timedelta(seconds=horizon_s)
        return [p for p in self.series.points if p.end > now and p.start < end]

    def status(self) -> dict[str, Any]:
        pts = self.series.points
        return {"provider": self.name, "file": str(self.path), "periods": len(pts),
                "from": pts[0].start.isoformat() if pts else None, "until": pts[-1].end.isoformat() if pts else None}

    def close(self) -> None:
        pass
