"""One storage suite for every backend: the embedded SQLite store and a real InfluxDB 1.6.7.

Each test runs once per backend; the cross-check at the end writes one daemon-like data
set to both and asserts every query, scan and export gives the same answer.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import influx_servers
from fakes.influx_servers import InfluxDb

from carbond.export import export
from carbond.store import open_store
from carbond.store.base import Point, Query, Row, Store, make_point

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a fixed past instant, hour-aligned
BACKENDS = ["sqlite", "influxdb-v1"]
influx_server, influx_db = influx_servers.influx_server, influx_servers.influx_db  # fixtures


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "sqlite":
        return open_store(f"sqlite://{tmp_path}/suite.db")
    db: InfluxDb = request.getfixturevalue("influx_db")
    return open_store(db.url)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = _open(request.param, request, tmp_path)
    yield s
    s.close()


def _power_series(store: Store, device: str, watts: list[float], start_s: int = 0, job: str = "a") -> None:
    store.write(
        make_point("device", {"host": "h", "device": device, "job": job}, {"power_w": w, "energy_j": w}, T0 + (start_s + i) * S)
        for i, w in enumerate(watts)
    )


def test_roundtrip_scan_in_time_order(store):
    store.write([make_point("host", {"host": "h"}, {"energy_j": 2.0}, T0 + 2 * S),
                 make_point("host", {"host": "h"}, {"energy_j": 1.0}, T0 + 1 * S)])
    points = list(store.scan("host"))
    assert [p.time_ns for p in points] == [T0 + S, T0 + 2 * S]
    assert points[0].fields == {"energy_j": 1.0} and points[0].tags == {"host": "h"}
    assert list(store.scan("host", since_ns=T0 + 2 * S)) == [points[1]]
    assert list(store.scan("host", until_ns=T0 + 2 * S)) == [points[0]]


def test_same_series_and_time_merges_fields(store):
    store.write([make_point("host", {"host": "h"}, {"energy_j": 1.0, "co2_g": 5.0}, T0)])
    store.write([make_point("host", {"host": "h"}, {"energy_j": 3.0}, T0)])
    (p,) = store.scan("host")
    assert dict(p.fields) == {"energy_j": 3.0, "co2_g": 5.0}


def test_tag_order_does_not_make_a_new_series(store):
    store.write([make_point("device", {"a": "1", "b": "2"}, {"x": 1.0}, T0)])
    store.write([make_point("device", {"b": "2", "a": "1"}, {"x": 2.0}, T0)])
    assert [p.fields["x"] for p in store.scan("device")] == [2.0]


def test_aggregates_group_by_tags(store):
    _power_series(store, "gpu0", [100, 200, 300], job="a")
    _power_series(store, "gpu1", [10, 10], job="b")
    rows = {r.tags["device"]: r.values for r in store.query(Query("device", ("energy_j",), "sum", group_by=("device",)))}
    assert rows == {"gpu0": {"energy_j": 600.0}, "gpu1": {"energy_j": 20.0}}
    assert store.query(Query("device", ("power_w",), "mean", where=(("job", "a"),)))[0].values["power_w"] == 200.0
    last = store.query(Query("device", ("power_w",), "last", group_by=("device",)))
    assert [(r.tags["device"], r.values["power_w"]) for r in last] == [("gpu0", 300.0), ("gpu1", 10.0)]
    assert store.query(Query("device", ("power_w",), "max"))[0].values["power_w"] == 300.0
    assert store.query(Query("device", ("power_w",), "min"))[0].values["power_w"] == 10.0
    assert store.query(Query("device", ("power_w",), "count"))[0].values["power_w"] == 5.0


def test_integral_is_trapezoid_per_series(store):
    _power_series(store, "gpu0", [100, 200, 300])  # (150 + 250) W·s
    _power_series(store, "gpu1", [10, 10, 10])  # 20 W·s
    total = store.query(Query("device", ("power_w",), "integral"))[0].values["power_w"]
    assert total == pytest.approx(400 + 20)  # never interpolated across series


def test_time_buckets_and_range(store):
    _power_series(store, "gpu0", [1, 2, 3, 4, 5, 6])
    rows = store.query(Query("device", ("energy_j",), "sum", every_s=2))
    assert [(r.time_ns, r.values["energy_j"]) for r in rows] == [(T0, 3.0), (T0 + 2 * S, 7.0), (T0 + 4 * S, 11.0)]
    rows = store.query(Query("device", ("energy_j",), "sum", since_ns=T0 + 1 * S, until_ns=T0 + 3 * S))
    assert rows[0].values["energy_j"] == 5.0  # [1 s, 3 s)


def test_integral_in_time_buckets(store):
    _power_series(store, "gpu0", [100, 200, 300, 400, 500])
    rows = store.query(Query("device", ("power_w",), "integral", every_s=2))
    assert [(r.time_ns, r.values["power_w"]) for r in rows] == [(T0, 150.0), (T0 + 2 * S, 350.0)]


def test_empty_results(store):
    assert store.query(Query("device", ("energy_j",), "sum")) == []
    _power_series(store, "gpu0", [1.0])
    assert store.query(Query("device", ("energy_j",), "sum", where=(("job", "nope"),))) == []
    assert store.query(Query("device", ("energy_j",), "count", where=(("job", "nope"),))) == [Row(None, {}, {"energy_j": 0.0})]


@pytest.mark.parametrize("value", ["it's \"x\".y", "a b,c=d", "back\\slash", "ünïcode ✓", "semi;colon", "tab\tin"])
def test_awkward_tag_values_roundtrip_and_filter(store, value):
    store.write([make_point("run", {"job": value, "project": "p"}, {"energy_j": 1.0}, T0)])
    rows = store.query(Query("run", ("energy_j",), "sum", where=(("job", value),), group_by=("job",)))
    assert rows == [Row(None, {"job": value}, {"energy_j": 1.0})]
    assert [p.tags["job"] for p in store.scan("run")] == [value]


def test_awkward_names(store):
    store.write([make_point("run", {"job": "j", "my tag": "v"}, {"samples.total": 3.0, "loss rate": 0.5}, T0)])
    (p,) = store.scan("run")
    assert p.tags == {"job": "j", "my tag": "v"} and dict(p.fields) == {"samples.total": 3.0, "loss rate": 0.5}
    rows = store.query(Query("run", ("samples.total", "loss rate"), "sum", group_by=("my tag",)))
    assert rows == [Row(None, {"my tag": "v"}, {"samples.total": 3.0, "loss rate": 0.5})]


def test_measurements_and_scan_across_them(store):
    store.write([make_point("job", {"job": "b"}, {"energy_j": 1.0}, T0 + S),
                 make_point("host", {"host": "h"}, {"energy_j": 2.0}, T0 + S),
                 make_point("device", {"device": "gpu0"}, {"energy_j": 3.0}, T0)])
    assert store.measurements() == ["device", "host", "job"]
    assert [(p.measurement, p.time_ns) for p in store.scan(None)] == [("device", T0), ("host", T0 + S), ("job", T0 + S)]


# --- the cross-check: one data set, both backends, every query ---------------------------------
def _dataset() -> list[Point]:
    rng = random.Random(42)
    points: list[Point] = []
    t = T0
    for _ in range(400):
        t += int(rng.uniform(0.5, 1.5) * S)  # irregular intervals, like a real tick loop
        for d in ("gpu0", "gpu1", "cpu0", "ram"):
            kind = d.rstrip("0123456789")
            tags = {"host": "h1", "device": d, "kind": kind, "source": "counter" if kind != "ram" else "model"}
            if d == "gpu1":
                tags["job"] = "bert" if rng.random() < 0.5 else "gpt"
            w = rng.uniform(50, 400)
            fields = {"power_w": w, "energy_j": w * rng.uniform(0.5, 1.5), "utilization_pct": rng.uniform(0, 100)}
            if kind == "gpu":
                fields["temperature_c"] = rng.uniform(30, 80)
            points.append(make_point("device", tags, fields, t))
        points.append(make_point("host", {"host": "h1", "region": "DE"},
                                 {"power_w": rng.uniform(500, 900), "energy_j": rng.uniform(500, 900), "co2_g": rng.random()}, t))
    return points


QUERIES = [
    Query("device", ("energy_j",), "sum", group_by=("device",)),
    Query("device", ("energy_j", "power_w"), "sum", group_by=("kind", "device")),
    Query("device", ("power_w",), "mean", group_by=("job",)),
    Query("device", ("power_w", "utilization_pct"), "min", where=(("kind", "gpu"),)),
    Query("device", ("power_w",), "max", group_by=("source",)),
    Query("device", ("power_w",), "count", group_by=("device",)),
    Query("device", ("power_w",), "last", group_by=("device",)),
    Query("device", ("power_w",), "integral", group_by=("device",)),
    Query("device", ("power_w",), "integral"),
    Query("device", ("power_w", "energy_j"), "integral", group_by=("kind",), every_s=60),
    Query("device", ("energy_j",), "sum", every_s=60),
    Query("device", ("energy_j",), "sum", every_s=30, group_by=("device",), since_ns=T0 + 100 * S, until_ns=T0 + 250 * S),
    Query("device", ("temperature_c",), "mean", every_s=120, where=(("device", "gpu1"), ("job", "bert"))),
    Query("host", ("co2_g", "energy_j"), "sum", every_s=3600),
    Query("host", ("power_w",), "mean", since_ns=T0 + 50 * S),
    Query("host", ("power_w",), "last", every_s=100),
]


@pytest.fixture
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    stores = (_open("sqlite", request, tmp_path), _open("influxdb-v1", request, tmp_path))
    data = _dataset()
    for s in stores:
        for i in range(0, len(data), 500):
            s.write(data[i:i + 500])
    yield stores
    for s in stores:
        s.close()


def _approx(rows: list[Row]) -> list[tuple]:
    return [(r.time_ns, dict(r.tags), {k: (None if v is None else pytest.approx(v, rel=1e-9)) for k, v in r.values.items()})
            for r in rows]


@pytest.mark.parametrize("q", QUERIES, ids=[f"{q.measurement}-{q.agg}-{i}" for i, q in enumerate(QUERIES)])
def test_both_backends_answer_every_query_alike(both, q):
    sqlite, influx = both
    expected = sqlite.query(q)
    assert expected, "the query should select something"
    assert _approx(influx.query(q)) == _approx(expected)


def test_both_backends_scan_and_export_alike(both):
    sqlite, influx = both
    assert list(influx.scan(None)) == list(sqlite.scan(None))
    for fmt in ("csv", "lp"):
        outs = [io.StringIO(), io.StringIO()]
        counts = [export(s, out, fmt, "device", T0 + 10 * S, T0 + 90 * S) for s, out in zip(both, outs, strict=True)]
        assert counts[0] == counts[1] > 0 and outs[0].getvalue() == outs[1].getvalue()
    outs = [io.StringIO(), io.StringIO()]
    for s, out in zip(both, outs, strict=True):
        export(s, out, "jsonl", None, None, None)
    assert [json.loads(x) for x in outs[0].getvalue().splitlines()] == [json.loads(x) for x in outs[1].getvalue().splitlines()]
