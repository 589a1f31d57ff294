"""Stores: where points go, and where reports read them back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carbond.store.base import Point, Query, Row, Store, make_point
from carbond.store.urls import StoreUrl, parse_store_url

if TYPE_CHECKING:
    from carbond.store.delivery import SpoolOptions

__all__ = ["Point", "Query", "Row", "Store", "StoreUrl", "make_point", "open_configured_store", "open_store", "parse_store_url"]


def open_configured_store(settings: Any, *, readonly: bool = False) -> Store:
    """The store of ``settings.store`` (a :class:`carbond.config.StoreSettings`): InfluxDB gets its spool."""
    s = settings
    spool = None
    if not readonly and parse_store_url(s.url).kind == "influxdb":
        from pathlib import Path

        from carbond.config import default_state_dir
        from carbond.store.delivery import SpoolOptions, spool_path_for

        spool = SpoolOptions(path=Path(s.spool_path) if s.spool_path else spool_path_for(s.url, default_state_dir()),
                             max_bytes=s.spool_max_bytes, create_database=s.create_database,
                             flush_timeout_s=s.drain_timeout_s)
    return open_store(s.url, readonly=readonly, token=s.token, spool=spool, timeout_s=s.timeout_s,
                      ca_file=s.ca_file or None)


def open_store(url: str, *, readonly: bool = False, token: str = "", spool: SpoolOptions | None = None,
               timeout_s: float = 10.0, ca_file: str | None = None) -> Store:
    """Open the store a URL names. Backends are imported only when used.

    ``token`` is the InfluxDB 2.x/3.x token (``[store] token`` / ``token_file``); ``ca_file`` a PEM
    bundle to verify an ``https`` server with (default: the system's CAs). With ``spool``,
    an InfluxDB store gets the durable spool in front (:class:`~carbond.store.delivery.SpooledStore`:
    ``write`` commits locally, a thread delivers, ``close`` drains); the SQLite store, already a
    local commit, ignores it. No network I/O happens here: an unreachable server is found by
    the first delivery, which keeps retrying.
    """
    parsed = parse_store_url(url)
    if parsed.kind == "sqlite":
        from carbond.store.sqlite import SqliteStore

        return SqliteStore(parsed.path, readonly=readonly)
    from carbond.store.influx import InfluxStore

    store = InfluxStore(parsed, token=token, timeout_s=timeout_s, ca_certs=ca_file or None)
    if spool is None or readonly:
        return store
    from carbond.store.delivery import SpooledStore

    try:
        return SpooledStore.open(store, spool)
    except BaseException:
        store.close()
        raise
