"""Delivery from the spool to a fake sink: order, batches, split, backoff, dead letters, stop."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from carbond.store.base import make_point
from carbond.store.delivery import Delivery, DeliveryOptions, SpooledStore, dead_letter_path_for
from carbond.store.errors import (
    BatchTooLargeError,
    DatabaseNotFoundError,
    RejectedWriteError,
    RetryableWriteError,
    classify_status,
    retry_after_s,
)
from carbond.store.spool import Spool
from tests.conftest import wait_for

FAST = DeliveryOptions(batch_points=10, backoff_initial_s=0.01, backoff_max_s=0.05)


class FakeSink:
    """Records every request; ``behaviour(lines)`` may raise to simulate the server."""

    url = "fake://sink"

    def __init__(self, behaviour: Callable[[Sequence[str]], None] = lambda lines: None) -> None:
        self.behaviour = behaviour
        self.requests: list[list[str]] = []
        self.times: list[float] = []
        self.delivered: list[str] = []
        self.created = 0
        self.lock = threading.Lock()

    def write_lines(self, lines: Sequence[str]) -> None:
        with self.lock:
            self.requests.append(list(lines))
            self.times.append(time.monotonic())
        self.behaviour(lines)
        with self.lock:
            self.delivered.extend(lines)

    def create_database(self) -> None:
        self.created += 1


def _lines(n: int, start: int = 0) -> list[str]:
    return [f"m,host=h v={i} {i}" for i in range(start, start + n)]


@pytest.fixture
def spool(tmp_path: Path):
    s = Spool(tmp_path / "spool.db")
    yield s
    s.close()


def _run(spool: Spool, sink: FakeSink, options: DeliveryOptions = FAST, n: int = 35) -> Delivery:
    spool.append_lines(_lines(n))
    d = Delivery(spool, sink, options=options)
    d.start()
    assert d.wait_empty(30)
    d.stop(5)
    return d


def test_delivers_everything_in_order_in_batches(spool):
    sink = FakeSink()
    d = _run(spool, sink)
    assert sink.delivered == _lines(35)
    assert [len(r) for r in sink.requests] == [10, 10, 10, 5]
    assert d.counters().delivered_points == 35 and d.counters().spool_points == 0


def test_413_splits_until_batches_fit(spool, caplog):
    def behaviour(lines):
        if len(lines) > 3:
            raise BatchTooLargeError("too large", status=413)

    sink = FakeSink(behaviour)
    d = _run(spool, sink)
    assert sink.delivered == _lines(35)
    assert d.counters().dead_letter_points == 0
    assert max(len(r) for r in sink.requests[-3:]) <= 3  # later batches start small
    assert caplog.text.count("too large") == 1


def test_a_single_line_too_large_is_dead_lettered(spool):
    def behaviour(lines):
        if any("v=7 " in x for x in lines):
            raise BatchTooLargeError("too large", status=413, reason="too_large")

    sink = FakeSink(behaviour)
    d = _run(spool, sink)
    assert sink.delivered == [x for x in _lines(35) if "v=7 " not in x]
    dead = [json.loads(x) for x in dead_letter_path_for(spool.path).read_text().splitlines()]
    assert [x["line"] for x in dead] == ["m,host=h v=7 7"] and dead[0]["reason"] == "too_large"
    assert d.counters().dead_letter_points == 1


def test_transient_errors_back_off_and_retry_the_same_batch(spool):
    failures = iter(range(3))

    def behaviour(lines):
        if next(failures, None) is not None:
            raise RetryableWriteError("connection refused", reason="connection")

    sink = FakeSink(behaviour)
    d = _run(spool, sink)
    assert sink.delivered == _lines(35)
    assert sink.requests[0] == sink.requests[1] == sink.requests[3]  # the same batch again, not a new one
    assert d.counters().write_errors == 3
    gaps = [b - a for a, b in zip(sink.times, sink.times[1:4], strict=False)]
    assert all(g >= 0.008 for g in gaps)  # each retry waited


def test_retry_after_is_honoured(spool):
    calls = []

    def behaviour(lines):
        calls.append(1)
        if len(calls) == 1:
            raise classify_status(429, "slow down", "fake", {"Retry-After": "0.4"})

    sink = FakeSink(behaviour)
    d = _run(spool, sink)
    assert sink.times[1] - sink.times[0] >= 0.4
    assert d.last_delay_s >= 0.4


def test_no_retry_storm_while_the_store_is_down(spool):
    down = threading.Event()
    down.set()

    def behaviour(lines):
        if down.is_set():
            raise RetryableWriteError("down", reason="connection")

    sink = FakeSink(behaviour)
    spool.append_lines(_lines(5))
    d = Delivery(spool, sink, options=DeliveryOptions(backoff_initial_s=0.05, backoff_max_s=0.2))
    d.start()
    time.sleep(1.5)
    requests_while_down = len(sink.requests)
    down.clear()
    assert d.wait_empty(30)
    d.stop(5)
    # 0.05, 0.1, 0.2, 0.2, ... with jitter 0.8-1.0: at most ~11 in 1.5 s; a storm would be thousands
    assert 2 <= requests_while_down <= 12
    assert sink.delivered == _lines(5)


def test_rejected_batches_go_to_the_dead_letter_file_and_the_rest_continues(spool, caplog):
    def behaviour(lines):
        if any("v=12 " in x or "v=27 " in x for x in lines):
            raise classify_status(400, 'partial write: field type conflict: input field "v" dropped=1', "fake")

    caplog.set_level(logging.ERROR)
    sink = FakeSink(behaviour)
    d = _run(spool, sink)
    bad_batches = _lines(10, start=10) + _lines(10, start=20)
    assert sink.delivered == [x for x in _lines(35) if x not in bad_batches]
    dead = [json.loads(x) for x in dead_letter_path_for(spool.path).read_text().splitlines()]
    assert [x["line"] for x in dead] == bad_batches
    assert {x["reason"] for x in dead} == {"type_conflict"} and dead[0]["status"] == 400
    assert "field type conflict" in dead[0]["error"]
    assert d.counters().dead_letter_points == 20 and d.counters().write_errors == 2
    assert len(sink.requests) == 4  # one request per batch: a rejection is never retried
    reports = [r for r in caplog.records if "dead-letter" in r.getMessage()]
    assert len(reports) == 1  # reported once, clearly


def test_404_creates_the_database_only_when_told_to(tmp_path: Path):
    def make_sink():
        sink = FakeSink()

        def behaviour(lines):
            if not sink.created:
                raise DatabaseNotFoundError("database not found", status=404, reason="database_not_found")

        sink.behaviour = behaviour
        return sink

    with_flag = make_sink()
    s1 = Spool(tmp_path / "a.db")
    d = _run(s1, with_flag, DeliveryOptions(batch_points=10, create_database=True))
    assert with_flag.created == 1 and with_flag.delivered == _lines(35) and d.counters().dead_letter_points == 0
    without = make_sink()
    s2 = Spool(tmp_path / "b.db")
    d = _run(s2, without, FAST)
    assert without.created == 0 and without.delivered == [] and d.counters().dead_letter_points == 35
    s1.close()
    s2.close()


def test_dead_letter_file_is_bounded(spool):
    def behaviour(lines):
        raise RejectedWriteError("unauthorized", status=401, reason="unauthorized")

    d = _run(spool, FakeSink(behaviour), DeliveryOptions(batch_points=10, dead_letter_max_bytes=2000))
    c = d.counters()
    assert c.dead_letter_points > 0 and c.dropped_points > 0 and c.dead_letter_points + c.dropped_points == 35
    assert dead_letter_path_for(spool.path).stat().st_size <= 2000


def test_stop_drains_what_it_can_and_keeps_the_rest(tmp_path: Path):
    spool = Spool(tmp_path / "spool.db")

    def behaviour(lines):
        raise RetryableWriteError("down", reason="connection")

    spool.append_lines(_lines(7))
    sink = FakeSink(behaviour)
    d = Delivery(spool, sink, options=DeliveryOptions(backoff_initial_s=30, backoff_max_s=30))
    d.start()
    wait_for(lambda: len(sink.requests) == 1)  # now in a 30 s backoff
    started = time.monotonic()
    assert d.stop(flush_timeout_s=60) is False
    assert time.monotonic() - started < 20  # one more try, then stop: not the backoff, not the whole timeout
    assert len(sink.requests) == 2
    spool.close()
    assert len(Spool(tmp_path / "spool.db")) == 7  # nothing lost: the next start sends them


def test_spooled_store_write_never_waits_for_the_network(tmp_path: Path):
    gate = threading.Event()
    sink = FakeSink(lambda lines: gate.wait(30))
    sink.close = lambda: None
    store = SpooledStore.open(sink, _options(tmp_path))
    try:
        point = make_point("host", {"host": "h"}, {"energy_j": 1.0}, 1)
        store.write([point])
        started = time.monotonic()
        for i in range(20):  # the sink is blocked: every write still returns at once
            store.write([make_point("host", {"host": "h"}, {"energy_j": 1.0}, i + 2)])
        assert time.monotonic() - started < 10
        assert store.counters().spool_points >= 20
        gate.set()
        assert store.wait_empty(30)
        assert len(sink.delivered) == 21
    finally:
        gate.set()
        store.close()


def _options(tmp_path: Path):
    from carbond.store.delivery import SpoolOptions

    return SpoolOptions(tmp_path / "spool.db", delivery=FAST)


def test_retry_after_header_forms():
    assert retry_after_s("3") == 3.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412470.0) == 10.0
    assert retry_after_s("garbage") is None and retry_after_s(None) is None


@pytest.mark.parametrize(("status", "message", "action", "reason"), [
    (413, "", "split", "too_large"),
    (429, "", "retry", "rate_limited"),
    (500, "timeout", "retry", "server_error"),
    (503, "", "retry", "server_error"),
    (400, 'partial write: field type conflict: input field "x"', "reject", "type_conflict"),
    (400, "unable to parse 'x'", "reject", "bad_request"),
    (401, "authorization failed", "reject", "unauthorized"),
    (403, "", "reject", "forbidden"),
    (404, 'database not found: "x"', "reject", "database_not_found"),
    (422, "points beyond retention", "reject", "http_422"),
])
def test_http_classification(status, message, action, reason):
    exc = classify_status(status, message, "influxdb+v1://u:***@h:1/db")
    assert (exc.action, exc.reason, exc.status) == (action, reason, status)
    assert isinstance(exc, DatabaseNotFoundError) == (reason == "database_not_found")
