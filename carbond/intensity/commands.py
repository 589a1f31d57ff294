"""What ``carbond intensity`` and ``carbond forecast`` print: documents and lines, built here so
that ``cli.py`` only parses arguments and maps errors to exit codes.

- :func:`intensity_report` — one zone's value at a moment, from the configured provider when
  the zone is the configured one, else the table; basis, source and year always shown;
- :func:`zone_list` — every zone of the table;
- :func:`forecast_report` — the greenest start for a job of a given length, and the saving
  against starting now, from the configured provider's forecast.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from carbond.errors import UsageError
from carbond.intensity.forecast import ForecastResult, forecast
from carbond.intensity.providers import ProviderSettings, make_provider
from carbond.intensity.table import Intensity, ZoneTable, load_table


def _close(provider: Any) -> None:
    close = getattr(provider, "close", None)
    if close is not None:
        close()


def intensity_doc(i: Intensity, at: datetime | None = None) -> dict[str, Any]:
    doc = asdict(i)
    doc["at"] = at.isoformat() if at else None
    if i.marginal_g_per_kwh is None:
        doc.pop("marginal_g_per_kwh")
        doc.pop("marginal_source")
    return doc


def intensity_line(i: Intensity) -> str:
    year = f", {i.year}" if i.year else ""
    line = (f"{i.zone} ({i.name}): {i.intensity_g_per_kwh:g} gCO2e/kWh, {i.basis} basis, {i.source}{year} "
            f"[{i.provider}]")
    if i.marginal_g_per_kwh is not None:
        line += f"; marginal {i.marginal_g_per_kwh:.4g} gCO2/kWh [{i.marginal_source}]"
    return line


def intensity_report(settings: ProviderSettings, zone: str | None = None, at: datetime | None = None,
                     table: ZoneTable | None = None) -> tuple[dict[str, Any], str]:
    """(JSON document, text line) for ``carbond intensity [ZONE] [--at T]``.

    The configured provider answers when ZONE is omitted or is the configured zone (fetching
    the hour of ``at``, or now); any other zone, and every failure, gives the table's value.
    """
    table = table or load_table()
    configured = table.zone(settings.zone)
    row = table.zone(zone) if zone else configured
    when = at or datetime.now(UTC)
    if row.zone != configured.zone:
        i = row.intensity()  # another zone than the configured one: the table
    else:
        provider = make_provider(settings, table=table)
        try:
            fetch = getattr(provider, "fetch_at", None)
            refresh = getattr(provider, "refresh", None)
            if fetch is not None:
                i = fetch(when)
            else:
                if refresh is not None:
                    refresh(when)
                i = provider.intensity_at(when)
        finally:
            _close(provider)
    return intensity_doc(i, at), intensity_line(i)


def zone_list(table: ZoneTable | None = None, kind: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(JSON rows, text lines with a header) for ``carbond intensity --list``."""
    table = table or load_table()
    rows = [r for r in table.rows if kind is None or r.kind == kind]
    lines = [f"{'ZONE':28} {'NAME':36} {'gCO2e/kWh':>10} {'BASIS':9} {'YEAR':4} {'PUE':5} SOURCE"]
    for r in rows:
        pue = f"{r.pue:g}" if r.pue else ""
        lines.append(f"{r.zone:28} {r.name[:36]:36} {r.intensity_g_per_kwh:10g} {r.basis:9} {r.year:<4} {pue:5} {r.source}")
    return [asdict(r) for r in rows], lines


def forecast_settings(settings: ProviderSettings, zone: str | None, table: ZoneTable | None = None) -> ProviderSettings:
    """Apply ``carbond forecast --zone Z``: WattTime region, GB region, or table/provider zone."""
    if not zone:
        return settings
    table = table or load_table()
    if settings.marginal == "watttime" or settings.provider == "watttime":
        return replace(settings, marginal_zone=zone)
    if settings.provider == "ukci":
        return replace(settings, provider_zone=zone)
    if table.get(zone) is not None:
        return replace(settings, zone=zone, provider_zone="")
    return replace(settings, provider_zone=zone)


def forecast_report(settings: ProviderSettings, duration_s: float, within_s: float = 48 * 3600,
                    zone: str | None = None, now: datetime | None = None,
                    table: ZoneTable | None = None) -> tuple[dict[str, Any], list[str]]:
    """(JSON document, text lines) for ``carbond forecast --duration D [--within W] [--zone Z]``.

    UsageError (exit 2) for bad arguments or a provider without forecasts; a provider that
    fails raises its ProviderError (a CarbondError: exit 1).
    """
    now = now or datetime.now(UTC)
    s = forecast_settings(settings, zone, table)
    if s.provider == "table" and not s.marginal:
        raise UsageError("carbond forecast needs a provider that forecasts: set [intensity] provider to ukci, "
                         "electricitymaps or series, or [intensity] marginal = watttime (the zone table is static)")
    provider = make_provider(s, table=table)
    try:
        points = provider.forecast(now, within_s)  # type: ignore[attr-defined]
    finally:
        _close(provider)
    result: ForecastResult = forecast(points, duration_s, within_s, now)
    signal = getattr(provider, "signal", "average")
    name = getattr(getattr(provider, "marginal", provider), "name", s.provider)
    where = s.marginal_zone if signal == "marginal" else (s.provider_zone or s.zone)
    basis = getattr(getattr(provider, "marginal", provider), "basis", "")
    if name == "series":
        basis = provider.series.basis  # type: ignore[attr-defined]
    doc = {**result.as_dict(), "within_s": within_s, "zone": where, "provider": name, "signal": signal,
           "basis": basis, "generated_at": now.isoformat()}
    unit = "gCO2/kWh marginal" if signal == "marginal" else "gCO2e/kWh"
    lines = [
        f"Greenest start for a {timedelta(seconds=duration_s)} job finishing within {timedelta(seconds=within_s)} "
        f"({where}, {name} forecast, {signal}{', ' + basis + ' basis' if basis and signal == 'average' else ''}):",
        f"  start {result.best.start:%Y-%m-%d %H:%M}Z, end {result.best.end:%Y-%m-%d %H:%M}Z, "
        f"mean {result.best.mean_g_per_kwh:.1f} {unit}",
    ]
    if result.now is not None:
        lines.append(f"  starting now: mean {result.now.mean_g_per_kwh:.1f} {unit}; waiting saves "
                     f"{result.saving_g_per_kwh:.1f} {unit.split(' ')[0]} ({result.saving_pct:.0f}%)")
    else:
        lines.append("  starting now: not covered by the forecast")
    return doc, lines
