"""One registry for intensity providers, and the factory the daemon and CLI use.

Construction checks everything it can without the network (provider name, zone, key, series
file) and raises :class:`ConfigError`/:class:`UsageError` (exit 2) there, at start, not on
a later tick. Nothing here imports urllib3: live providers load it on their first request.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carbond.errors import ConfigError
from carbond.intensity.http import HttpClient
from carbond.intensity.table import BASES, Intensity, IntensityProvider, StaticProvider, Zone, ZoneTable, load_table

PROVIDERS = ("table", "series", "electricitymaps", "ukci", "watttime")
MARGINAL_PROVIDERS = ("", "watttime")


@dataclass(frozen=True)
class ProviderSettings:
    """What the factory needs; the daemon fills it from ``[region]`` and ``[intensity]``."""

    zone: str = "WORLD"  # [region] zone: the table zone, the fallback for every provider
    intensity_g_per_kwh: float = 0.0  # [region] intensity_g_per_kwh: a fixed override (0 = table)
    provider: str = "table"  # [intensity] provider
    provider_zone: str = ""  # [intensity] zone: the provider's own zone id ("" = from the region zone)
    series_file: str = ""  # [intensity] series_file
    series_basis: str = "lifecycle"  # [intensity] series_basis
    api_url: str = ""  # [intensity] api_url: base URL override ("" = the provider's documented URL)
    token: str = ""  # [intensity] token: Electricity Maps auth-token (secret)
    emission_factor_type: str = "lifecycle"  # [intensity] emission_factor_type (Electricity Maps)
    marginal: str = ""  # [intensity] marginal: "" or "watttime"
    marginal_zone: str = ""  # [intensity] marginal_zone: WattTime region, e.g. CAISO_NORTH
    watttime_username: str = ""  # [intensity] watttime_username
    watttime_password: str = ""  # [intensity] watttime_password (secret)
    marginal_api_url: str = ""  # [intensity] marginal_api_url: WattTime base URL override
    timeout_s: float = 10.0  # [intensity] timeout_s: per HTTP request


def table_provider(zone: Zone, override_g_per_kwh: float = 0.0) -> StaticProvider:
    row = zone.intensity()
    if override_g_per_kwh > 0:
        row = Intensity(row.zone, row.name, override_g_per_kwh, "configured", "region.intensity_g_per_kwh", 0, "config")
    return StaticProvider(row)


def electricitymaps_zone(zone: Zone) -> str:
    """The Electricity Maps zone id for a table zone, where they coincide."""
    if zone.kind == "cloud":
        return electricitymaps_zone(load_table().zone(zone.grid_zone))
    if zone.kind == "world" or (zone.kind == "subdivision" and zone.zone[:3] in ("US-", "CN-")):
        raise ConfigError(f"[intensity] zone: Electricity Maps has no zone for {zone.zone} ({zone.name}); set its "
                          "zone id (e.g. US-CAL-CISO, US-MIDA-PJM)")
    return zone.zone


def make_provider(s: ProviderSettings, *, table: ZoneTable | None = None, http: HttpClient | None = None,
                  clock: Callable[[], float] = time.monotonic,
                  wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> IntensityProvider:
    """The configured provider, falling back to the table zone's static value.

    Every provider has ``intensity_at(when)`` (memory only). Those that change over time also
    have ``refresh(now=None) -> bool`` (run it from a scheduler job), ``forecast(now,
    horizon_s)``, ``status() -> dict`` and ``close()``.
    """
    table = table or load_table()
    zone = table.zone(s.zone)
    fallback = table_provider(zone, s.intensity_g_per_kwh)
    if s.provider not in PROVIDERS:
        raise ConfigError(f"[intensity] provider {s.provider!r} is unknown; valid: {', '.join(PROVIDERS)}")
    if s.marginal not in MARGINAL_PROVIDERS:
        raise ConfigError(f"[intensity] marginal {s.marginal!r} is unknown; valid: '' (none), watttime")
    if not s.timeout_s > 0:
        raise ConfigError(f"[intensity] timeout_s must be greater than 0, got {s.timeout_s!r}")
    live = s.provider in ("electricitymaps", "ukci", "watttime") or bool(s.marginal)
    if live and http is None and importlib.util.find_spec("urllib3") is None:
        raise ConfigError(f"[intensity] provider {s.provider or s.marginal!r} needs urllib3 for HTTP: "
                          "pip install urllib3 (or carbond[influx], which brings it)")
    http = http or HttpClient(s.timeout_s)
    kw: dict[str, Any] = {"http": http, "clock": clock, "wall": wall}
    average: IntensityProvider
    if s.provider in ("table", "watttime"):  # watttime alone = the table's average plus WattTime's marginal
        average = fallback
    elif s.provider == "series":
        from carbond.intensity.series import SeriesProvider

        if not s.series_file:
            raise ConfigError("[intensity] series_file: the series provider needs a CSV file "
                              "(time,intensity_g_per_kwh per row)")
        if s.series_basis not in BASES:
            raise ConfigError(f"[intensity] series_basis {s.series_basis!r} must be one of {', '.join(BASES)}")
        average = SeriesProvider(s.series_file, fallback, s.series_basis)
    elif s.provider == "electricitymaps":
        from carbond.intensity.electricitymaps import ElectricityMaps

        average = ElectricityMaps(s.provider_zone or electricitymaps_zone(zone), s.token, fallback,
                                  base_url=s.api_url, emission_factor_type=s.emission_factor_type, **kw)
    else:
        from carbond.intensity.ukci import UkCarbonIntensity, parse_region

        region = s.provider_zone if s.provider_zone else "national" if zone.country == "GB" else None
        if region is None:
            raise ConfigError(f"[intensity] zone: the GB Carbon Intensity API covers Great Britain only; region zone "
                              f"{zone.zone} is not in GB (set [region] zone = GB, or [intensity] zone = national or 1-18)")
        average = UkCarbonIntensity(parse_region(region), fallback, base_url=s.api_url, **kw)
    if s.marginal == "watttime" or s.provider == "watttime":
        from carbond.intensity.live import MarginalOverlay
        from carbond.intensity.watttime import WattTime

        region = s.marginal_zone or (s.provider_zone if s.provider == "watttime" else "")
        marginal = WattTime(region, s.watttime_username, s.watttime_password, fallback,
                            base_url=s.marginal_api_url or (s.api_url if s.provider == "watttime" else ""), **kw)
        return MarginalOverlay(average, marginal)
    return average
