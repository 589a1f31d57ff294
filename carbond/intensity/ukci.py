"""The GB Carbon Intensity API (NESO, CC BY 4.0): national and regional, no key.

Values are gCO2/kWh of generation-only (direct) emissions, per half hour. Documented shapes::

    GET /intensity/{from}/fw48h, GET /intensity/{from}/{to}
        {"data": [{"from": "2026-11-30T10:00Z", "to": "2026-11-30T10:30Z",
                   "intensity": {"forecast": 186, "actual": 190, "index": "moderate"}}, ...]}
    GET /regional/intensity/{from}/fw48h/regionid/{id}, GET /regional/intensity/{from}/{to}/regionid/{id}
        {"data": {"regionid": 13, "shortname": "London",
                  "data": [{"from": ..., "to": ..., "intensity": {"forecast": 150, "index": "low"},
                            "generationmix": [...]}, ...]}}

``actual`` is null for periods not yet measured; regional data has forecasts only. Region
ids are 1–17 (15 England, 16 Scotland, 17 Wales, 18 GB).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from carbond.errors import ConfigError
from carbond.intensity.http import ProviderBadResponseError, number, parse_time_utc
from carbond.intensity.live import HOUR_S, IntensityPoint, LiveProvider
from carbond.intensity.table import IntensityProvider

DEFAULT_URL = "https://api.carbonintensity.org.uk"
FMT = "%Y-%m-%dT%H:%MZ"
FORECAST_HORIZON_S = 48 * HOUR_S
REGION_IDS = range(1, 19)


def parse_region(text: str) -> int | None:
    """``""``, ``national``, ``GB`` → None (national); ``13`` or ``regionid:13`` → 13."""
    t = str(text).strip().casefold()
    if t in ("", "national", "gb", "uk"):
        return None
    t = t.removeprefix("regionid:").removeprefix("region:")
    if t.isdigit() and int(t) in REGION_IDS:
        return int(t)
    raise ConfigError(f"[intensity] zone {text!r}: the GB Carbon Intensity API takes 'national' or a region id "
                      "1-18 (e.g. 13 London, 15 England, 16 Scotland, 17 Wales, 18 GB)")


class UkCarbonIntensity(LiveProvider):
    name = "ukci"

    def __init__(self, region: str | int | None, fallback: IntensityProvider, *, base_url: str = "", **kw: Any) -> None:
        self.region = region if isinstance(region, int) or region is None else parse_region(region)
        where = "national" if self.region is None else f"region {self.region}"
        super().__init__(fallback, basis="direct", source=f"GB Carbon Intensity API (NESO), {where}", **kw)
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")

    def _path(self, window: str) -> str:
        if self.region is None:
            return f"/intensity/{window}"
        return f"/regional/intensity/{window}/regionid/{self.region}"

    def _periods(self, window: str) -> list[IntensityPoint]:
        what = f"GB Carbon Intensity {self._path(window)}"
        doc = self.http.get_json(self.base_url + self._path(window), what=what)
        data = doc.get("data") if isinstance(doc, dict) else None
        if self.region is not None:
            if isinstance(data, list) and len(data) == 1:  # some regional endpoints wrap the region in a list
                data = data[0]
            data = data.get("data") if isinstance(data, dict) else None
        if not isinstance(data, list):
            raise ProviderBadResponseError(f"{what}: no data list in the answer")
        points = []
        for i, item in enumerate(data):
            intensity = item.get("intensity") if isinstance(item, dict) else None
            if not isinstance(intensity, dict):
                raise ProviderBadResponseError(f"{what}: data[{i}] has no intensity object")
            start = parse_time_utc(item.get("from"), f"{what} data[{i}].from")
            end = parse_time_utc(item.get("to"), f"{what} data[{i}].to")
            actual, forecast = intensity.get("actual"), intensity.get("forecast")
            if actual is None and forecast is None:
                continue
            value = number(actual if actual is not None else forecast, f"{what} data[{i}].intensity")
            if end > start:
                points.append(IntensityPoint(start, (end - start).total_seconds(), value, forecast=actual is None))
        return points

    def fetch_recent(self, now: datetime) -> list[IntensityPoint]:
        hour = datetime.fromtimestamp(int(now.timestamp() // HOUR_S) * HOUR_S, UTC)
        return self._periods(f"{hour:{FMT}}/fw48h")

    def fetch_forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        half_hour = datetime.fromtimestamp(int(now.timestamp() // 1800) * 1800, UTC)
        end = now + timedelta(seconds=min(horizon_s, FORECAST_HORIZON_S))
        return [p for p in self._periods(f"{half_hour:{FMT}}/fw48h") if p.start < end]

    def fetch_range(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        return self._periods(f"{start:{FMT}}/{end:{FMT}}")
