"""Power models and hardware tables: utilization → watts, and counter arithmetic.

Everything here is pure. The utilization model generalises the seed model
``P = idle + (max - idle) * util / 100``; ``max`` comes from the device itself (NVML's
enforced power limit) or the tables below, ``idle`` from the tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# CPU package TDP (W) and hardware threads per package, by model-name substring; first
# match wins. Manufacturer datasheets. The model scales the TDP by the share of the
# package's threads this machine sees, so a 2-vCPU cloud VM on a 128-thread part is
# charged 2/128 of the package, and a two-socket host twice the package.
CPU_TDP_W: tuple[tuple[str, float, int], ...] = (
    ("EPYC 9654", 360.0, 192),  # AMD EPYC 9654 (Genoa, 96 cores)
    ("EPYC 9554", 360.0, 128),
    ("EPYC 7763", 280.0, 128),  # AMD EPYC 7763 (Milan, 64 cores)
    ("EPYC 7742", 225.0, 128),  # AMD EPYC 7742 (Rome, 64 cores), used in DGX A100
    ("EPYC 7543", 225.0, 64),
    ("Xeon(R) Platinum 8480", 350.0, 112),  # Intel Xeon Platinum 8480+ (Sapphire Rapids), DGX H100
    ("Xeon(R) Platinum 8380", 270.0, 80),  # Intel Xeon Platinum 8380 (Ice Lake)
    ("Xeon(R) Platinum 8280", 205.0, 56),  # Intel Xeon Platinum 8280 (Cascade Lake)
    ("Xeon(R) Gold 6248", 150.0, 40),
    ("Xeon(R) CPU E5-2698 v4", 135.0, 40),  # DGX-1
    ("Core(TM) i9-13900K", 125.0, 32),  # processor base power
    ("Core(TM) i7-12700", 65.0, 20),
    ("Apple M2", 20.0, 8),
)
# Unknown CPUs: watts per logical CPU the process can see. 5 W per hardware thread is
# the order of current server parts (EPYC 7763: 280 W / 128 threads ≈ 2.2 W; Xeon 8380:
# 270 W / 80 threads ≈ 3.4 W; desktop parts run higher), kept deliberately on the high
# side so the model does not under-report. Documented in docs/methodology.md.
CPU_W_PER_THREAD_DEFAULT = 5.0

# GPU (idle_w, max_w) by model-name substring; first match wins. max = board power /
# TDP from the vendor datasheets; idle = typical idle draw reported by nvidia-smi on
# the part (order of magnitude, used only when the GPU has neither counter nor power).
GPU_POWER_W: tuple[tuple[str, float, float], ...] = (
    ("H200", 75.0, 700.0),
    ("H100 PCIe", 50.0, 350.0),
    ("H100", 70.0, 700.0),
    ("A100-SXM4-80GB", 55.0, 400.0),
    ("A100-SXM4", 50.0, 400.0),
    ("A100-PCIE", 35.0, 250.0),
    ("A100", 50.0, 400.0),
    ("L40S", 35.0, 350.0),
    ("L40", 35.0, 300.0),  # before "L4", which is a substring of "L40"
    ("L4", 16.0, 72.0),
    ("A10G", 25.0, 300.0),
    ("A10", 25.0, 150.0),
    ("T4", 10.0, 70.0),
    ("V100", 40.0, 300.0),
    ("RTX 4090", 20.0, 450.0),
    ("RTX 3090", 20.0, 350.0),
)
GPU_POWER_DEFAULT_W = (30.0, 300.0)


@dataclass(frozen=True)
class UtilizationModel:
    """``P = idle + (max - idle) * util/100``, util clamped to [0, 100]."""

    idle_w: float
    max_w: float

    def power_w(self, utilization_pct: float) -> float:
        u = min(max(utilization_pct, 0.0), 100.0)
        return self.idle_w + (self.max_w - self.idle_w) * u / 100.0


def cpu_tdp_w(model_name: str, logical_cpus: int) -> tuple[float, str]:
    """(TDP in W of all the CPUs this machine sees, where it came from)."""
    logical = max(logical_cpus, 1)
    for needle, tdp, threads in CPU_TDP_W:
        if needle.lower() in model_name.lower():
            return tdp * logical / threads, f"table: {needle} {tdp:g} W per {threads} threads × {logical} seen"
    return CPU_W_PER_THREAD_DEFAULT * logical, f"default {CPU_W_PER_THREAD_DEFAULT:g} W per logical CPU × {logical}"


def gpu_power_range_w(model_name: str) -> tuple[float, float]:
    for needle, idle, peak in GPU_POWER_W:
        if needle.lower() in model_name.lower():
            return idle, peak
    return GPU_POWER_DEFAULT_W


def trapezoid_j(p0_w: float, p1_w: float, dt_s: float) -> float:
    """Energy of a linearly interpolated power trace over one measured interval."""
    return (p0_w + p1_w) * 0.5 * dt_s


@dataclass(frozen=True)
class CounterDelta:
    energy_j: float | None  # None when the delta cannot be trusted
    event: str  # "ok", "wrap", "reset", "absurd"


def counter_delta(prev_j: float, cur_j: float, wrap_j: float | None, ceiling_j: float) -> CounterDelta:
    """Energy between two readings of a cumulative counter.

    ``wrap_j`` is the value at which the counter rolls over to 0 (RAPL's
    ``max_energy_range_uj``), None for counters that do not wrap in practice (NVML's
    64-bit mJ). ``ceiling_j`` is the most energy the device could plausibly have used in
    the interval; anything above it, and a counter that went backwards without a
    plausible wrap (a driver reload), yields ``energy_j=None`` rather than negative or
    absurd energy.
    """
    if not (math.isfinite(prev_j) and math.isfinite(cur_j)):
        return CounterDelta(None, "absurd")
    if cur_j >= prev_j:
        delta = cur_j - prev_j
        return CounterDelta(delta, "ok") if delta <= ceiling_j else CounterDelta(None, "absurd")
    if wrap_j is not None and wrap_j > 0 and prev_j <= wrap_j:
        delta = (wrap_j - prev_j) + cur_j
        if delta <= ceiling_j:
            return CounterDelta(delta, "wrap")
    return CounterDelta(None, "reset")
