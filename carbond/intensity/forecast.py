"""The greenest start time for a job of known length, from a forecast series. Pure.

A job of ``duration_s`` drawing constant power emits in proportion to the mean intensity
over its window, so the best start is the one whose window has the lowest mean. The job must
start no earlier than ``now`` and finish within ``within_s`` of it, and its whole window must
be covered by the forecast. Over a step-wise series the mean of a sliding window is piecewise
linear in its start, so the minimum lies where the window's start or end meets a step
boundary: only those starts (and ``now``) are evaluated, which makes the answer exact.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from carbond.errors import CarbondError, UsageError
from carbond.intensity.live import IntensityPoint

EPS_S = 1e-6


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    mean_g_per_kwh: float  # time-weighted mean intensity over the window


@dataclass(frozen=True)
class ForecastResult:
    duration_s: float
    best: Window
    now: Window | None  # starting right away; None when the forecast does not cover it

    @property
    def saving_g_per_kwh(self) -> float | None:
        return None if self.now is None else self.now.mean_g_per_kwh - self.best.mean_g_per_kwh

    @property
    def saving_pct(self) -> float | None:
        if self.now is None or self.now.mean_g_per_kwh <= 0:
            return None
        return 100.0 * (self.now.mean_g_per_kwh - self.best.mean_g_per_kwh) / self.now.mean_g_per_kwh

    def saving_g(self, energy_kwh: float) -> float | None:
        """Expected grams saved for a job using ``energy_kwh`` (times PUE, if facility energy is wanted)."""
        s = self.saving_g_per_kwh
        return None if s is None else s * energy_kwh

    def as_dict(self) -> dict[str, Any]:
        def win(w: Window | None) -> dict[str, Any] | None:
            return None if w is None else {"start": w.start.isoformat(), "end": w.end.isoformat(),
                                           "mean_g_per_kwh": w.mean_g_per_kwh}

        return {"duration_s": self.duration_s, "best": win(self.best), "now": win(self.now),
                "saving_g_per_kwh": self.saving_g_per_kwh, "saving_pct": self.saving_pct}


class _Steps:
    """Non-overlapping steps with a running integral, for O(log n) window means."""

    def __init__(self, points: Sequence[IntensityPoint]) -> None:
        ordered = sorted(points, key=lambda p: p.start)
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.values: list[float] = []
        for p in ordered:
            a, b = p.start.timestamp(), p.start.timestamp() + p.duration_s
            if self.ends and a < self.ends[-1]:
                self.ends[-1] = a  # a later point overrides the tail of an overlapping one
                if self.ends[-1] <= self.starts[-1]:
                    self.starts.pop(), self.ends.pop(), self.values.pop()
            if b > a:
                self.starts.append(a)
                self.ends.append(b)
                self.values.append(p.value_g_per_kwh)
        self.cum = [0.0]
        for a, b, v in zip(self.starts, self.ends, self.values, strict=True):
            self.cum.append(self.cum[-1] + v * (b - a))
        # run_end[i]: where the gap-free run containing step i ends
        self.run_end = list(self.ends)
        for i in range(len(self.starts) - 2, -1, -1):
            if abs(self.starts[i + 1] - self.ends[i]) <= EPS_S:
                self.run_end[i] = self.run_end[i + 1]

    def _index(self, t: float) -> int:
        i = bisect.bisect_right(self.starts, t + EPS_S) - 1
        return i if i >= 0 and t < self.ends[i] + EPS_S else -1

    def _integral(self, t: float, i: int) -> float:
        return self.cum[i] + self.values[i] * (t - self.starts[i])

    def mean(self, a: float, b: float) -> float | None:
        """Mean over [a, b] if one gap-free run covers it, else None."""
        i = self._index(a)
        if i < 0 or self.run_end[i] < b - EPS_S:
            return None
        j = bisect.bisect_right(self.starts, b - EPS_S) - 1
        return (self._integral(b, j) - self._integral(a, i)) / (b - a)


def forecast(points: Sequence[IntensityPoint], duration_s: float, within_s: float, now: datetime) -> ForecastResult:
    """The start in [now, now + within_s − duration_s] with the lowest mean intensity, and starting now."""
    if not duration_s > 0:
        raise UsageError(f"--duration must be positive, got {duration_s:g}s")
    if within_s < duration_s:
        raise UsageError(f"--within ({within_s:g}s) is shorter than --duration ({duration_s:g}s): "
                         "the job must finish within the window")
    if not points:
        raise CarbondError("the provider returned no forecast points")
    steps = _Steps(points)
    t0 = now.timestamp()
    latest = t0 + within_s - duration_s
    candidates = {t0}
    for b in (*steps.starts, *steps.ends):
        for c in (b, b - duration_s):
            if t0 - EPS_S <= c <= latest + EPS_S:
                candidates.add(min(max(c, t0), latest))
    best: tuple[float, float] | None = None
    for c in sorted(candidates):
        m = steps.mean(c, c + duration_s)
        if m is not None and (best is None or m < best[1] - 1e-9 * max(1.0, abs(best[1]))):
            best = (c, m)
    if best is None:
        first = datetime.fromtimestamp(steps.starts[0], UTC)
        last = datetime.fromtimestamp(max(steps.run_end), UTC)
        raise CarbondError(f"the forecast covers {first:%Y-%m-%dT%H:%MZ} to {last:%Y-%m-%dT%H:%MZ} only: no "
                           f"{timedelta(seconds=duration_s)} window within {timedelta(seconds=within_s)} from now fits; "
                           "try a shorter --duration or --within")
    now_mean = steps.mean(t0, t0 + duration_s)

    def window(start: float, mean: float) -> Window:
        return Window(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + duration_s, UTC), mean)

    return ForecastResult(duration_s, window(*best), None if now_mean is None else window(t0, now_mean))
