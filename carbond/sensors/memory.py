"""RAM: RAPL DRAM counters when the platform has them, else a W-per-GB model.

The model: ``P = ram_w_per_gb × installed GB``, constant (DRAM refresh and background
power dominate; access power is second order). Default 0.375 W/GB (3 W per 8 GB
DIMM, from Micron's DDR4 power calculator, TN-40-07). See docs/methodology.md.

Memory in use does not enter the energy, so it is re-read at most every
``usage_refresh_s`` (10 s): the tick stays cheap and the figure is still current enough
for a dashboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from carbond.sensors.base import DeviceInfo, Reading
from carbond.sensors.procfs import SystemStats
from carbond.sensors.rapl import RAPL_ZONE_CEILING_W, Rapl, RaplPermissionError

GB = 1e9


class MemorySensor:
    def __init__(
        self,
        stats: SystemStats,
        rapl: Rapl | None,
        *,
        w_per_gb: float = 0.375,
        usage_refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._clock = clock
        self._usage_refresh_s = usage_refresh_s
        vm = stats.virtual_memory()
        self._usage = (clock(), float(vm.percent), float(vm.used))
        self.total_bytes = float(vm.total)
        self._model = f"{self.total_bytes / GB:.0f} GB"
        self.model_w = w_per_gb * self.total_bytes / GB
        self.w_per_gb = w_per_gb
        self._drams = rapl.drams if rapl is not None and rapl.drams and rapl.check_readable() else ()

    def _names(self) -> list[str]:
        return ["ram"] if len(self._drams) <= 1 else [f"ram{i}" for i in range(len(self._drams))]

    def _usage_now(self, t: float) -> tuple[float, float]:
        read_at, percent, used = self._usage
        if t - read_at >= self._usage_refresh_s:
            vm = self._stats.virtual_memory()
            self._usage = (t, percent, used) = (t, float(vm.percent), float(vm.used))
        return percent, used

    def read(self) -> list[Reading]:
        t = self._clock()
        percent, used = self._usage_now(t)
        model = self._model
        if not self._drams:
            return [Reading("ram", "ram", model, t, self.model_w, self.model_w,
                            utilization_pct=percent, memory_used_bytes=used)]
        readings = []
        share_w = self.model_w / len(self._drams)
        for name, zone in zip(self._names(), self._drams, strict=True):
            try:
                counter: float | None = zone.read_j()
            except RaplPermissionError:
                self._drams = ()
                return self.read()
            except (OSError, ValueError):
                counter = None
            readings.append(Reading(name, "ram", model, t, share_w, share_w, counter_j=counter,
                                    counter_wrap_j=zone.wrap_j, counter_ceiling_w=RAPL_ZONE_CEILING_W,
                                    utilization_pct=percent, memory_used_bytes=used))
        return readings

    def devices(self) -> list[DeviceInfo]:
        if not self._drams:
            return [DeviceInfo("ram", "ram", f"{self.total_bytes / GB:.0f} GB", "model",
                               f"{self.w_per_gb:g} W/GB × {self.total_bytes / GB:.1f} GB = {self.model_w:.1f} W")]
        return [DeviceInfo(name, "ram", f"{self.total_bytes / GB:.0f} GB", "counter", f"RAPL {zone.label}")
                for name, zone in zip(self._names(), self._drams, strict=True)]

    def close(self) -> None:
        pass
