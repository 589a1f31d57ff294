"""Prune and quantize a model, and compare the variants by measured energy per item at what accuracy.

Needs torch (``pip install 'carbond[optimize]'``); ``compare`` also needs pandas. Submodules load
on first use, so ``carbond optimize --help`` and ``import carbond.optimize`` stay light:

- :mod:`carbond.optimize.techniques`: ``prune_global``, ``prune_channels``, ``quantize_dynamic``,
  ``quantize_static``, ``apply_variant``, ``parse_variant``
- :mod:`carbond.optimize.metrics`: ``count_params``, ``serialized``, ``save``, ``count_flops``,
  ``time_forward``, ``efficiency``
- :mod:`carbond.optimize.compare`: ``compare`` (a DataFrame), ``run_comparison`` (rows and notes)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from carbond.errors import OptimizeError

_WHERE = {
    "techniques": ("prune_global", "prune_channels", "quantize_dynamic", "quantize_static", "apply_variant",
                   "parse_variant", "Applied", "Variant"),
    "metrics": ("count_params", "serialized", "save", "count_flops", "time_forward", "efficiency", "Efficiency", "Latency"),
    "compare": ("compare", "run_comparison", "check_input", "DEFAULT_VARIANTS"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [  # the names of _WHERE, spelled out for readers and linters
    "DEFAULT_VARIANTS", "Applied", "Efficiency", "Latency", "OptimizeError", "Variant", "apply_variant", "check_input",
    "compare", "count_flops", "count_params", "efficiency", "parse_variant", "prune_channels", "prune_global",
    "quantize_dynamic", "quantize_static", "run_comparison", "save", "serialized", "time_forward",
]

if TYPE_CHECKING:
    from carbond.optimize.compare import DEFAULT_VARIANTS, check_input, compare, run_comparison
    from carbond.optimize.metrics import Efficiency, Latency, count_flops, count_params, efficiency, save, serialized, time_forward
    from carbond.optimize.techniques import (
        Applied,
        Variant,
        apply_variant,
        parse_variant,
        prune_channels,
        prune_global,
        quantize_dynamic,
        quantize_static,
    )


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'carbond.optimize' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f"carbond.optimize.{module}"), name)
    except ModuleNotFoundError as exc:
        if exc.name in ("torch", "pandas"):
            raise OptimizeError(f"carbond.optimize needs {exc.name}: pip install 'carbond[optimize]'") from exc
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
