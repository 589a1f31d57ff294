from __future__ import annotations

import threading

from carbond.ticker import Ticker, next_deadline
from tests.conftest import wait_for


def test_next_deadline_keeps_the_grid_and_coalesces_missed_slots():
    assert next_deadline(10.0, 10.2, 1.0) == 11.0
    assert next_deadline(10.0, 13.25, 1.0) == 14.0  # three slots missed: one tick, back on the grid
    assert next_deadline(10.0, 11.0, 1.0) == 12.0


def test_ticks_never_overlap_and_a_failing_tick_does_not_stop_the_loop():
    running, calls, overlap = threading.Lock(), [], []

    def fn():
        if not running.acquire(blocking=False):
            overlap.append(True)
            return
        try:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("boom")
        finally:
            running.release()

    t = Ticker(0.01, fn)
    t.start()
    wait_for(lambda: len(calls) >= 5, timeout_s=30)
    t.stop()
    n = len(calls)
    assert not overlap and n >= 5
    assert len(calls) == n  # stopped means stopped


def test_stop_ends_a_long_wait_at_once_and_a_second_stop_is_harmless():
    calls: list[int] = []
    t = Ticker(3600.0, lambda: calls.append(1))  # the first slot is an hour away
    t.start()
    stopper = threading.Thread(target=t.stop)
    stopper.start()
    stopper.join(timeout=30)
    assert not stopper.is_alive()  # stop() returned: the thread left its hour-long wait
    assert not t._thread.is_alive() and calls == []
    t.stop()  # again, from the same or another thread: nothing to release, no error
