"""Cheap system-wide CPU and memory readings on Linux, shaped like the psutil calls we use.

psutil opens, reads and closes ``/proc/stat`` and ``/proc/meminfo`` on every call; on a
virtual machine the open/close pair costs as much as the read. ``Procfs`` keeps both
files open and re-reads them with ``pread`` — the kernel regenerates a ``/proc`` file on
every read from offset 0. It offers the three psutil calls the sensors make
(``cpu_count``, ``cpu_percent(interval=None)``, ``virtual_memory``), so a sensor takes
either; :func:`system_stats` returns this on Linux and psutil elsewhere.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Protocol


class SystemStats(Protocol):
    """The psutil calls the CPU and memory sensors make (psutil itself satisfies it)."""

    def cpu_count(self, logical: bool = True) -> int | None: ...

    def cpu_percent(self, interval: float | None = None) -> float: ...

    def virtual_memory(self) -> Any: ...


class VirtualMemory(NamedTuple):
    total: int
    available: int
    used: int
    percent: float


class Procfs:
    def __init__(self, root: str = "/proc") -> None:
        self._stat = os.open(f"{root}/stat", os.O_RDONLY | os.O_CLOEXEC)
        self._meminfo = os.open(f"{root}/meminfo", os.O_RDONLY | os.O_CLOEXEC)
        self._last: tuple[int, int] | None = None
        self.busy_ticks: int | None = None  # host busy CPU ticks at the last cpu_percent()
        self._logical = os.cpu_count() or 1

    def cpu_count(self, logical: bool = True) -> int:
        return self._logical

    def _busy_total(self) -> tuple[int, int]:
        # "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (USER_HZ);
        # guest time is already counted in user, so it is left out of the total.
        first = os.pread(self._stat, 256, 0).split(b"\n", 1)[0].split()
        values = [int(v) for v in first[1:9]]
        total = sum(values)
        idle = values[3] + values[4]  # idle + iowait, as psutil counts them
        return total - idle, total

    def cpu_percent(self, interval: float | None = None) -> float:
        """System-wide CPU utilization since the previous call (0.0 on the first)."""
        if interval is not None:
            raise ValueError("only the non-blocking form (interval=None) is offered")
        busy, total = self._busy_total()
        last, self._last = self._last, (busy, total)
        self.busy_ticks = busy
        if last is None or total <= last[1]:
            return 0.0
        return min(max(100.0 * (busy - last[0]) / (total - last[1]), 0.0), 100.0)

    def virtual_memory(self) -> VirtualMemory:
        fields: dict[bytes, int] = {}
        for line in os.pread(self._meminfo, 8192, 0).split(b"\n"):
            key, _, rest = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable", b"MemFree"):
                fields[key] = int(rest.split()[0]) * 1024
                if len(fields) == 3:
                    break
        total = fields[b"MemTotal"]
        available = fields.get(b"MemAvailable", fields.get(b"MemFree", 0))
        used = total - available
        return VirtualMemory(total, available, used, round(100.0 * used / total, 1) if total else 0.0)

    def close(self) -> None:
        for fd in (self._stat, self._meminfo):
            try:
                os.close(fd)
            except OSError:
                pass


def system_stats() -> SystemStats:
    """``Procfs`` where ``/proc`` is readable, else the psutil module."""
    try:
        return Procfs()
    except OSError:
        import psutil

        return psutil
