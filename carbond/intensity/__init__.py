"""Grid carbon intensity: the bundled zone table and the provider protocol."""

from carbond.intensity.table import Intensity, IntensityProvider, StaticProvider, Zone, ZoneTable, load_table

__all__ = ["Intensity", "IntensityProvider", "StaticProvider", "Zone", "ZoneTable", "load_table"]
