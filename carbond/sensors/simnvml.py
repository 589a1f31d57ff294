"""A simulated NVML, shaped like the ``pynvml`` module (nvidia-ml-py).

Used by the tests (as the fake at the NVML boundary) and by ``carbond run
--simulate-gpus N`` for demos and load tests. It raises the real ``pynvml`` exception
classes (``NVMLError`` subclasses with ``.value``), returns mJ from
``nvmlDeviceGetTotalEnergyConsumption`` and mW from ``nvmlDeviceGetPowerUsage``, and lets
a test inject errors, lose a GPU, reset counters (a driver reload), or drop the counter
or the power reading to look like an older or smaller part.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pynvml as _pynvml

# The names a caller may use, copied from the real module so errors are the real classes.
NVMLError = _pynvml.NVMLError
NVMLError_NotSupported = _pynvml.NVMLError_NotSupported
NVMLError_GpuIsLost = _pynvml.NVMLError_GpuIsLost
NVMLError_NotFound = _pynvml.NVMLError_NotFound
NVMLError_LibraryNotFound = _pynvml.NVMLError_LibraryNotFound
NVMLError_NoPermission = _pynvml.NVMLError_NoPermission
NVMLError_Uninitialized = _pynvml.NVMLError_Uninitialized
NVML_ERROR_NOT_SUPPORTED = _pynvml.NVML_ERROR_NOT_SUPPORTED
NVML_ERROR_GPU_IS_LOST = _pynvml.NVML_ERROR_GPU_IS_LOST
NVML_ERROR_NOT_FOUND = _pynvml.NVML_ERROR_NOT_FOUND
NVML_ERROR_LIBRARY_NOT_FOUND = _pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
NVML_ERROR_NO_PERMISSION = _pynvml.NVML_ERROR_NO_PERMISSION
NVML_ERROR_UNINITIALIZED = _pynvml.NVML_ERROR_UNINITIALIZED
NVML_ERROR_UNKNOWN = _pynvml.NVML_ERROR_UNKNOWN
NVML_DEVICE_ARCH_PASCAL = _pynvml.NVML_DEVICE_ARCH_PASCAL
NVML_DEVICE_ARCH_VOLTA = _pynvml.NVML_DEVICE_ARCH_VOLTA
NVML_DEVICE_ARCH_AMPERE = _pynvml.NVML_DEVICE_ARCH_AMPERE
NVML_DEVICE_ARCH_HOPPER = _pynvml.NVML_DEVICE_ARCH_HOPPER
NVML_TEMPERATURE_GPU = _pynvml.NVML_TEMPERATURE_GPU


class Trace(Protocol):
    def power_w(self, t: float) -> float: ...

    def energy_j(self, t0: float, t1: float) -> float: ...


@dataclass(frozen=True)
class Constant:
    watts: float

    def power_w(self, t: float) -> float:
        return self.watts

    def energy_j(self, t0: float, t1: float) -> float:
        return self.watts * (t1 - t0)


@dataclass(frozen=True)
class Sine:
    """``mean_w + amplitude_w · sin(2π t / period_s + phase)``, integrated exactly."""

    mean_w: float
    amplitude_w: float
    period_s: float
    phase: float = 0.0

    def power_w(self, t: float) -> float:
        return self.mean_w + self.amplitude_w * math.sin(2 * math.pi * t / self.period_s + self.phase)

    def energy_j(self, t0: float, t1: float) -> float:
        w = 2 * math.pi / self.period_s
        return self.mean_w * (t1 - t0) - self.amplitude_w / w * (math.cos(w * t1 + self.phase) - math.cos(w * t0 + self.phase))


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int  # noqa: N815 - pynvml's spelling


@dataclass
class _ProcessSample:
    pid: int
    timeStamp: int  # noqa: N815
    smUtil: int  # noqa: N815
    memUtil: int  # noqa: N815
    encUtil: int = 0  # noqa: N815
    decUtil: int = 0  # noqa: N815


@dataclass
class SimGpu:
    index: int
    name: str = "NVIDIA H100 80GB HBM3"
    arch: int = NVML_DEVICE_ARCH_HOPPER
    idle_w: float = 70.0
    power_limit_w: float = 700.0
    memory_total_bytes: int = 80 * 1024**3
    has_counter: bool = True
    has_power: bool = True
    trace: Trace | None = None
    lost: bool = False
    energy_mj_offset: float = 0.0
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)
    process_util: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (sm%, mem%)
    failures: dict[str, list[Any]] = field(default_factory=dict)  # method -> [code, remaining|None]
    _energy_j: float = 0.0
    _last_t: float | None = None

    @property
    def uuid(self) -> str:
        return f"GPU-5a1e0000-0000-4000-8000-{self.index:012d}"

    def power_now_w(self, t: float) -> float:
        assert self.trace is not None
        return self.trace.power_w(t)


class SimulatedNvml:
    """A module-like object with the subset of pynvml that carbond uses."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[SimGpu] | int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        if isinstance(gpus, int):
            gpus = [SimGpu(index=i) for i in range(gpus)]
        for gpu in gpus:
            if gpu.trace is None:  # a slow, deterministic load swing, each GPU out of phase
                mean = gpu.idle_w + 0.55 * (gpu.power_limit_w - gpu.idle_w)
                amp = 0.35 * (gpu.power_limit_w - gpu.idle_w)
                gpu.trace = Sine(mean, amp, period_s=60.0 + 7 * gpu.index, phase=gpu.index * 0.9)
        self.gpus = gpus
        self.initialized = False
        self.init_error: int | None = None  # e.g. NVML_ERROR_LIBRARY_NOT_FOUND
        self._lock = threading.Lock()
        # the real module's constants, for callers that read them off the module
        for name in dir(_pynvml):
            if (name.startswith("NVML_") or name.startswith("NVMLError")) and not hasattr(self, name):
                setattr(self, name, getattr(_pynvml, name))

    # --- test controls -------------------------------------------------------------------
    def inject(self, index: int, method: str, code: int, times: int | None = None) -> None:
        """Make ``method`` on GPU ``index`` raise NVMLError(code), ``times`` times (None: always)."""
        self.gpus[index].failures[method] = [code, times]

    def clear(self, index: int, method: str) -> None:
        self.gpus[index].failures.pop(method, None)

    def lose(self, index: int) -> None:
        self.gpus[index].lost = True

    def reset_counter(self, index: int) -> None:
        """A driver reload: the energy counter restarts from zero."""
        gpu = self.gpus[index]
        self._advance(gpu)
        gpu._energy_j = 0.0
        gpu.energy_mj_offset = 0.0

    # --- internals -----------------------------------------------------------------------
    def _gpu(self, handle: Any, method: str) -> SimGpu:
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        gpu: SimGpu = handle
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        failure = gpu.failures.get(method)
        if failure is not None:
            code, remaining = failure
            if remaining is not None:
                failure[1] -= 1
                if failure[1] <= 0:
                    del gpu.failures[method]
            raise NVMLError(code)
        return gpu

    def _advance(self, gpu: SimGpu) -> float:
        now = self.clock()
        with self._lock:
            if gpu._last_t is None:
                gpu._last_t = now
            elif now > gpu._last_t:
                assert gpu.trace is not None
                gpu._energy_j += gpu.trace.energy_j(gpu._last_t, now)
                gpu._last_t = now
        return now

    # --- pynvml API ----------------------------------------------------------------------
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized = True
        for gpu in self.gpus:
            self._advance(gpu)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "simulated"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimGpu:  # noqa: N802
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if not 0 <= index < len(self.gpus):
            raise NVMLError(_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: Any) -> str:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetArchitecture").arch

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if not gpu.has_counter or gpu.arch < NVML_DEVICE_ARCH_VOLTA:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        self._advance(gpu)
        return int(gpu.energy_mj_offset + gpu._energy_j * 1000.0)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetPowerUsage")
        if not gpu.has_power:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(gpu.power_now_w(self.clock()) * 1000.0)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:  # noqa: N802
        return int(self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:  # noqa: N802
        return int(self._gpu(handle, "nvmlDeviceGetPowerManagementLimit").power_limit_w * 1000)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> _Utilization:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        p = gpu.power_now_w(self.clock())
        util = round(100 * (p - gpu.idle_w) / max(gpu.power_limit_w - gpu.idle_w, 1e-9))
        util = min(max(util, 0), 100)
        return _Utilization(gpu=util, memory=util // 2)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> _Memory:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        used = sum(b for _, b in gpu.processes) or gpu.memory_total_bytes // 10
        return _Memory(total=gpu.memory_total_bytes, free=gpu.memory_total_bytes - used, used=used)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetTemperature")
        p = gpu.power_now_w(self.clock())
        return int(30 + 45 * p / gpu.power_limit_w)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[_Process]:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [_Process(pid, used) for pid, used in gpu.processes]

    def nvmlDeviceGetProcessUtilization(self, handle: Any, last_seen_us: int) -> list[_ProcessSample]:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetProcessUtilization")
        now_us = int(self.clock() * 1e6)
        samples = [_ProcessSample(pid, now_us, sm, mem) for pid, (sm, mem) in gpu.process_util.items()]
        if not samples or now_us <= last_seen_us:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return samples
