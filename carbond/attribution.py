"""Who used the energy: split each device's joules of one tick among the active runs. Pure.

Rules (docs/methodology.md, "Attribution"):

- CPU: by each run's CPU time (its process tree, exited children included) over the
  host's busy CPU time in the interval.
- RAM: by each run's resident memory over the memory in use.
- GPU: a run that owns every process on a GPU gets all of it; a GPU shared by several
  runs (or by a run and other processes) is split by per-process SM utilization, or by
  GPU memory when no SM samples came in. A GPU with no process belongs to nobody.
- Idle policy: ``proportional`` shares the whole device energy, idle power included;
  ``unattributed`` first keeps the device's idle power (``idle_w × interval``) aside and
  shares only the rest.

Conservation: for every device and tick, the runs' shares plus ``unattributed`` add up
to the device energy (the remainder is computed as the difference), and no share is
negative. Shares larger than the whole (clock skew between two /proc reads) are scaled
down so that they sum to at most 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

IDLE_POLICIES = ("proportional", "unattributed")
EMPTY: Mapping[Any, Any] = MappingProxyType({})  # the records below are NamedTuples (made every tick): no mutable defaults


class GpuUse(NamedTuple):
    """What one GPU's processes did in the interval, grouped by run (None: no run)."""

    sm_pct: Mapping[str | None, float] = EMPTY  # summed SM utilization per run
    memory_bytes: Mapping[str | None, float] = EMPTY  # GPU memory per run
    processes: Mapping[str | None, int] = EMPTY  # process count per run


class Activity(NamedTuple):
    """What the runs did in one interval, as measured from /proc and NVML."""

    cpu_busy_s: float  # busy CPU seconds of the whole host
    ram_used_bytes: float  # memory in use on the host
    run_cpu_s: Mapping[str, float] = EMPTY
    run_rss_bytes: Mapping[str, float] = EMPTY
    gpus: Mapping[str, GpuUse] = EMPTY  # device name ("gpu0") -> use


class DeviceShare(NamedTuple):
    """One device's energy of one tick and its split."""

    device: str
    kind: str
    energy_j: float
    runs: Mapping[str, float]  # run id -> joules
    unattributed_j: float
    method: str  # "cpu-time", "rss", "exclusive", "sm-util", "memory", "none"


def _fractions(weights: Mapping[str, float], whole: float) -> dict[str, float]:
    """Each weight over the whole, clipped at 0, scaled down if they exceed 1 together."""
    if not whole > 0 or not math.isfinite(whole):
        return {}
    out = {k: max(w, 0.0) / whole for k, w in weights.items() if math.isfinite(w) and w > 0}
    total = math.fsum(out.values())
    if total > 1.0:
        out = {k: v / total for k, v in out.items()}
    return out


def _split(energy_j: float, idle_j: float, fractions: Mapping[str, float], policy: str) -> tuple[dict[str, float], float]:
    shareable = energy_j if policy == "proportional" else max(energy_j - max(idle_j, 0.0), 0.0)
    runs = {k: shareable * f for k, f in fractions.items() if f > 0}
    spent = math.fsum(runs.values())
    if spent > energy_j:  # rounding: never hand out more than there is
        runs = {k: v * energy_j / spent for k, v in runs.items()}
        spent = math.fsum(runs.values())
    rest = energy_j - spent
    if rest < 0:  # an ulp of rounding: take it from the largest share
        largest = max(runs, key=runs.__getitem__)
        runs[largest] = max(runs[largest] + rest, 0.0)
        rest = 0.0
    return runs, rest


def gpu_fractions(use: GpuUse | None) -> tuple[dict[str, float], str]:
    """Run fractions of one GPU, and the rule that produced them."""
    if use is None or not any(n > 0 for n in use.processes.values()):
        return {}, "none"
    owners = [k for k, n in use.processes.items() if n > 0]
    if len(owners) == 1:
        only = owners[0]
        return ({only: 1.0}, "exclusive") if only is not None else ({}, "none")
    sm_total = math.fsum(v for v in use.sm_pct.values() if v > 0)
    if sm_total > 0:
        weights, whole, method = use.sm_pct, sm_total, "sm-util"
    else:
        weights, whole, method = use.memory_bytes, math.fsum(v for v in use.memory_bytes.values() if v > 0), "memory"
    fractions = _fractions({k: v for k, v in weights.items() if k is not None}, whole)
    return fractions, method if fractions or whole > 0 else "none"


def attribute(
    devices: list[tuple[str, str, float, float]],
    activity: Activity,
    policy: str = "proportional",
) -> list[DeviceShare]:
    """Split each ``(device, kind, energy_j, idle_j)`` among the runs of ``activity``."""
    if policy not in IDLE_POLICIES:
        raise ValueError(f"unknown idle policy {policy!r}; valid: {', '.join(IDLE_POLICIES)}")
    cpu = _fractions(activity.run_cpu_s, activity.cpu_busy_s)
    ram = _fractions(activity.run_rss_bytes, activity.ram_used_bytes)
    out = []
    for device, kind, energy_j, idle_j in devices:
        if kind == "cpu":
            fractions, method = cpu, "cpu-time"
        elif kind == "ram":
            fractions, method = ram, "rss"
        elif kind == "gpu":
            fractions, method = gpu_fractions(activity.gpus.get(device))
        else:
            fractions, method = {}, "none"
        runs, rest = _split(energy_j, idle_j, fractions, policy)
        out.append(DeviceShare(device, kind, energy_j, runs, rest, method if runs else "none"))
    return out


def run_totals(shares: list[DeviceShare]) -> dict[str, float]:
    """Joules per run over all devices of a tick."""
    totals: dict[str, float] = {}
    for share in shares:
        for run, joules in share.runs.items():
            totals[run] = totals.get(run, 0.0) + joules
    return totals
