from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from carbond.errors import UsageError
from carbond.store import open_store
from carbond.store.base import Query, make_point
from carbond.store.sqlite import SqliteStore

S = 1_000_000_000


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "s.db")
    yield s
    s.close()


def _power_series(store, device: str, watts: list[float], start_s: int = 0, job: str = "a"):
    store.write(
        make_point("device", {"host": "h", "device": device, "job": job}, {"power_w": w, "energy_j": w}, (start_s + i) * S)
        for i, w in enumerate(watts)
    )


def test_roundtrip_scan_in_time_order(store):
    store.write([make_point("host", {"host": "h"}, {"energy_j": 2.0}, 2 * S),
                 make_point("host", {"host": "h"}, {"energy_j": 1.0}, 1 * S)])
    points = list(store.scan("host"))
    assert [p.time_ns for p in points] == [S, 2 * S]
    assert points[0].fields == {"energy_j": 1.0} and points[0].tags == {"host": "h"}


def test_same_series_and_time_merges_fields_like_influxdb(store):
    store.write([make_point("host", {"host": "h"}, {"energy_j": 1.0, "co2_g": 5.0}, S)])
    store.write([make_point("host", {"host": "h"}, {"energy_j": 3.0}, S)])
    (p,) = store.scan("host")
    assert p.fields == {"energy_j": 3.0, "co2_g": 5.0}


def test_tag_order_does_not_make_a_new_series(store):
    store.write([make_point("device", {"a": "1", "b": "2"}, {"x": 1.0}, S)])
    store.write([make_point("device", {"b": "2", "a": "1"}, {"x": 2.0}, S)])
    assert [p.fields["x"] for p in store.scan("device")] == [2.0]


def test_make_point_drops_non_finite_and_none():
    p = make_point("m", {"t": "v", "empty": ""}, {"a": 1, "b": math.nan, "c": None, "d": math.inf}, 0)
    assert p.fields == {"a": 1.0} and isinstance(p.fields["a"], float) and p.tags == {"t": "v"}


def test_aggregates_group_by_tags(store):
    _power_series(store, "gpu0", [100, 200, 300], job="a")
    _power_series(store, "gpu1", [10, 10], job="b")
    rows = {r.tags["device"]: r.values for r in store.query(Query("device", ("energy_j",), "sum", group_by=("device",)))}
    assert rows == {"gpu0": {"energy_j": 600.0}, "gpu1": {"energy_j": 20.0}}
    mean = store.query(Query("device", ("power_w",), "mean", where=(("job", "a"),)))
    assert mean[0].values["power_w"] == 200.0
    last = store.query(Query("device", ("power_w",), "last", group_by=("device",)))
    assert [(r.tags["device"], r.values["power_w"]) for r in last] == [("gpu0", 300.0), ("gpu1", 10.0)]
    assert store.query(Query("device", ("power_w",), "max"))[0].values["power_w"] == 300.0
    assert store.query(Query("device", ("power_w",), "count"))[0].values["power_w"] == 5.0


def test_integral_is_trapezoid_per_series(store):
    _power_series(store, "gpu0", [100, 200, 300])  # (150 + 250) W·s
    _power_series(store, "gpu1", [10, 10, 10])  # 20 W·s
    total = store.query(Query("device", ("power_w",), "integral"))[0].values["power_w"]
    assert total == pytest.approx(400 + 20)  # never interpolated across series


def test_time_buckets_and_range(store):
    _power_series(store, "gpu0", [1, 2, 3, 4, 5, 6])
    rows = store.query(Query("device", ("energy_j",), "sum", every_s=2))
    assert [(r.time_ns, r.values["energy_j"]) for r in rows] == [(0, 3.0), (2 * S, 7.0), (4 * S, 11.0)]
    rows = store.query(Query("device", ("energy_j",), "sum", since_ns=1 * S, until_ns=3 * S))
    assert rows[0].values["energy_j"] == 5.0  # [1 s, 3 s)


def test_tag_values_with_quotes_and_dots_are_safe(store):
    store.write([make_point("run", {"job": "it's \"x\".y", "project": "p"}, {"energy_j": 1.0}, S)])
    rows = store.query(Query("run", ("energy_j",), "sum", where=(("job", "it's \"x\".y"),), group_by=("job",)))
    assert rows[0].tags["job"] == "it's \"x\".y"


def test_unknown_aggregate():
    with pytest.raises(ValueError, match="valid: sum"):
        Query("device", ("x",), "median")


def test_concurrent_writers_lose_nothing(tmp_path: Path):
    a = SqliteStore(tmp_path / "c.db")
    b = SqliteStore(tmp_path / "c.db")

    def writer(store, device):
        for i in range(50):
            store.write([make_point("device", {"device": device}, {"energy_j": 1.0}, i * S)])

    threads = [threading.Thread(target=writer, args=(s, d)) for s, d in ((a, "x"), (b, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(a.scan("device"))) == 100
    a.close()
    b.close()


def test_readonly_open_of_missing_file(tmp_path: Path):
    with pytest.raises(UsageError, match="no database"):
        open_store(f"sqlite://{tmp_path}/none.db", readonly=True)
