"""RAPL energy counters through the Linux powercap tree (Intel, and AMD on recent kernels).

``Rapl(root=Path)`` is the boundary: tests hand it a fixture tree with the same files
(``name``, ``energy_uj``, ``max_energy_range_uj``). Nothing is read at import time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_ZONE_DIR = re.compile(r"^(intel|amd)-rapl:(\d+)(?::(\d+))?$")
PERMISSION_HINT = (
    "RAPL energy counters under {root} are readable only by root (since CVE-2020-8694); "
    "run carbond as root or give it CAP_DAC_READ_SEARCH (the systemd unit does). "
    "Using the CPU utilization model instead"
)


# No CPU package or DRAM domain draws this much: a larger counter step is a glitch or a
# reset, not energy. (The utilization model's TDP is no bound for a real counter: an
# unknown CPU's modelled TDP can be far below what its package really draws.)
RAPL_ZONE_CEILING_W = 1000.0


class RaplPermissionError(PermissionError):
    pass


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str  # "package-0", "dram", ...
    label: str  # unique label: "package-0", "package-0/dram"
    wrap_j: float | None

    def read_j(self) -> float:
        try:
            return int((self.path / "energy_uj").read_text()) / 1e6
        except PermissionError as exc:
            raise RaplPermissionError(str(exc)) from exc


@dataclass(frozen=True)
class Rapl:
    """The deduplicated package and DRAM zones found under ``root``."""

    root: Path
    packages: tuple[RaplZone, ...]
    drams: tuple[RaplZone, ...]
    ignored: tuple[str, ...]  # labels of mirrored or overlapping zones left out, with why
    # warnings already logged: the CPU and RAM sensors both check the same zones
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @classmethod
    def discover(cls, root: Path) -> Rapl:
        packages: dict[str, RaplZone] = {}
        drams: dict[str, RaplZone] = {}
        ignored: list[str] = []
        try:
            entries = sorted(root.iterdir(), key=lambda p: _sort_key(p.name))
        except OSError:
            entries = []
        parents: dict[tuple[str, str], str] = {}
        for entry in entries:
            m = _ZONE_DIR.match(entry.name)
            if not m:
                continue
            try:
                name = (entry / "name").read_text().strip()
            except OSError:
                continue
            wrap = _read_wrap(entry)
            vendor, top, sub = m.group(1), m.group(2), m.group(3)
            if sub is None:
                parents[(vendor, top)] = name
                label = name
            else:
                label = f"{parents.get((vendor, top), f'zone-{top}')}/{name}"
            zone = RaplZone(entry, name, label, wrap)
            if name.startswith("package"):
                if label in packages:
                    ignored.append(f"{entry.name} ({label}: mirror of an earlier zone)")
                else:
                    packages[label] = zone
            elif name == "dram":
                if label in drams:
                    ignored.append(f"{entry.name} ({label}: mirror of an earlier zone)")
                else:
                    drams[label] = zone
            elif name == "psys":
                ignored.append(f"{entry.name} (psys already contains package and DRAM)")
        return cls(root, tuple(packages.values()), tuple(drams.values()), tuple(ignored))

    def check_readable(self) -> bool:
        """True when every zone reads; logs why not otherwise (once per ``Rapl``, however often asked)."""
        try:
            for zone in (*self.packages, *self.drams):
                zone.read_j()
        except RaplPermissionError:
            if "permission" not in self._warned:
                self._warned.add("permission")
                log.warning(PERMISSION_HINT.format(root=self.root))
            return False
        except (OSError, ValueError) as exc:
            if "unreadable" not in self._warned:
                self._warned.add("unreadable")
                log.warning("RAPL counters under %s cannot be read (%s); using the utilization model", self.root, exc)
            return False
        return True


def _sort_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def _read_wrap(zone: Path) -> float | None:
    try:
        value = int((zone / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return None
    return value / 1e6 if value > 0 else None
