"""InfluxDB line protocol encoding (used by ``carbond export --format lp`` and the v1 writer).

Every field is written as a float (``12`` is a float in line protocol, ``12i`` an int):
carbond never writes ints, so a field can never change type between points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from carbond.store.base import Point

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})


def _float(v: float) -> str:
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def encode(point: Point) -> str | None:
    """One line, or None when the point has no finite field (InfluxDB would drop it)."""
    fields = ",".join(
        f"{k.translate(_KEY)}={_float(v)}" for k, v in sorted(point.fields.items()) if math.isfinite(v)
    )
    if not fields:
        return None
    tags = "".join(f",{k.translate(_KEY)}={v.translate(_KEY)}" for k, v in sorted(point.tags.items()) if v != "")
    return f"{point.measurement.translate(_MEASUREMENT)}{tags} {fields} {point.time_ns}"


def encode_many(points: Iterable[Point]) -> str:
    return "".join(line + "\n" for line in map(encode, points) if line is not None)
