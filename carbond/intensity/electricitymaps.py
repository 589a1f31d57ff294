"""Electricity Maps API v3: ``/v3/carbon-intensity/{latest,history,past-range,forecast}``.

Authentication is the ``auth-token`` header. Values are gCO2e/kWh, consumption-based and
lifecycle unless ``emissionFactorType=direct`` is asked for; hourly, with ``datetime`` the
start of the hour. Documented shapes::

    latest:     {"zone": "DE", "carbonIntensity": 302, "datetime": "2026-11-30T10:00:00.000Z", ...}
    history:    {"zone": "DE", "history": [{"carbonIntensity": 302, "datetime": "...", ...}, ...]}
    past-range: {"zone": "DE", "data": [{"carbonIntensity": 302, "datetime": "...", ...}, ...]}
    forecast:   {"zone": "DE", "forecast": [{"carbonIntensity": 302, "datetime": "..."}, ...]}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from carbond.errors import ConfigError
from carbond.intensity.http import ProviderBadResponseError, number, parse_time_utc
from carbond.intensity.live import IntensityPoint, LiveProvider, points_from_starts
from carbond.intensity.table import IntensityProvider

DEFAULT_URL = "https://api.electricitymaps.com"
FORECAST_HORIZONS_H = (24, 48, 72)
MAX_RANGE = timedelta(days=10)  # past-range accepts at most 10 days per call


class ElectricityMaps(LiveProvider):
    name = "electricitymaps"

    def __init__(self, zone: str, token: str, fallback: IntensityProvider, *, base_url: str = "",
                 emission_factor_type: str = "lifecycle", **kw: Any) -> None:
        if not token:
            raise ConfigError("[intensity] token: Electricity Maps needs an API token (the `auth-token` header); "
                              "set it in the config file or CARBOND_ELECTRICITYMAPS_TOKEN")
        if not zone:
            raise ConfigError("[intensity] zone: Electricity Maps needs a zone id (e.g. DE, US-CAL-CISO)")
        if emission_factor_type not in ("lifecycle", "direct"):
            raise ConfigError(f"emission factor type {emission_factor_type!r} must be lifecycle or direct")
        super().__init__(fallback, basis=emission_factor_type,
                         source=f"Electricity Maps v3 carbon-intensity, zone {zone}", **kw)
        self.zone = zone
        self._token = token
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self._extra = {"emissionFactorType": "direct"} if emission_factor_type == "direct" else {}

    def _get(self, endpoint: str, **params: str) -> dict[str, Any]:
        doc = self.http.get_json(f"{self.base_url}/v3/carbon-intensity/{endpoint}",
                                 params={"zone": self.zone, **self._extra, **params},
                                 headers={"auth-token": self._token}, what=f"Electricity Maps {endpoint} ({self.zone})")
        if not isinstance(doc, dict):
            raise ProviderBadResponseError(f"Electricity Maps {endpoint}: expected a JSON object")
        return doc

    def _entries(self, doc: dict[str, Any], key: str, endpoint: str, forecast: bool = False) -> list[IntensityPoint]:
        items = doc.get(key)
        if not isinstance(items, list):
            raise ProviderBadResponseError(f"Electricity Maps {endpoint}: no {key!r} list in the answer")
        starts = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ProviderBadResponseError(f"Electricity Maps {endpoint}: {key}[{i}] is not an object")
            if item.get("carbonIntensity") is None:
                continue  # an hour the API has no value for: the table answers it
            starts.append((parse_time_utc(item.get("datetime"), f"Electricity Maps {endpoint} {key}[{i}].datetime"),
                           number(item["carbonIntensity"], f"Electricity Maps {endpoint} {key}[{i}].carbonIntensity")))
        return points_from_starts(starts, 3600.0, forecast)

    def fetch_latest(self) -> list[IntensityPoint]:
        doc = self._get("latest")
        if doc.get("carbonIntensity") is None:
            return []
        start = parse_time_utc(doc.get("datetime"), "Electricity Maps latest.datetime")
        return [IntensityPoint(start, 3600.0, number(doc["carbonIntensity"], "Electricity Maps latest.carbonIntensity"))]

    def fetch_history(self) -> list[IntensityPoint]:
        """The last 24 hours."""
        return self._entries(self._get("history"), "history", "history")

    def fetch_recent(self, now: datetime) -> list[IntensityPoint]:
        # The first refresh fills the past day; later ones need only the latest hour.
        return self.fetch_history() if not self._hours else self.fetch_latest()

    def fetch_forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        hours = next((h for h in FORECAST_HORIZONS_H if h * 3600 >= horizon_s), FORECAST_HORIZONS_H[-1])
        params = {"horizonHours": str(hours)} if hours != 24 else {}
        return self._entries(self._get("forecast", **params), "forecast", "forecast", forecast=True)

    def fetch_range(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        now = self._wall()
        if start >= now:
            return self.fetch_forecast(now, (end - now).total_seconds())
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        points: list[IntensityPoint] = []
        t = start
        while t < end:
            chunk_end = min(end, t + MAX_RANGE)
            doc = self._get("past-range", start=t.strftime(fmt), end=chunk_end.strftime(fmt))
            points += self._entries(doc, "data", "past-range")
            t = chunk_end
        return points
