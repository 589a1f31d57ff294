"""carbond: measure the energy, carbon, water and embodied impact of AI work.

Public API only; everything heavy is imported where it is used. ``track`` and
``RunResult`` load :mod:`carbond.client` on first use, and ``estimate`` loads
:mod:`carbond.reports.estimate`, so ``import carbond`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["RunResult", "__version__", "estimate", "track"]

if TYPE_CHECKING:
    from carbond.client import RunResult, track
    from carbond.reports.estimate import estimate


def __getattr__(name: str) -> Any:
    if name in ("track", "RunResult"):
        from carbond import client

        value = getattr(client, name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    if name == "estimate":
        from carbond.reports.estimate import estimate

        globals()[name] = estimate
        return estimate
    raise AttributeError(f"module 'carbond' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "track", "RunResult", "estimate"})
