"""The storage seam: ``Point``, the ``Store`` protocol and the small query model."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

MEASUREMENTS = ("device", "host", "job", "run", "carbond")
AGGREGATES = ("sum", "mean", "min", "max", "count", "last", "integral")


class Point(NamedTuple):
    """One point of one series. ``time_ns`` is UTC, the end of the point's interval.

    Immutable; a NamedTuple rather than a frozen dataclass because every tick makes several.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, float]
    time_ns: int


def make_point(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | None], time_ns: int) -> Point:
    """A point with every field a finite float (None and non-finite values are left out)."""
    clean = {k: float(v) for k, v in fields.items() if v is not None and math.isfinite(v)}
    return Point(measurement, {k: str(v) for k, v in tags.items() if v is not None and v != ""}, clean, time_ns)


@dataclass(frozen=True)
class Query:
    """An aggregate over one measurement's series in ``[since_ns, until_ns)``.

    ``agg`` applies to each field. ``group_by`` lists tag keys; ``every_s`` adds time
    buckets (``GROUP BY time(...)``, bucket start as the row time). ``integral`` is the
    trapezoid area per series in value·seconds, then summed over the group.
    """

    measurement: str
    fields: tuple[str, ...]
    agg: str = "sum"
    since_ns: int | None = None
    until_ns: int | None = None
    where: tuple[tuple[str, str], ...] = ()
    group_by: tuple[str, ...] = ()
    every_s: float | None = None

    def __post_init__(self) -> None:
        if self.agg not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.agg!r}; valid: {', '.join(AGGREGATES)}")


@dataclass(frozen=True)
class Row:
    time_ns: int | None
    tags: Mapping[str, str]
    values: Mapping[str, float | None] = field(default_factory=dict)


class Store(Protocol):
    url: str  # redacted, safe to log

    def write(self, points: Iterable[Point]) -> None: ...

    def query(self, q: Query) -> list[Row]: ...

    def scan(self, measurement: str | None, since_ns: int | None = None, until_ns: int | None = None) -> Iterator[Point]: ...

    def measurements(self) -> list[str]: ...

    def close(self) -> None: ...
