"""The tick loop: a thread that calls one function every ``interval_s`` of monotonic time.

It behaves like an APScheduler interval job with ``max_instances=1, coalesce=True``
(never two ticks at once; missed slots after an overrun or a suspend collapse into one)
but costs one timed wait per tick and nothing else: a timed ``acquire`` of a held lock, which
``stop`` releases (done in C; ``Event.wait`` runs a Condition's Python code around it, about
15 µs of CPU more per wake-up on the reference VM). APScheduler still runs the
daemon's slower jobs (flushes, refreshes, reports); measured on the reference VM, its
per-fire bookkeeping cost about 0.2 ms of CPU more than this loop — 40% of the tick
budget (docs/performance.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def next_deadline(deadline: float, now: float, interval_s: float) -> float:
    """The next slot after ``deadline`` that is still in the future (missed slots coalesce)."""
    deadline += interval_s
    if deadline <= now:
        deadline = now + interval_s - ((now - deadline) % interval_s)
    return deadline


class Ticker:
    def __init__(self, interval_s: float, fn: Callable[[], object], *, clock: Callable[[], float] = time.monotonic,
                 name: str = "carbond-tick") -> None:
        self.interval_s = interval_s
        self._fn = fn
        self._clock = clock
        self._halt = threading.Lock()  # held while running; stop() releases it, which ends the wait at once
        self._halt.acquire()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.missed = 0  # slots skipped because a tick overran

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        deadline = self._clock() + self.interval_s
        while not self._halt.acquire(timeout=max(0.0, deadline - self._clock())):
            try:
                self._fn()
            except Exception:  # a failing tick must not end the loop
                log.exception("tick failed")
            now = self._clock()
            following = next_deadline(deadline, now, self.interval_s)
            self.missed += max(0, round((following - deadline) / self.interval_s) - 1)
            deadline = following

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the tick in progress, if any."""
        try:
            self._halt.release()
        except RuntimeError:  # released already (a second stop)
            pass
        if self._thread.is_alive():
            self._thread.join(timeout_s)
