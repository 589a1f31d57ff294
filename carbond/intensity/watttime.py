"""WattTime API v3: marginal operating emission rates (MOER, ``co2_moer``).

A marginal rate is what a change in load changes: for deciding when or where to run, never
to be added to or averaged with average intensities. Its values go to
``Intensity.marginal_g_per_kwh`` (:class:`carbond.intensity.live.MarginalOverlay`).

``GET /login`` with HTTP Basic auth answers ``{"token": "..."}`` (valid 30 minutes); data
endpoints take ``Authorization: Bearer TOKEN``. Documented shape of ``/v3/forecast`` and
``/v3/historical``::

    {"data": [{"point_time": "2026-11-30T10:00:00+00:00", "value": 870.0}, ...],
     "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh",
              "data_point_period_seconds": 300, "generated_at": "..."}}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from carbond.errors import ConfigError
from carbond.intensity.http import ProviderAuthError, ProviderBadResponseError, number, parse_time_utc
from carbond.intensity.live import IntensityPoint, LiveProvider
from carbond.intensity.table import IntensityProvider

DEFAULT_URL = "https://api.watttime.org"
TOKEN_LIFETIME_S = 25 * 60  # tokens last 30 minutes; renew a little before
UNITS_TO_G_PER_KWH = {"lbs_co2_per_mwh": 0.45359237, "g_co2_per_kwh": 1.0, "kg_co2_per_mwh": 1.0}
MAX_HORIZON_H = 72


class WattTime(LiveProvider):
    name = "watttime"
    signal = "marginal"

    def __init__(self, region: str, username: str, password: str, fallback: IntensityProvider, *, base_url: str = "",
                 signal_type: str = "co2_moer", clock: Callable[[], float] = time.monotonic, **kw: Any) -> None:
        if not username or not password:
            raise ConfigError("[intensity] watttime_username and watttime_password: WattTime needs an account "
                              "(set them in the config file, or CARBOND_WATTTIME_USERNAME / CARBOND_WATTTIME_PASSWORD)")
        if not region:
            raise ConfigError("[intensity] marginal_zone: WattTime needs a region id (e.g. CAISO_NORTH)")
        super().__init__(fallback, basis="direct", source=f"WattTime v3 {signal_type}, region {region}", clock=clock, **kw)
        self.region, self.signal_type = region, signal_type
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self._auth = (username, password)
        self._clock = clock
        self._token: tuple[str, float] | None = None

    def _login(self) -> str:
        doc = self.http.get_json(f"{self.base_url}/login", basic_auth=self._auth, what="WattTime login")
        token = doc.get("token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderBadResponseError("WattTime login: no token in the answer")
        self._token = (token, self._clock())
        return token

    def _get(self, endpoint: str, **params: str) -> dict[str, Any]:
        for attempt in (0, 1):
            if self._token is None or self._clock() - self._token[1] > TOKEN_LIFETIME_S:
                self._login()
            assert self._token is not None
            try:
                doc = self.http.get_json(f"{self.base_url}/v3/{endpoint}",
                                         params={"region": self.region, "signal_type": self.signal_type, **params},
                                         headers={"Authorization": f"Bearer {self._token[0]}"},
                                         what=f"WattTime {endpoint} ({self.region})")
            except ProviderAuthError:
                self._token = None  # expired or revoked: log in again, once
                if attempt:
                    raise
                continue
            if not isinstance(doc, dict):
                raise ProviderBadResponseError(f"WattTime {endpoint}: expected a JSON object")
            return doc
        raise AssertionError("unreachable")

    def _points(self, doc: dict[str, Any], endpoint: str, forecast: bool) -> list[IntensityPoint]:
        meta, data = doc.get("meta"), doc.get("data")
        if not isinstance(meta, dict) or not isinstance(data, list):
            raise ProviderBadResponseError(f"WattTime {endpoint}: expected 'data' list and 'meta' object")
        factor = UNITS_TO_G_PER_KWH.get(str(meta.get("units")))
        if factor is None:
            raise ProviderBadResponseError(f"WattTime {endpoint}: units {meta.get('units')!r} are not an emission rate")
        step = meta.get("data_point_period_seconds", 300)
        step_s = number(step, f"WattTime {endpoint} meta.data_point_period_seconds") or 300.0
        out = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise ProviderBadResponseError(f"WattTime {endpoint}: data[{i}] is not an object")
            t = parse_time_utc(item.get("point_time"), f"WattTime {endpoint} data[{i}].point_time")
            out.append(IntensityPoint(t, step_s, number(item.get("value"), f"WattTime {endpoint} data[{i}].value") * factor,
                                      forecast))
        return out

    def fetch_forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        hours = max(1, min(MAX_HORIZON_H, math.ceil(horizon_s / 3600)))
        return self._points(self._get("forecast", horizon_hours=str(hours)), "forecast", forecast=True)

    def fetch_recent(self, now: datetime) -> list[IntensityPoint]:
        return self.fetch_forecast(now, 24 * 3600)

    def fetch_range(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        now = self._wall()
        if start >= now:
            return self.fetch_forecast(now, (end - now).total_seconds())
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        doc = self._get("historical", start=start.strftime(fmt), end=min(end, now).strftime(fmt))
        return self._points(doc, "historical", forecast=False)
