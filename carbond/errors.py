"""One exception tree for carbond.

Vendor errors (NVML, sqlite3, OS, HTTP) are converted once, at the boundary where
they happen, into one of these classes with the original kept as ``__cause__``.
The CLI maps :class:`UsageError` (and subclasses) to exit code 2 and every other
:class:`CarbondError` to exit code 1.
"""

from __future__ import annotations


class CarbondError(Exception):
    """Base of every error carbond raises on purpose."""


class UsageError(CarbondError):
    """Bad usage, configuration or input: the CLI exits with code 2."""


class ConfigError(UsageError):
    """A config file, environment variable or flag has a bad key or value."""


class UnknownZoneError(UsageError):
    """A region/zone name that the intensity table does not know."""


class StoreError(CarbondError):
    """A store could not be opened, written or read."""


class StoreUrlError(UsageError):
    """A store URL that carbond cannot parse or does not support."""


class SensorError(CarbondError):
    """A sensor failed to read; the daemon logs it and carries on."""


class DeviceLostError(SensorError):
    """A device disappeared (for example NVML's GPU_IS_LOST); it is marked unavailable."""


class DaemonUnavailableError(CarbondError):
    """No daemon answers on the socket."""


class OptimizeError(UsageError):
    """A model, input or variant that an optimization technique cannot take (``carbond.optimize``)."""
