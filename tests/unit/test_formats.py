from __future__ import annotations

import pytest

from carbond.errors import StoreUrlError, UsageError
from carbond.store.base import make_point
from carbond.store.lineprotocol import encode
from carbond.store.urls import parse_store_url
from carbond.timeutil import parse_duration_s, parse_time


def test_line_protocol_escaping_and_floats():
    p = make_point("device", {"host": "a b", "model": "x,y=z"}, {"power_w": 12, "energy_j": 1.5}, 7)
    assert encode(p) == r"device,host=a\ b,model=x\,y\=z energy_j=1.5,power_w=12 7"


def test_line_protocol_never_writes_ints():
    assert "i" not in encode(make_point("m", {}, {"n": 3}, 1)).split(" ")[1]


def test_line_protocol_point_without_fields():
    assert encode(make_point("m", {"a": "b"}, {"x": float("nan")}, 1)) is None


def test_store_urls():
    u = parse_store_url("influxdb+v1://me:p%40ss@db.example:8086/carbond?rp=week")
    assert (u.version, u.tls, u.host, u.port, u.database, u.username, u.password, u.rp) == (
        1, False, "db.example", 8086, "carbond", "me", "p@ss", "week")
    assert "p@ss" not in u.redacted() and u.redacted().startswith("influxdb+v1://me:***@")
    v2 = parse_store_url("influxdb+v2s://cloud:443/bucket?org=acme")
    assert (v2.version, v2.tls, v2.org, v2.base_url) == (2, True, "acme", "https://cloud:443")
    assert parse_store_url("sqlite:///var/lib/carbond/c.db").path == "/var/lib/carbond/c.db"


@pytest.mark.parametrize("url", ["influxdb+v1://h:8086/", "influxdb+v1://h:8086/a/b", "influxdb+v1://h:8086/db?org=x",
                                 "sqlite:///var/lib/", "influxdb+v3://h:1/db", "influxdb+v1://:8086/db"])
def test_bad_store_urls(url):
    with pytest.raises(StoreUrlError, match="valid forms"):
        parse_store_url(url)


def test_times():
    from datetime import UTC, datetime

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_time("-1h", now=now) == datetime(2026, 11, 30, 11, tzinfo=UTC)
    assert parse_time("-7d", now=now) == datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert parse_time("2026-11-30T10:00:00Z") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_time("2026-11-30T11:00:00+01:00") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_time("2026-11-30") == datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(UsageError, match="ISO 8601"):
        parse_time("last tuesday")


def test_durations():
    assert parse_duration_s("90") == 90 and parse_duration_s("15m") == 900 and parse_duration_s("6h") == 21600
    for bad in ("0", "-5", "soon", "nan", "-1h"):
        with pytest.raises(UsageError):
            parse_duration_s(bad)
