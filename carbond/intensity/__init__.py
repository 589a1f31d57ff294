"""Grid carbon intensity: the bundled zone table, the provider protocol, and the provider factory.

- :mod:`.table`: the bundled table (``load_table``), ``Intensity``, ``IntensityProvider``, ``StaticProvider``;
- :mod:`.providers`: ``make_provider(ProviderSettings)`` for ``table``, ``series``,
  ``electricitymaps``, ``ukci`` and ``watttime``;
- :mod:`.live`: the per-hour cache, backoff and fallback behind the network providers;
- :mod:`.forecast`: ``forecast(points, duration_s, within_s, now)``, the greenest start time.
"""

from carbond.intensity.providers import PROVIDERS, ProviderSettings, make_provider
from carbond.intensity.table import Intensity, IntensityProvider, StaticProvider, Zone, ZoneTable, load_table

__all__ = ["PROVIDERS", "Intensity", "IntensityProvider", "ProviderSettings", "StaticProvider", "Zone", "ZoneTable",
           "load_table", "make_provider"]
