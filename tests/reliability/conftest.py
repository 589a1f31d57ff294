"""Fixtures of the reliability suite; the harness itself is in ``harness.py``."""

from tests.reliability.harness import (  # noqa: F401 - fixtures
    _long_variants_only_when_asked,
    faulty_proxy,
    influx_db,
    influx_server,
    influxd_factory,
    live_daemons,
)
