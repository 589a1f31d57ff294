"""A fixture powercap tree with the file layout of a real Linux machine.

On a real host the zones live under ``/sys/devices/virtual/powercap/<control type>/``
(``intel-rapl:0/`` holding ``intel-rapl:0:0/`` …) and ``/sys/class/powercap/`` holds one
symlink per zone, flattened::

    sys/class/powercap/intel-rapl        -> ../../devices/virtual/powercap/intel-rapl
    sys/class/powercap/intel-rapl:0      -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0
    sys/class/powercap/intel-rapl:0:0    -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0

Each zone has ``name`` (``package-0``, ``core``, ``uncore``, ``dram``, ``psys``),
``energy_uj`` (µJ, cumulative, wraps at ``max_energy_range_uj``) and ``enabled``.
:class:`PowercapTree` builds that layout under a temporary directory; ``root`` is the
``sys/class/powercap`` directory to hand to ``Rapl.discover``.

Denied access: since CVE-2020-8694 ``energy_uj`` is mode 0400 root, so a non-root
service gets ``PermissionError: [Errno 13] Permission denied: '.../energy_uj'`` from
``open()``. The tests run as root, and ``chmod 000`` does not stop root
(CAP_DAC_OVERRIDE), so :meth:`PowercapTree.deny` makes reads of that one file raise
exactly that error at the ``Path.read_text`` boundary (via pytest's ``monkeypatch``).
"""

from __future__ import annotations

import errno
import os
import pathlib
from pathlib import Path

import pytest

# A value found on many Intel parts (energy unit 61 µJ × 2^32): about 262 kJ.
MAX_ENERGY_RANGE_UJ = 262_143_328_850


class PowercapTree:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.devices = base / "sys" / "devices" / "virtual" / "powercap"
        self.root = base / "sys" / "class" / "powercap"
        self.devices.mkdir(parents=True)
        self.root.mkdir(parents=True)
        self._zones: dict[str, Path] = {}
        self._denied: set[str] = set()
        self._patched = False

    # --- building ----------------------------------------------------------------------------
    def _control(self, control: str) -> Path:
        path = self.devices / control
        if not path.exists():
            path.mkdir()
            (path / "enabled").write_text("1\n")
            (self.root / control).symlink_to(os.path.relpath(path, self.root))
        return path

    def add_zone(
        self,
        zone_id: str,
        name: str,
        *,
        energy_uj: int = 0,
        max_energy_range_uj: int | None = MAX_ENERGY_RANGE_UJ,
    ) -> Path:
        """Add zone ``zone_id`` (``intel-rapl:0``, ``intel-rapl:0:1``, ``amd-rapl:0``, ``intel-rapl-mmio:0``).

        A sub-zone's parent must exist. ``max_energy_range_uj=None`` leaves that file out.
        """
        control, _, rest = zone_id.partition(":")
        parts = rest.split(":")
        if len(parts) == 1:
            parent = self._control(control)
        else:
            parent = self._zones[f"{control}:{parts[0]}"]
        path = parent / zone_id
        path.mkdir()
        (path / "name").write_text(name + "\n")
        (path / "enabled").write_text("1\n")
        (path / "energy_uj").write_text(f"{energy_uj}\n")
        if max_energy_range_uj is not None:
            (path / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        (self.root / zone_id).symlink_to(os.path.relpath(path, self.root))
        self._zones[zone_id] = path
        return path

    # --- counters ----------------------------------------------------------------------------
    def energy_uj(self, zone_id: str) -> int:
        return int((self._zones[zone_id] / "energy_uj").read_text())

    def max_energy_range_uj(self, zone_id: str) -> int:
        return int((self._zones[zone_id] / "max_energy_range_uj").read_text())

    def set_energy_uj(self, zone_id: str, value: int) -> None:
        (self._zones[zone_id] / "energy_uj").write_text(f"{int(value)}\n")

    def write_raw(self, zone_id: str, text: str) -> None:
        """Put arbitrary text in ``energy_uj`` (a torn or garbage read)."""
        (self._zones[zone_id] / "energy_uj").write_text(text)

    def consume_j(self, zone_id: str, joules: float) -> None:
        """The zone used ``joules``: the counter advances, rolling over at ``max_energy_range_uj``."""
        value = self.energy_uj(zone_id) + round(joules * 1e6)
        self.set_energy_uj(zone_id, value % self.max_energy_range_uj(zone_id))

    # --- access ------------------------------------------------------------------------------
    def deny(self, zone_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Reads of this zone's ``energy_uj`` fail as they do for a non-root reader."""
        self._denied.add(os.path.realpath(self._zones[zone_id] / "energy_uj"))
        if self._patched:
            return
        self._patched = True
        real_read_text = pathlib.Path.read_text
        denied = self._denied

        def read_text(path: Path, *args: object, **kwargs: object) -> str:
            if os.path.realpath(path) in denied:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_read_text(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(pathlib.Path, "read_text", read_text)

    def allow(self, zone_id: str) -> None:
        self._denied.discard(os.path.realpath(self._zones[zone_id] / "energy_uj"))


def intel_two_socket(base: Path) -> PowercapTree:
    """A two-socket Intel server: package, core and dram per socket, plus psys and an mmio mirror."""
    tree = PowercapTree(base)
    for pkg in (0, 1):
        tree.add_zone(f"intel-rapl:{pkg}", f"package-{pkg}")
        tree.add_zone(f"intel-rapl:{pkg}:0", "core", max_energy_range_uj=None)
        tree.add_zone(f"intel-rapl:{pkg}:1", "dram", max_energy_range_uj=65_712_999_613)
    tree.add_zone("intel-rapl:2", "psys")
    tree.add_zone("intel-rapl-mmio:0", "package-0")
    return tree
