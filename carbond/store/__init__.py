"""Stores: where points go, and where reports read them back."""

from __future__ import annotations

from carbond.errors import UsageError
from carbond.store.base import Point, Query, Row, Store, make_point
from carbond.store.urls import StoreUrl, parse_store_url

__all__ = ["Point", "Query", "Row", "Store", "StoreUrl", "make_point", "open_store", "parse_store_url"]


def open_store(url: str, *, readonly: bool = False) -> Store:
    """Open the store a URL names. Backends are imported only when used."""
    parsed = parse_store_url(url)
    if parsed.kind == "sqlite":
        from carbond.store.sqlite import SqliteStore

        return SqliteStore(parsed.path, readonly=readonly)
    raise UsageError(
        f"store {parsed.redacted()}: InfluxDB stores are not available in this version of carbond; "
        "use sqlite:///ABSOLUTE/PATH.db"
    )
