"""carbond: measure the energy, carbon, water and embodied impact of AI work.

Public API only; everything heavy is imported where it is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
