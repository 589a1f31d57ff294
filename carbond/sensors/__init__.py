"""Sensors: CPU (psutil, RAPL), GPU (NVML, injected), RAM. Nothing touches hardware at import."""

from __future__ import annotations

import logging
from pathlib import Path

from carbond.config import Settings
from carbond.errors import SensorError
from carbond.sensors.base import DeviceInfo, Reading, Sensor

log = logging.getLogger(__name__)

__all__ = ["DeviceInfo", "Reading", "Sensor", "build_sensors"]


def build_sensors(settings: Settings) -> list[Sensor]:
    """The sensors this machine supports, per the settings. Never raises for missing hardware."""
    from carbond.sensors.cpu import CpuSensor
    from carbond.sensors.memory import MemorySensor
    from carbond.sensors.procfs import system_stats
    from carbond.sensors.rapl import Rapl

    cfg = settings.sensors
    rapl = Rapl.discover(Path(cfg.rapl_root))
    if rapl.ignored:
        log.info("RAPL zones left out: %s", "; ".join(rapl.ignored))
    stats = system_stats()
    sensors: list[Sensor] = [
        CpuSensor(stats, rapl, tdp_w=cfg.cpu_tdp_w, idle_fraction=cfg.cpu_idle_fraction),
        MemorySensor(stats, rapl, w_per_gb=cfg.ram_w_per_gb),
    ]
    gpus = _gpu_sensor(settings)
    if gpus is not None:
        sensors.append(gpus)
    return sensors


def _gpu_sensor(settings: Settings) -> Sensor | None:
    from carbond.sensors.gpu import NvmlGpus

    n_sim = settings.daemon.simulate_gpus
    if n_sim:
        from carbond.sensors.simnvml import SimulatedNvml

        return NvmlGpus(SimulatedNvml(n_sim), simulated=True)
    if not settings.sensors.nvml:
        return None
    try:
        import pynvml
    except ImportError as exc:  # the dependency is missing from this install
        _warn_once(f"NVML Python bindings (nvidia-ml-py) are not installed ({exc}); running without GPUs")
        return None
    try:
        return NvmlGpus(pynvml)
    except SensorError as exc:
        _warn_once(f"{exc}; running without GPUs")
        return None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning, once per process: in-process runs build sensors once per run, and it is the same news each time."""
    if message in _warned:
        log.debug("%s", message)
    else:
        _warned.add(message)
        log.warning("%s", message)
