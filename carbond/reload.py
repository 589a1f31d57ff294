"""What a configuration reload (SIGHUP, ``systemctl reload carbond``) may change live. Pure.

Live: the tick interval, flush interval, log level, region and intensity provider, impact
factors and the idle policy. Only at a restart: the store, the sensors, the host tag, the
socket, simulated GPUs and the Prometheus address (they are wired at start). A reload keeps
those at their running values and says which ones wait for a restart. Nothing buffered is
touched: the journal and the spool carry on as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from carbond.config import SECTIONS, SPECS, Settings, Spec

RESTART_SECTIONS = ("store", "sensors")
RESTART_KEYS = frozenset({"daemon.host", "daemon.socket", "daemon.simulate_gpus", "prometheus.listen"})
LIVE_KEYS = frozenset({"store.flush_interval_s"})  # live although its section is not


def needs_restart(spec: Spec) -> bool:
    if spec.path in LIVE_KEYS:
        return False
    return spec.section in RESTART_SECTIONS or spec.path in RESTART_KEYS


def _value(settings: Settings, spec: Spec) -> Any:
    return getattr(getattr(settings, spec.section), spec.key)


def describe(spec: Spec, old: Any, new: Any) -> str:
    if spec.secret:
        return f"{spec.path} (secret)"
    return f"{spec.path} {old!r} → {new!r}"


@dataclass(frozen=True)
class ReloadPlan:
    settings: Settings  # the new settings, restart-only values kept as they run now
    applied: tuple[Spec, ...]  # changed now
    pending: tuple[Spec, ...]  # changed in the file, effective after a restart

    def changed(self, *prefixes: str) -> bool:
        """Whether any applied setting's path starts with one of ``prefixes`` (``"intensity."``, ``"daemon.interval_s"``)."""
        return any(s.path.startswith(prefixes) for s in self.applied)


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    applied: list[Spec] = []
    pending: list[Spec] = []
    keep: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for spec in SPECS:
        before, after = _value(old, spec), _value(new, spec)
        if before == after:
            continue
        if needs_restart(spec):
            pending.append(spec)
            keep[spec.section][spec.key] = before
        else:
            applied.append(spec)
    sections = {name: dataclasses.replace(getattr(new, name), **keep[name]) if keep[name] else getattr(new, name)
                for name in SECTIONS}
    return ReloadPlan(Settings(**sections, reports=new.reports), tuple(applied), tuple(pending))  # reports apply live
