"""NVIDIA GPUs through NVML, injected: ``NvmlGpus(nvml=module)``.

Per device, the best source it supports: the energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta and newer), else measured power
(``nvmlDeviceGetPowerUsage``, mW), else the utilization model with ``max`` from the
device's own power limit. NVML errors are converted here, once: a lost GPU is marked
unavailable and the rest continue; a call a device does not support is not asked again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from carbond.errors import SensorError
from carbond.logutil import Throttled
from carbond.power import gpu_power_range_w
from carbond.sensors.base import DeviceInfo, Reading

log = logging.getLogger(__name__)

# Memory in use and temperature do not enter the energy: they are read every 10 s and
# carried on the points in between, which saves two NVML calls per GPU and tick.
SLOW_REFRESH_S = 10.0


@dataclass
class _Gpu:
    index: int
    handle: Any
    name: str
    uuid: str
    has_counter: bool
    has_power: bool
    idle_w: float
    max_w: float
    max_source: str
    available: bool = True
    slow_read_at: float = float("-inf")  # when memory and temperature were last read
    process_seen_us: int = 0  # newest process-utilization sample seen
    memory_used_bytes: float | None = None
    temperature_c: float | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlGpus:
    def __init__(self, nvml: Any, *, simulated: bool = False, clock: Callable[[], float] = time.monotonic,
                 slow_refresh_s: float = SLOW_REFRESH_S) -> None:
        self._nvml = nvml
        self._slow_refresh_s = slow_refresh_s
        self._simulated = simulated
        self._clock = clock
        self._warn = Throttled(log)
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            raise SensorError(f"NVML is not usable: {exc}") from exc
        self._gpus = [self._probe_or_mark(i) for i in range(count)]

    def _probe_or_mark(self, index: int) -> _Gpu:
        """Probe one GPU; one that fails (lost at start) is kept as unavailable, the rest go on."""
        try:
            return self._probe(index)
        except self._nvml.NVMLError as exc:
            log.warning("gpu%d cannot be read (%s); marked unavailable, the other devices continue", index, exc)
            return _Gpu(index, None, "unknown", f"gpu{index}", False, False, 0.0, 0.0, "none", available=False)

    def _probe(self, index: int) -> _Gpu:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        uuid = _text(self._try(nvml.nvmlDeviceGetUUID, handle) or f"gpu{index}")
        arch = self._try(nvml.nvmlDeviceGetArchitecture, handle)
        has_counter = (arch is None or arch >= nvml.NVML_DEVICE_ARCH_VOLTA) and (
            self._try(nvml.nvmlDeviceGetTotalEnergyConsumption, handle) is not None
        )
        has_power = self._try(nvml.nvmlDeviceGetPowerUsage, handle) is not None
        idle_w, table_max_w = gpu_power_range_w(name)
        limit_mw = self._try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle) or self._try(
            nvml.nvmlDeviceGetPowerManagementLimit, handle
        )
        if limit_mw:
            max_w, max_source = limit_mw / 1000.0, "NVML power limit"
        else:
            max_w, max_source = table_max_w, "table"
        return _Gpu(index, handle, name, uuid, has_counter, has_power, min(idle_w, max_w), max_w, max_source)

    def _try(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _is_lost(self, exc: Exception) -> bool:
        return getattr(exc, "value", None) == self._nvml.NVML_ERROR_GPU_IS_LOST

    def read(self) -> list[Reading]:
        return [r for r in (self._read_one(g) for g in self._gpus if g.available) if r is not None]

    def _read_one(self, gpu: _Gpu) -> Reading | None:
        nvml = self._nvml
        counter_j = power_w = util = None
        t = self._clock()
        try:
            if gpu.has_counter:
                counter_j = self._field(gpu, "counter", nvml.nvmlDeviceGetTotalEnergyConsumption)
                counter_j = None if counter_j is None else counter_j / 1000.0
            # read even with a counter: a tick whose counter delta is not believable (driver
            # reload, glitch) falls back to the measured power instead of the model
            if gpu.has_power:
                power_w = self._field(gpu, "power", nvml.nvmlDeviceGetPowerUsage)
                power_w = None if power_w is None else power_w / 1000.0
            rates = self._field(gpu, "utilization", nvml.nvmlDeviceGetUtilizationRates)
            util = None if rates is None else float(rates.gpu)
            if t - gpu.slow_read_at >= self._slow_refresh_s:
                info = self._field(gpu, "memory", nvml.nvmlDeviceGetMemoryInfo)
                temp = self._field(gpu, "temperature", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
                gpu.memory_used_bytes = None if info is None else float(info.used)
                gpu.temperature_c = None if temp is None else float(temp)
                gpu.slow_read_at = t
        except nvml.NVMLError as exc:  # only a lost GPU gets here
            gpu.available = False
            log.warning("gpu%d (%s, %s) is lost: %s; marked unavailable, the other devices continue",
                        gpu.index, gpu.name, gpu.uuid, exc)
            return None
        return Reading(
            device=f"gpu{gpu.index}", kind="gpu", model=gpu.name, t_s=t, idle_w=gpu.idle_w, max_w=gpu.max_w,
            counter_j=counter_j, power_w=power_w, utilization_pct=util, memory_used_bytes=gpu.memory_used_bytes,
            temperature_c=gpu.temperature_c, simulated=self._simulated,
        )

    def _field(self, gpu: _Gpu, what: str, fn: Callable[..., Any], *extra: Any) -> Any:
        """One NVML call; a lost GPU propagates, anything else makes this field None."""
        nvml = self._nvml
        try:
            return fn(gpu.handle, *extra)
        except nvml.NVMLError as exc:
            if self._is_lost(exc):
                raise
            if getattr(exc, "value", None) == nvml.NVML_ERROR_NOT_SUPPORTED:
                if what == "counter":
                    gpu.has_counter = False
                elif what == "power":
                    gpu.has_power = False
            self._warn.warning(f"{gpu.index}:{what}", "gpu%d (%s): reading %s failed: %s",
                               gpu.index, gpu.name, what, exc)
            return None

    def processes(self) -> dict[str, list[tuple[int, float | None, float]]]:
        """Per GPU: (host pid, SM utilization % or None, GPU memory bytes) of each compute process.

        SM utilization comes from ``nvmlDeviceGetProcessUtilization`` samples newer than the
        previous call (averaged per pid); NOT_FOUND means no process was active on the SMs in
        the window. Only asked while runs are active.
        """
        nvml = self._nvml
        out: dict[str, list[tuple[int, float | None, float]]] = {}
        for gpu in self._gpus:
            if not gpu.available:
                continue
            try:
                procs = nvml.nvmlDeviceGetComputeRunningProcesses(gpu.handle)
            except nvml.NVMLError as exc:
                self._warn.warning(f"{gpu.index}:processes", "gpu%d: listing processes failed: %s", gpu.index, exc)
                continue
            sm: dict[int, list[float]] = {}
            try:
                samples = nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.process_seen_us)
            except nvml.NVMLError:
                samples = []  # NOT_FOUND (nothing new) or not supported: memory decides
            for s in samples:
                sm.setdefault(int(s.pid), []).append(float(s.smUtil))
                gpu.process_seen_us = max(gpu.process_seen_us, int(s.timeStamp))
            out[f"gpu{gpu.index}"] = [
                (int(p.pid), (sum(sm[p.pid]) / len(sm[p.pid])) if p.pid in sm else None, float(p.usedGpuMemory or 0))
                for p in procs
            ]
        return out

    def devices(self) -> list[DeviceInfo]:
        out = []
        for g in self._gpus:
            best = "counter" if g.has_counter else "power" if g.has_power else "model"
            detail = {
                "counter": "NVML total energy counter",
                "power": "NVML power usage, integrated over measured time",
                "model": f"utilization × {g.idle_w:g}–{g.max_w:g} W ({g.max_source})",
            }[best]
            source = "simulated" if self._simulated else best
            if not g.available:
                source, detail = "unavailable", "lost (NVML GPU_IS_LOST)"
            elif self._simulated:
                detail = f"simulated: {detail}"
            out.append(DeviceInfo(f"gpu{g.index}", "gpu", g.name, source, f"{detail}; uuid {g.uuid}"))
        return out

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass
