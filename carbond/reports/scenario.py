"""Lifecycle scenario files (TOML): what the projected rows of ``carbond report lifecycle`` assume.

Every table and key is optional unless marked required; a table that is present must have its
required keys. Unknown tables or keys, wrong types and out-of-range values are errors that
name the file, table and key (exit 2)::

    [factors]                       # for projected rows; default: the configured [region]
    zone = "FR"                     # grid zone (carbond intensity --list)
    intensity_g_per_kwh = 57.0      # default: the zone's table value
    pue = 1.2                       # default: the zone's published PUE, else 1.56
    wue_site_l_per_kwh = 1.8        # default 1.8
    wue_source_l_per_kwh = 2.3      # default: the zone's country figure

    [development]
    hours = 400                     # required: hours per person
    team_size = 5                   # required
    workstation_power_w = 150       # required
    pue = 1.0                       # default 1.0: offices have no data-centre overhead
    workstation_embodied_kg = 350   # optional, with workstation_lifetime_years (default 4)

    [deployment]
    days = 365                      # required: how long the model serves
    servers = 2                     # optional always-on serving servers ...
    server_power_w = 500            # ... and their average power (required with servers)
    server_embodied_kg = 2500       # optional, with server_lifetime_years (default 6)

    [inference]                     # needs [deployment] days
    requests_per_day = 100000       # required
    energy_per_request_wh = 0.2     # default: measured, Σ energy / Σ requests of inference runs
    embodied_g_per_request = 0.01   # default: measured likewise (0 without inference runs)

    [retraining]                    # needs [deployment] days
    every_days = 90                 # required: one retraining per this many days of deployment
    energy_kwh = 120                # default: the measured training energy × fraction
    fraction = 1.0                  # default 1.0

    [[phases]]                      # custom phases
    name = "data-prep"              # required, lower-case
    energy_kwh = 12.0               # required
    hours = 40.0
    embodied_kg = 0.0
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carbond.errors import ConfigError, UsageError

_PHASE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
STANDARD_PHASES = ("development", "training", "validation", "deployment", "inference")


@dataclass(frozen=True)
class FactorSpec:
    zone: str | None = None
    intensity_g_per_kwh: float | None = None
    pue: float | None = None
    wue_site_l_per_kwh: float | None = None
    wue_source_l_per_kwh: float | None = None


@dataclass(frozen=True)
class Development:
    hours: float
    team_size: float
    workstation_power_w: float
    pue: float = 1.0
    workstation_embodied_kg: float = 0.0
    workstation_lifetime_years: float = 4.0


@dataclass(frozen=True)
class Deployment:
    days: float
    servers: float = 0.0
    server_power_w: float = 0.0
    server_embodied_kg: float = 0.0
    server_lifetime_years: float = 6.0


@dataclass(frozen=True)
class Inference:
    requests_per_day: float
    energy_per_request_wh: float | None = None
    embodied_g_per_request: float | None = None


@dataclass(frozen=True)
class Retraining:
    every_days: float
    energy_kwh: float | None = None
    fraction: float = 1.0


@dataclass(frozen=True)
class CustomPhase:
    name: str
    energy_kwh: float
    hours: float = 0.0
    embodied_kg: float = 0.0


@dataclass(frozen=True)
class Scenario:
    source: str = ""
    factors: FactorSpec = FactorSpec()
    development: Development | None = None
    deployment: Deployment | None = None
    inference: Inference | None = None
    retraining: Retraining | None = None
    phases: tuple[CustomPhase, ...] = ()


# (key, kind, required); kinds: "str", "pos" (> 0), "nonneg" (>= 0), "pue" (>= 1), "fraction" (0 < x <= 1e6)
_TABLES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "factors": (("zone", "str", False), ("intensity_g_per_kwh", "nonneg", False), ("pue", "pue", False),
                ("wue_site_l_per_kwh", "nonneg", False), ("wue_source_l_per_kwh", "nonneg", False)),
    "development": (("hours", "nonneg", True), ("team_size", "pos", True), ("workstation_power_w", "nonneg", True),
                    ("pue", "pue", False), ("workstation_embodied_kg", "nonneg", False),
                    ("workstation_lifetime_years", "pos", False)),
    "deployment": (("days", "nonneg", True), ("servers", "nonneg", False), ("server_power_w", "nonneg", False),
                   ("server_embodied_kg", "nonneg", False), ("server_lifetime_years", "pos", False)),
    "inference": (("requests_per_day", "nonneg", True), ("energy_per_request_wh", "nonneg", False),
                  ("embodied_g_per_request", "nonneg", False)),
    "retraining": (("every_days", "pos", True), ("energy_kwh", "nonneg", False), ("fraction", "nonneg", False)),
    "phases": (("name", "str", True), ("energy_kwh", "nonneg", True), ("hours", "nonneg", False),
               ("embodied_kg", "nonneg", False)),
}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"scenario {self.source}: {where}: {message}")

    def value(self, where: str, raw: Any, kind: str) -> Any:
        if kind == "str":
            if not isinstance(raw, str) or not raw.strip():
                raise self.error(where, f"expected a non-empty string, got {raw!r}")
            return raw.strip()
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw or raw in (float("inf"), float("-inf")):
            raise self.error(where, f"expected a number, got {raw!r}")
        value = float(raw)
        if kind == "pos" and not value > 0:
            raise self.error(where, f"must be greater than 0, got {raw!r}")
        if kind == "nonneg" and value < 0:
            raise self.error(where, f"must be 0 or greater, got {raw!r}")
        if kind == "pue" and value < 1:
            raise self.error(where, f"must be 1.0 or greater (1.0 = no facility overhead), got {raw!r}")
        return value

    def table(self, name: str, body: Any, label: str) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise self.error(label, "must be a table")
        spec = _TABLES[name]
        known = [k for k, _, _ in spec]
        for key in body:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise self.error(f"{label} {key}", f"unknown key{hint} (valid: {', '.join(known)})")
        out: dict[str, Any] = {}
        for key, kind, required in spec:
            if key in body:
                out[key] = self.value(f"{label} {key}", body[key], kind)
            elif required:
                raise self.error(f"{label} {key}", "required key is missing")
        return out


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """A :class:`Scenario` from parsed TOML; :class:`ConfigError` naming the table and key on any problem."""
    r = _Reader(source)
    for section in data:
        if section not in _TABLES:
            close = difflib.get_close_matches(section, list(_TABLES), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise r.error(f"[{section}]", f"unknown table{hint} (valid: {', '.join(_TABLES)})")
    factors = FactorSpec(**r.table("factors", data["factors"], "[factors]")) if "factors" in data else FactorSpec()
    if factors.zone is not None:
        from carbond.intensity import load_table

        try:
            load_table().zone(factors.zone)
        except UsageError as exc:
            raise r.error("[factors] zone", str(exc)) from None
    dev = Development(**r.table("development", data["development"], "[development]")) if "development" in data else None
    dep = Deployment(**r.table("deployment", data["deployment"], "[deployment]")) if "deployment" in data else None
    if dep is not None and dep.servers > 0 and dep.server_power_w <= 0:
        raise r.error("[deployment] server_power_w", "required (greater than 0) when servers is set")
    inf = Inference(**r.table("inference", data["inference"], "[inference]")) if "inference" in data else None
    ret = Retraining(**r.table("retraining", data["retraining"], "[retraining]")) if "retraining" in data else None
    for name, present in (("inference", inf), ("retraining", ret)):
        if present is not None and dep is None:
            raise r.error("[deployment] days", f"required by [{name}] (how many days the model is deployed)")
    phases_raw = data.get("phases", [])
    if not isinstance(phases_raw, list):
        raise r.error("[[phases]]", "must be an array of tables ([[phases]])")
    phases = []
    for i, body in enumerate(phases_raw):
        label = f"[[phases]] #{i + 1}"
        values = r.table("phases", body, label)
        if not _PHASE_NAME.match(values["name"]):
            raise r.error(f"{label} name", f"must be a lower-case name (letters, digits, _ . -), got {values['name']!r}")
        if values["name"] in STANDARD_PHASES:
            raise r.error(f"{label} name", f"{values['name']!r} is a standard phase; use its own table or a custom name")
        phases.append(CustomPhase(**values))
    return Scenario(source, factors, dev, dep, inf, ret, tuple(phases))


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--scenario {p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--scenario {p}: cannot read it: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario {p}: not valid TOML: {exc}") from exc
    return parse_scenario(data, str(p))
