"""CPU: RAPL package counters when readable, else a utilization model on the TDP.

Utilization comes from ``cpu_percent(interval=None)`` (``Procfs`` on Linux, psutil
elsewhere): the share since the previous call, from two ``/proc/stat`` readings — it
never sleeps.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path

from carbond.power import cpu_tdp_w
from carbond.sensors.base import DeviceInfo, Reading
from carbond.sensors.procfs import SystemStats
from carbond.sensors.rapl import PERMISSION_HINT, RAPL_ZONE_CEILING_W, Rapl, RaplPermissionError

log = logging.getLogger(__name__)


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class CpuSensor:
    def __init__(
        self,
        stats: SystemStats,
        rapl: Rapl | None,
        *,
        tdp_w: float = 0.0,
        idle_fraction: float = 0.3,
        model: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._clock = clock
        self.model = model or cpu_model_name()
        logical = stats.cpu_count(logical=True) or 1
        if tdp_w > 0:
            self.tdp_w, self.tdp_source = tdp_w, "configured"
        else:
            self.tdp_w, self.tdp_source = cpu_tdp_w(self.model, logical)
        self.idle_fraction = idle_fraction
        self._rapl = rapl if rapl is not None and rapl.packages and rapl.check_readable() else None
        stats.cpu_percent(interval=None)  # prime: the next call reports the share since now

    def busy_ticks(self) -> int | None:
        """Host busy CPU ticks (USER_HZ) read by the last ``read``, when the stats source offers them."""
        return getattr(self._stats, "busy_ticks", None)

    @property
    def uses_rapl(self) -> bool:
        return self._rapl is not None

    def read(self) -> list[Reading]:
        util = float(self._stats.cpu_percent(interval=None))
        rapl = self._rapl
        if rapl is None:
            return [self._reading("cpu0", self.tdp_w, util, None, None)]
        per_pkg_w = self.tdp_w / len(rapl.packages)
        readings = []
        for i, zone in enumerate(rapl.packages):
            try:
                counter = zone.read_j()
            except RaplPermissionError:
                log.warning(PERMISSION_HINT.format(root=rapl.root))
                self._rapl = None
                return [self._reading("cpu0", self.tdp_w, util, None, None)]
            except (OSError, ValueError):
                counter = None  # this tick falls back to the model for this package
            readings.append(self._reading(f"cpu{i}", per_pkg_w, util, counter, zone.wrap_j))
        return readings

    def _reading(self, device: str, tdp_w: float, util: float, counter: float | None, wrap: float | None) -> Reading:
        return Reading(
            device=device,
            kind="cpu",
            model=self.model,
            t_s=self._clock(),
            idle_w=tdp_w * self.idle_fraction,
            max_w=tdp_w,
            counter_j=counter,
            counter_wrap_j=wrap,
            counter_ceiling_w=RAPL_ZONE_CEILING_W if counter is not None else None,
            utilization_pct=util,
        )

    def devices(self) -> list[DeviceInfo]:
        if self._rapl is None:
            return [DeviceInfo("cpu0", "cpu", self.model, "model", f"utilization × TDP {self.tdp_w:g} W ({self.tdp_source})")]
        return [
            DeviceInfo(f"cpu{i}", "cpu", self.model, "counter", f"RAPL {zone.label} ({zone.path})")
            for i, zone in enumerate(self._rapl.packages)
        ]

    def close(self) -> None:
        pass
