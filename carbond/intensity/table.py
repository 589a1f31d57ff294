"""The bundled zone table: one static average intensity per zone, with its provenance.

Zones are addressed case-insensitively by code (``DE``), alpha-3 (``DEU``) or English
name (``germany``). An unknown name raises :class:`UnknownZoneError` with close matches.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Protocol

from carbond.errors import UnknownZoneError


@dataclass(frozen=True)
class Intensity:
    """An average grid intensity and where it came from."""

    zone: str
    name: str
    intensity_g_per_kwh: float
    basis: str  # "lifecycle" or "direct"
    source: str
    year: int
    provider: str = "table"  # becomes the ``intensity_source`` tag


class IntensityProvider(Protocol):
    """Gives the intensity that applies at a moment (the hour it falls in)."""

    def intensity_at(self, when: datetime) -> Intensity: ...


@dataclass(frozen=True)
class ZoneTable:
    rows: tuple[Intensity, ...]
    index: Mapping[str, Intensity] = field(repr=False, compare=False)

    def lookup(self, zone: str) -> Intensity:
        found = self.index.get(zone.strip().casefold())
        if found is not None:
            return found
        close = difflib.get_close_matches(zone.strip().casefold(), list(self.index), n=5, cutoff=0.6)
        names = list(dict.fromkeys(f"{self.index[c].zone} ({self.index[c].name})" for c in close))
        hint = f"; did you mean {', '.join(names)}?" if names else ""
        raise UnknownZoneError(
            f"unknown region {zone!r}{hint} (`carbond intensity --list` shows all {len(self.rows)} zones)"
        )


@dataclass(frozen=True)
class StaticProvider:
    """The table's value for one zone, at every moment."""

    intensity: Intensity

    def intensity_at(self, when: datetime) -> Intensity:
        return self.intensity


@cache
def load_table() -> ZoneTable:
    """The bundled table (read once per process)."""
    text = resources.files("carbond.intensity").joinpath("data/zones.csv").read_text("utf-8")
    rows: list[Intensity] = []
    index: dict[str, Intensity] = {}
    for rec in csv.DictReader(text.splitlines()):
        row = Intensity(
            zone=rec["zone"],
            name=rec["name"],
            intensity_g_per_kwh=float(rec["intensity_g_per_kwh"]),
            basis=rec["basis"],
            source=rec["source"],
            year=int(rec["year"]),
        )
        rows.append(row)
        for key in (rec["zone"], rec["name"], rec.get("alpha3") or ""):
            if key:
                index.setdefault(key.casefold(), row)
    return ZoneTable(tuple(rows), index)
