"""InfluxQL from the store query model, and Rows from InfluxDB's answers (pure, no server)."""

from __future__ import annotations

import pytest

from carbond.errors import UsageError
from carbond.store import influxql
from carbond.store.base import Query, Row
from carbond.store.influx_init import cq_statement, duration_s

S = 1_000_000_000


def test_identifiers_and_strings_are_quoted_and_escaped():
    assert influxql.ident('my "odd" name') == r'"my \"odd\" name"'
    assert influxql.string("it's a \\ test") == r"'it\'s a \\ test'"
    assert influxql.source("device", "carbond 1h") == '"carbond 1h"."device"'


@pytest.mark.parametrize(("q", "expected"), [
    (Query("device", ("energy_j",), "sum", group_by=("device",)),
     'SELECT sum("energy_j") AS "energy_j" FROM "device" GROUP BY "device"'),
    (Query("host", ("power_w", "co2_g"), "mean", since_ns=5, until_ns=9, where=(("host", "a'b"),), every_s=60),
     "SELECT mean(\"power_w\") AS \"power_w\", mean(\"co2_g\") AS \"co2_g\" FROM \"host\" "
     "WHERE \"host\" = 'a\\'b' AND time >= 5 AND time < 9 GROUP BY time(60000000000ns) fill(none)"),
    (Query("device", ("power_w",), "integral", group_by=("kind",)),
     'SELECT integral("power_w", 1s) AS "power_w" FROM "device" GROUP BY *'),
    (Query("device", ("power_w",), "integral", every_s=1.5),
     'SELECT "power_w" FROM "device" GROUP BY *'),
])
def test_statements(q, expected):
    assert influxql.select_statement(q) == expected


def test_rows_are_ordered_by_group_then_time_and_missing_tags_are_empty():
    q = Query("device", ("energy_j",), "sum", group_by=("device",), every_s=2)
    series = [{"name": "device", "tags": {"device": "gpu1"}, "columns": ["time", "energy_j"], "values": [[0, 1], [2 * S, None]]},
              {"name": "device", "tags": {"device": ""}, "columns": ["time", "energy_j"], "values": [[0, 3.5]]}]
    assert influxql.rows(q, series) == [Row(0, {"device": ""}, {"energy_j": 3.5}), Row(0, {"device": "gpu1"}, {"energy_j": 1.0})]


def test_per_series_integrals_are_summed_per_group():
    q = Query("device", ("power_w",), "integral", group_by=("kind",))
    series = [{"tags": {"kind": "gpu", "device": d}, "columns": ["time", "power_w"], "values": [[0, a]]}
              for d, a in (("gpu0", 10.0), ("gpu1", 5.0))]
    series.append({"tags": {"kind": "cpu", "device": "cpu0"}, "columns": ["time", "power_w"], "values": [[0, None]]})
    assert influxql.rows(q, series) == [Row(None, {"kind": "gpu"}, {"power_w": 15.0})]


def test_bucketed_integral_keeps_pairs_inside_a_bucket():
    q = Query("device", ("power_w",), "integral", every_s=3)
    values = [[i * S, w] for i, w in enumerate([100, 200, None, 400, 500])]  # a gap (None) breaks the chain
    rows = influxql.rows(q, [{"tags": {"device": "gpu0"}, "columns": ["time", "power_w"], "values": values}])
    assert rows == [Row(0, {}, {"power_w": 150.0}), Row(3 * S, {}, {"power_w": 450.0})]  # 2→3 s crosses buckets


def test_count_of_nothing_is_zero_like_sql():
    assert influxql.rows(Query("m", ("x",), "count"), []) == [Row(None, {}, {"x": 0.0})]
    assert influxql.rows(Query("m", ("x",), "count", group_by=("t",)), []) == []


def test_scan_orders_ties_like_sqlite_and_splits_tags_from_fields():
    chunks = [[{"columns": ["time", "device", "energy_j", "host"],
                "values": [[1, "gpu1", 2, "h"], [1, "gpu0", 1, None], [2, "gpu0", None, "h"]]}],
              [{"columns": ["time", "device", "energy_j", "host"], "values": [[3, "gpu0", 4.5, "h"]]}]]
    points = list(influxql.scan_points("device", {"energy_j"}, chunks))
    assert [(p.time_ns, dict(p.tags), dict(p.fields)) for p in points] == [
        (1, {"device": "gpu0"}, {"energy_j": 1.0}), (1, {"device": "gpu1", "host": "h"}, {"energy_j": 2.0}),
        (3, {"device": "gpu0", "host": "h"}, {"energy_j": 4.5})]


def test_durations():
    assert duration_s("30d") == 30 * 86400 and duration_s("720h0m0s") == 30 * 86400
    assert duration_s("INF") == 0 and duration_s("0s") == 0 and duration_s("1h30m") == 5400
    with pytest.raises(UsageError, match="30d"):
        duration_s("thirty days")


def test_continuous_query_statement():
    cq = cq_statement("carbond", "host", "autogen", "carbond_1h", "1h", "6h")
    assert cq.startswith('CREATE CONTINUOUS QUERY "carbond_host_1h" ON "carbond" RESAMPLE EVERY 1h FOR 6h BEGIN SELECT ')
    assert 'sum("energy_j") AS "energy_j"' in cq and 'mean("power_w") AS "power_w"' in cq
    assert cq.endswith('INTO "carbond"."carbond_1h"."host" FROM "carbond"."autogen"."host" GROUP BY time(1h), * END')
