"""Time-varying intensity: per-hour cache, backoff and table fallback shared by live providers.

The daemon calls ``intensity_at(when)`` on every tick, from its tick thread: it reads the
per-hour cache and never touches the network. ``refresh()`` fills the cache; the daemon runs
it from a scheduler job (once at start, then every few minutes). A failed refresh backs off
exponentially, or as long as the server's ``Retry-After`` says, and never raises. An hour the
cache has no value for is answered from the zone table, with ``provider="table"``, so the
``intensity_source`` tag tells which one each point used.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from carbond.intensity.http import HttpClient, ProviderError, ProviderRateLimitedError
from carbond.intensity.table import Intensity, IntensityProvider
from carbond.logutil import Throttled

log = logging.getLogger(__name__)

HOUR_S = 3600
KEEP_HOURS = 72  # cached hours older than this are dropped


@dataclass(frozen=True)
class IntensityPoint:
    """One period of a provider's series: ``value_g_per_kwh`` from ``start`` for ``duration_s``."""

    start: datetime  # aware UTC
    duration_s: float
    value_g_per_kwh: float
    forecast: bool = False  # predicted ahead of time, not measured or estimated after the fact

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)


def hour_of(when: datetime) -> int:
    """The start of the UTC hour a moment falls in, as epoch seconds."""
    return int(when.timestamp() // HOUR_S) * HOUR_S


def hourly_means(points: Iterable[IntensityPoint]) -> dict[int, tuple[float, bool]]:
    """Time-weighted mean per UTC hour over the covered part of each hour.

    Returns hour start (epoch s) → (mean g/kWh, whether any of it was a forecast). Where a
    measured point and a forecast cover the same hour, the measured ones win.
    """
    sums: dict[tuple[int, bool], list[float]] = {}
    for p in points:
        a, b = p.start.timestamp(), p.start.timestamp() + p.duration_s
        h = int(a // HOUR_S) * HOUR_S
        while h < b:
            overlap = min(b, h + HOUR_S) - max(a, h)
            if overlap > 0:
                acc = sums.setdefault((h, p.forecast), [0.0, 0.0])
                acc[0] += p.value_g_per_kwh * overlap
                acc[1] += overlap
            h += HOUR_S
    out: dict[int, tuple[float, bool]] = {}
    for (h, fc), (weighted, secs) in sorted(sums.items(), key=lambda kv: kv[0][1], reverse=True):
        if secs > 0:
            out[h] = (weighted / secs, fc)  # measured (fc=False) sorted last: overrides forecasts
    return out


def points_from_starts(starts: Sequence[tuple[datetime, float]], default_step_s: float,
                       forecast: bool = False) -> list[IntensityPoint]:
    """Points from (start, value) pairs, each lasting until the next (at most the usual step)."""
    ordered = sorted(starts)
    steps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(ordered)]
    positive = sorted(s for s in steps if s > 0)
    step = positive[(len(positive) - 1) // 2] if positive else default_step_s  # the (lower) median step
    out = []
    for i, (start, value) in enumerate(ordered):
        dur = step if i + 1 == len(ordered) else min(step, (ordered[i + 1][0] - start).total_seconds())
        if dur > 0:
            out.append(IntensityPoint(start, dur, value, forecast))
    return out


class Backoff:
    """Exponential backoff after failures, at least as long as any ``Retry-After``."""

    def __init__(self, base_s: float = 30.0, max_s: float = 1800.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_s, self.max_s, self._clock = base_s, max_s, clock
        self.failures = 0
        self._until = float("-inf")

    def ready(self) -> bool:
        return self._clock() >= self._until

    def retry_in_s(self) -> float:
        return max(0.0, self._until - self._clock())

    def failure(self, retry_after_s: float | None = None) -> float:
        delay = min(self.max_s, self.base_s * 2 ** self.failures)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)  # the server's word is a minimum, even past max_s
        self.failures += 1
        self._until = self._clock() + delay
        return delay

    def success(self) -> None:
        self.failures = 0
        self._until = float("-inf")


class RefreshingProvider(IntensityProvider, Protocol):
    def refresh(self, now: datetime | None = None) -> bool: ...


class ForecastingProvider(Protocol):
    def forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]: ...


class LiveProvider:
    """Base of the network providers. Subclasses implement the ``fetch_*`` methods.

    ``fallback`` answers hours the provider has no value for (normally the zone table's
    :class:`StaticProvider`). ``signal`` says whether the provider's values are average
    intensities (``intensity_g_per_kwh``) or marginal rates (``marginal_g_per_kwh``).
    """

    name = "live"
    signal = "average"  # or "marginal": which quantity the provider's values are

    def __init__(self, fallback: IntensityProvider, *, http: HttpClient | None = None, basis: str = "lifecycle",
                 source: str = "", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC), backoff: Backoff | None = None) -> None:
        self.fallback = fallback
        self.http = http or HttpClient()
        self.basis = basis
        self.source = source or self.name
        self._wall = wall
        self.backoff = backoff or Backoff(clock=clock)
        self._hours: dict[int, tuple[float, bool]] = {}  # replaced whole on refresh: readers need no lock
        self._memo: tuple[int, tuple[float, bool], Intensity] | None = None
        self._refresh_lock = threading.Lock()
        self._warn = Throttled(log)
        self.stats: dict[str, Any] = {"refreshes": 0, "failures": 0, "last_error": "", "last_success": None}

    # --- subclass API -------------------------------------------------------------------
    def fetch_recent(self, now: datetime) -> list[IntensityPoint]:
        """The current hour and whatever recent or upcoming hours one cheap call gives."""
        raise NotImplementedError

    def fetch_forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        raise ProviderError(f"{self.name} gives no forecast")

    def fetch_range(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        """Points covering [start, end): history for the past, forecast for the future."""
        raise ProviderError(f"{self.name} gives no history")

    # --- the tick path: memory only -----------------------------------------------------
    def value_at(self, when: datetime) -> tuple[float, bool] | None:
        return self._hours.get(hour_of(when))

    def intensity_at(self, when: datetime) -> Intensity:
        h = hour_of(when)
        found = self._hours.get(h)
        if found is None:
            return self.fallback.intensity_at(when)
        memo = self._memo
        if memo is not None and memo[0] == h and memo[1] is found:
            return memo[2]  # every tick of an hour gets the same object: no per-tick allocation
        i = self._as_intensity(self.fallback.intensity_at(when), found[0], found[1], when)
        self._memo = (h, found, i)
        return i

    def _as_intensity(self, base: Intensity, value: float, is_forecast: bool, when: datetime) -> Intensity:
        note = "forecast" if is_forecast else "measured"
        return replace(base, intensity_g_per_kwh=value, basis=self.basis, provider=self.name,
                       source=f"{self.source} ({note}, hour {datetime.fromtimestamp(hour_of(when), UTC):%Y-%m-%dT%H}Z)",
                       year=when.year)

    # --- the scheduler path: network ----------------------------------------------------
    def refresh(self, now: datetime | None = None) -> bool:
        """Fetch recent values into the cache. Never raises; False when skipped or failed."""
        if not self._refresh_lock.acquire(blocking=False):
            return False  # one refresh at a time
        try:
            if not self.backoff.ready():
                return False
            now = now or self._wall()
            self.stats["refreshes"] += 1
            try:
                points = self.fetch_recent(now)
            except ProviderError as exc:
                retry = exc.retry_after_s if isinstance(exc, ProviderRateLimitedError) else None
                delay = self.backoff.failure(retry)
                self.stats["failures"] += 1
                self.stats["last_error"] = str(exc)
                self._warn.warning(f"refresh:{self.name}", "%s: %s; using the table, next try in %.0fs",
                                   self.name, exc, delay)
                return False
            self.backoff.success()
            self.store(points, now)
            self.stats["last_success"] = now.isoformat()
            return True
        finally:
            self._refresh_lock.release()

    def store(self, points: Iterable[IntensityPoint], now: datetime) -> None:
        """Merge points into the per-hour cache (measured beats forecast; newer beats older)."""
        fresh = hourly_means(points)
        merged = dict(self._hours)
        for h, (value, fc) in fresh.items():
            old = merged.get(h)
            if old is None or fc is False or old[1] is True:
                merged[h] = (value, fc)
        oldest = hour_of(now) - KEEP_HOURS * HOUR_S
        self._hours = {h: v for h, v in merged.items() if h >= oldest}

    def forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        """Forecast points from ``now`` for ``horizon_s`` (network; raises :class:`ProviderError`)."""
        return sorted(self.fetch_forecast(now, horizon_s), key=lambda p: p.start)

    def fetch_at(self, when: datetime) -> Intensity:
        """The value for the hour of ``when`` fetched now (for the CLI); the table if the provider fails."""
        h = datetime.fromtimestamp(hour_of(when), UTC)
        try:
            found = hourly_means(self.fetch_range(h, h + timedelta(hours=1))).get(hour_of(when))
        except ProviderError as exc:
            log.warning("%s: %s; showing the table's value", self.name, exc)
            found = None
        base = self.fallback.intensity_at(when)
        return base if found is None else self._as_intensity(base, found[0], found[1], when)

    def status(self) -> dict[str, Any]:
        return {"provider": self.name, "cached_hours": len(self._hours), "failures_in_a_row": self.backoff.failures,
                "retry_in_s": self.backoff.retry_in_s(), **self.stats}

    def close(self) -> None:
        self.http.close()


@dataclass
class MarginalOverlay:
    """Average intensity from one provider, marginal rate from another (e.g. WattTime).

    The marginal value goes to ``Intensity.marginal_g_per_kwh`` only; the average, its basis
    and the ``provider`` tag stay the average provider's.
    """

    average: IntensityProvider
    marginal: LiveProvider

    def intensity_at(self, when: datetime) -> Intensity:
        base = self.average.intensity_at(when)
        found = self.marginal.value_at(when)
        if found is None:
            return base
        return replace(base, marginal_g_per_kwh=found[0], marginal_source=self.marginal.name)

    def refresh(self, now: datetime | None = None) -> bool:
        ok = True
        refresh = getattr(self.average, "refresh", None)
        if refresh is not None:
            ok = bool(refresh(now))
        return self.marginal.refresh(now) and ok

    signal = "marginal"  # planning uses the marginal rate: it is what a shifted load changes

    def forecast(self, now: datetime, horizon_s: float) -> list[IntensityPoint]:
        return self.marginal.forecast(now, horizon_s)

    def status(self) -> dict[str, Any]:
        avg = getattr(self.average, "status", None)
        return {"average": avg() if avg else {"provider": "table"}, "marginal": self.marginal.status()}

    def close(self) -> None:
        for p in (self.average, self.marginal):
            close = getattr(p, "close", None)
            if close:
                close()
