"""Delivery: one thread moves points from the spool to the store, in order, in batches.

A batch leaves the spool only when the store acknowledged it, or when it was written to
the dead-letter file. What a failure does depends on its class (:mod:`carbond.store.errors`):

- ``split`` (413): send the halves (recursively; a single line too large is dead-lettered);
  later batches are smaller for a while;
- ``retry`` (429, 5xx, connection, timeout): keep the batch and wait — exponential backoff
  with jitter, capped, never shorter than the server's ``Retry-After`` — then send it again.
  One request per wait: no retry storm;
- ``reject`` (other 4xx): the batch goes to the dead-letter file (JSON lines: time, reason,
  status, error, line), is counted, reported (first time always, then at most once a minute
  per reason) and delivery carries on. A 404 "database not found" creates the database first
  when ``create_database`` is set.

:class:`SpooledStore` puts the spool in front of a store: ``write`` is one local commit (the
daemon's tick never waits for the network), reads go to the store, ``close`` drains.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from carbond.errors import CarbondError, StoreError
from carbond.logutil import Throttled
from carbond.store.base import Point, Query, Row
from carbond.store.errors import DatabaseNotFoundError, RetryableWriteError, WriteError
from carbond.store.spool import DEFAULT_MAX_BYTES, Spool

log = logging.getLogger(__name__)


class LineSink(Protocol):
    url: str  # redacted

    def write_lines(self, lines: Sequence[str]) -> None: ...

    def create_database(self) -> None: ...


@dataclass(frozen=True)
class DeliveryOptions:
    batch_points: int = 5000
    create_database: bool = False
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    retry_after_max_s: float = 300.0
    dead_letter_max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class DeliveryCounters:
    """The numbers behind the ``carbond`` self-metrics (cumulative since start, except ``spool_points``)."""

    spool_points: int
    dropped_points: int
    dead_letter_points: int
    write_errors: int
    delivered_points: int


class DeadLetters:
    """Rejected points as JSON lines next to the spool, bounded by ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.points = 0

    def add(self, lines: Sequence[str], exc: WriteError) -> bool:
        """Append the lines; False (nothing written) when the file is at its budget."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        head = {"time": stamp, "reason": exc.reason, "status": exc.status, "error": str(exc)}
        text = "".join(json.dumps({**head, "line": line}, separators=(",", ":")) + "\n" for line in lines)
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(text) > self.max_bytes:
                return False
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc2:
            log.error("cannot write the dead-letter file %s: %s", self.path, exc2)
            return False
        self.points += len(lines)
        return True


class Delivery:
    """The thread that empties the spool into a :class:`LineSink`."""

    def __init__(self, spool: Spool, sink: LineSink, *, dead_letter_path: Path | None = None,
                 options: DeliveryOptions = DeliveryOptions()) -> None:
        self.spool = spool
        self.sink = sink
        self.options = options
        self.dead_letters = DeadLetters(dead_letter_path or dead_letter_path_for(spool.path), options.dead_letter_max_bytes)
        self.write_errors = 0
        self.delivered_points = 0
        self.dropped_points = 0
        self.requests = 0
        self.last_delay_s = 0.0
        self._limit = options.batch_points
        self._ok_since_split = 0
        self._failures = 0
        self._retry_after_s: float | None = None
        self._draining = threading.Event()
        self._halt = threading.Event()
        self._kick = threading.Event()  # cuts a backoff wait short (stop)
        self._thread: threading.Thread | None = None
        self._warn = Throttled(log)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="carbond-delivery", daemon=True)
            self._thread.start()

    def stop(self, flush_timeout_s: float = 10.0) -> bool:
        """Deliver what can be delivered within ``flush_timeout_s``, then stop. True if the spool is empty.

        A store that is failing gets one more immediate attempt, not the whole timeout: what is
        left stays in the spool for the next start.
        """
        self._draining.set()
        self._kick.set()
        self._wake()
        thread = self._thread
        if thread is not None:
            thread.join(flush_timeout_s)
            self._halt.set()
            self._kick.set()
            self._wake()
            thread.join(60.0)  # at most one request in flight, bounded by its timeout
            self._thread = None
        left = len(self.spool)
        if left:
            log.warning("stopping with %d points not yet delivered to %s: they stay in the spool %s and are sent "
                        "at the next start", left, self.sink.url, self.spool.path)
        return left == 0

    def wait_empty(self, timeout_s: float) -> bool:
        """Block until the spool is empty (for tests and for ``flush``); False on timeout."""
        return self.spool.wait("empty", timeout_s)

    def counters(self) -> DeliveryCounters:
        return DeliveryCounters(len(self.spool), self.spool.dropped_points + self.dropped_points,
                                self.dead_letters.points, self.write_errors, self.delivered_points)

    def _wake(self) -> None:
        with self.spool.changed:
            self.spool.changed.notify_all()

    # --- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                batch = self.spool.peek(self._limit)
            except StoreError as exc:
                self._warn.warning("spool", "%s", exc)
                self._halt.wait(1.0)
                continue
            if not batch:
                if self._draining.is_set():
                    return
                with self.spool.changed:
                    self.spool.changed.wait_for(lambda: len(self.spool) > 0 or self._draining.is_set()
                                                or self._halt.is_set(), timeout=5.0)
                continue
            try:
                sent = self._send(batch)
            except Exception as exc:  # e.g. the spool's disk failed on ack: the batch is sent again (idempotent)
                self._warn.log(logging.ERROR, "loop", "delivery from %s: %s (retrying)", self.spool.path, exc)
                self._failures += 1
                sent = False
            if sent:
                self._recovered()
            elif self._draining.is_set():
                return  # stopping: the rest waits in the spool
            else:
                self._kick.wait(self._next_delay())

    def _next_delay(self) -> float:
        o = self.options
        delay = min(o.backoff_max_s, o.backoff_initial_s * 2 ** min(self._failures - 1, 30)) * random.uniform(0.8, 1.0)
        if self._retry_after_s is not None:
            delay = max(delay, min(self._retry_after_s, o.retry_after_max_s))
        self.last_delay_s = delay
        return delay

    def _recovered(self) -> None:
        if self._failures:
            log.warning("delivery to %s resumed after %d failed attempts; %d points left in the spool",
                        self.sink.url, self._failures, len(self.spool))
        self._failures = 0
        self._retry_after_s = None

    def _send(self, rows: Sequence[tuple[int, str]], created: bool = False) -> bool:
        """Deliver ``rows`` (or dead-letter them). False: keep them and back off."""
        self.requests += 1
        try:
            self.sink.write_lines([line for _, line in rows])
        except WriteError as exc:
            return self._failed(rows, exc, created)
        except CarbondError as exc:
            return self._failed(rows, RetryableWriteError(f"{self.sink.url}: {exc}"), created)
        except Exception as exc:  # a bug or an unmapped vendor error: keep the points, back off
            log.exception("unexpected error writing to %s", self.sink.url)
            return self._failed(rows, RetryableWriteError(f"{self.sink.url}: {type(exc).__name__}: {exc}"), created)
        self.spool.ack(rows[0][0], rows[-1][0])
        self.delivered_points += len(rows)
        if self._limit < self.options.batch_points:
            self._ok_since_split += 1
            if self._ok_since_split >= 100:
                self._limit, self._ok_since_split = min(self.options.batch_points, self._limit * 2), 0
        return True

    def _failed(self, rows: Sequence[tuple[int, str]], exc: WriteError, created: bool) -> bool:
        self.write_errors += 1
        if exc.action == "split":
            if len(rows) == 1:
                return self._reject(rows, exc)
            half = len(rows) // 2
            self._limit, self._ok_since_split = max(1, min(self._limit, half)), 0
            self._warn.warning("split", "%s: batch of %d points too large; sending halves (batches of %d from now)",
                               self.sink.url, len(rows), self._limit)
            return self._send(rows[:half]) and self._send(rows[half:])
        if exc.action == "reject":
            if isinstance(exc, DatabaseNotFoundError) and self.options.create_database and not created:
                try:
                    self.sink.create_database()
                except WriteError as exc2:
                    return self._reject(rows, exc2) if exc2.action == "reject" else self._retry(rows, exc2)
                except CarbondError as exc2:
                    return self._retry(rows, RetryableWriteError(str(exc2)))
                log.warning("%s: the database did not exist; created it (create_database is on)", self.sink.url)
                return self._send(rows, created=True)
            return self._reject(rows, exc)
        return self._retry(rows, exc)

    def _retry(self, rows: Sequence[tuple[int, str]], exc: WriteError) -> bool:
        self._failures += 1
        self._retry_after_s = exc.retry_after_s
        self._warn.warning("retry", "cannot deliver to %s (%s): %d points kept in the spool, retrying with backoff: %s",
                           self.sink.url, exc.reason, len(self.spool), exc)
        return False

    def _reject(self, rows: Sequence[tuple[int, str]], exc: WriteError) -> bool:
        lines = [line for _, line in rows]
        if self.dead_letters.add(lines, exc):
            self._warn.log(logging.ERROR, f"reject:{exc.reason}", "%s rejected %d points (%s): %s — written to the "
                           "dead-letter file %s (%d points there since start); delivery goes on",
                           self.sink.url, len(rows), exc.reason, exc, self.dead_letters.path, self.dead_letters.points)
        else:
            self.dropped_points += len(rows)
            self._warn.log(logging.ERROR, "dead-letter-full", "%s rejected %d points (%s): %s — the dead-letter file %s "
                           "is full (%d bytes): DROPPED them", self.sink.url, len(rows), exc.reason, exc,
                           self.dead_letters.path, self.dead_letters.max_bytes)
        self.spool.ack(rows[0][0], rows[-1][0])
        return True


def spool_path_for(url: str, state_dir: Path) -> Path:
    """The default spool of a store: ``STATE_DIR/spool/<hash of the redacted URL>.db`` (one per store)."""
    import hashlib

    from carbond.store.urls import parse_store_url

    key = hashlib.sha256(parse_store_url(url).redacted().encode()).hexdigest()[:16]
    return state_dir / "spool" / f"{key}.db"


def dead_letter_path_for(spool_path: Path) -> Path:
    """``/var/lib/carbond/spool.db`` → ``/var/lib/carbond/spool.dead-letter.jsonl``."""
    return spool_path.with_name(spool_path.stem + ".dead-letter.jsonl")


@dataclass(frozen=True)
class SpoolOptions:
    """What :func:`carbond.store.open_store` needs to put a spool in front of a remote store."""

    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    create_database: bool = False
    flush_timeout_s: float = 10.0
    sync: str = "NORMAL"
    delivery: DeliveryOptions = DeliveryOptions()


class SpooledStore:
    """A store with the durable spool in front: ``write`` spools, a thread delivers, reads pass through."""

    def __init__(self, store: Any, spool: Spool, delivery: Delivery, *, flush_timeout_s: float = 10.0) -> None:
        self.store = store
        self.spool = spool
        self.delivery = delivery
        self.url = store.url
        self.flush_timeout_s = flush_timeout_s

    @classmethod
    def open(cls, store: Any, options: SpoolOptions, *, start: bool = True) -> SpooledStore:
        spool = Spool(options.path, max_bytes=options.max_bytes, sync=options.sync)
        delivery_options = options.delivery
        if options.create_database != delivery_options.create_database:
            from dataclasses import replace

            delivery_options = replace(delivery_options, create_database=options.create_database)
        spooled = cls(store, spool, Delivery(spool, store, options=delivery_options), flush_timeout_s=options.flush_timeout_s)
        if start:
            spooled.delivery.start()
        return spooled

    def write(self, points: Iterable[Point]) -> None:
        self.spool.append(points)

    def query(self, q: Query) -> list[Row]:
        return self.store.query(q)

    def scan(self, measurement: str | None, since_ns: int | None = None, until_ns: int | None = None) -> Iterator[Point]:
        return self.store.scan(measurement, since_ns, until_ns)

    def measurements(self) -> list[str]:
        return self.store.measurements()

    def counters(self) -> DeliveryCounters:
        return self.delivery.counters()

    def wait_empty(self, timeout_s: float) -> bool:
        return self.delivery.wait_empty(timeout_s)

    def close(self) -> None:
        try:
            self.delivery.stop(self.flush_timeout_s)
        finally:
            self.spool.close()
            self.store.close()
