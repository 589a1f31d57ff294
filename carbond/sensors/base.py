"""What every sensor returns, and the protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Reading(NamedTuple):
    """One device, read once. Units in the names; None = not available on this device.

    Made for every device on every tick: a NamedTuple, immutable like a frozen dataclass and built several
    times faster (the hot path's records are all NamedTuples; docs/performance.md).
    """

    device: str  # "cpu0", "gpu1", "ram"
    kind: str  # "cpu" | "gpu" | "ram"
    model: str
    t_s: float  # monotonic clock when read
    idle_w: float  # utilization model, used when there is neither counter nor power
    max_w: float
    counter_j: float | None = None  # cumulative hardware energy counter
    counter_wrap_j: float | None = None  # where the counter rolls over (None: never)
    counter_ceiling_w: float | None = None  # most power the counter can plausibly show (None: max_w)
    power_w: float | None = None  # measured power
    utilization_pct: float | None = None
    memory_used_bytes: float | None = None
    temperature_c: float | None = None
    simulated: bool = False


@dataclass(frozen=True)
class DeviceInfo:
    """What ``carbond devices`` shows about a device."""

    device: str
    kind: str
    model: str
    source: str  # the best source it offers: counter, power, model (or simulated)
    detail: str  # e.g. "RAPL package-0", "NVML, power limit 700 W"


class Sensor(Protocol):
    """A group of devices read together (all CPUs, all GPUs, RAM).

    ``read`` never raises for one bad device: it drops that device (and logs once);
    it may raise :class:`carbond.errors.SensorError` when the whole group fails.
    """

    def read(self) -> list[Reading]: ...

    def devices(self) -> list[DeviceInfo]: ...

    def close(self) -> None: ...


class ProcessSensor(Protocol):
    """A sensor that can say which processes use its devices (GPUs)."""

    def processes(self) -> dict[str, list[tuple[int, float | None, float]]]: ...
