"""The durable spool: every point is committed to a local SQLite file before delivery.

One row per point (its line protocol), ids strictly increasing (``AUTOINCREMENT``: an id is
never reused, so acknowledging an id range can never delete a newer point). The writer
appends with one commit; the delivery peeks the oldest rows in order and deletes them only
once the store has acknowledged them. After a crash or ``kill -9`` the file is reopened
and delivery resumes at the oldest unacknowledged point (WAL mode; ``synchronous=NORMAL``
survives a process crash, ``sync="FULL"`` also a power loss).

A disk budget bounds the spool: past it the oldest points are dropped — counted in
``dropped_points`` and logged at ERROR (first time always, then at most once a minute
with counts). The budget counts each row's line plus a fixed row overhead, which tracks
the file's size (freed pages are reused, so the file stays near its high-water mark).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from carbond.errors import StoreError, UsageError
from carbond.logutil import Throttled
from carbond.store.base import Point
from carbond.store.lineprotocol import _KEY, _MEASUREMENT

log = logging.getLogger(__name__)

ROW_OVERHEAD_BYTES = 24  # rowid, record header and B-tree cell pointer, roughly
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_SCHEMA = "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL)"


class LineEncoder:
    """:func:`carbond.store.lineprotocol.encode`, the same bytes, with each series' prefix cached (2-3x faster)."""

    MAX_SERIES = 10_000

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._keys: dict[str, str] = {}

    def __call__(self, point: Point) -> str | None:
        key = (point.measurement, tuple(point.tags.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) >= self.MAX_SERIES:
                self._prefixes.clear()
            tags = "".join(f",{k.translate(_KEY)}={v.translate(_KEY)}" for k, v in sorted(point.tags.items()) if v != "")
            prefix = self._prefixes[key] = f"{point.measurement.translate(_MEASUREMENT)}{tags} "
        parts = []
        for k, v in sorted(point.fields.items()):
            if math.isfinite(v):
                name = self._keys.get(k)
                if name is None:
                    if len(self._keys) >= self.MAX_SERIES:
                        self._keys.clear()
                    name = self._keys[k] = k.translate(_KEY) + "="
                text = repr(float(v))
                parts.append(name + (text[:-2] if text.endswith(".0") else text))
        return f"{prefix}{','.join(parts)} {point.time_ns}" if parts else None


class Spool:
    """A FIFO of line-protocol lines on disk. Thread-safe: one writer thread, one delivery thread."""

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, sync: str = "NORMAL") -> None:
        if max_bytes <= 0:
            raise UsageError(f"spool {path}: the disk budget must be positive (got {max_bytes} bytes)")
        if sync not in ("NORMAL", "FULL"):
            raise UsageError(f"spool {path}: sync must be NORMAL or FULL (got {sync!r})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.dropped_points = 0
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)  # notified on append and on ack
        self._warn = Throttled(log)
        self._encode = LineEncoder()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"spool {self.path}: cannot create directory {self.path.parent}: {exc.strerror}") from exc
        if not os.access(self.path.parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise UsageError(f"spool {self.path}: not writable by this user")
        self._db = self._open(sync)
        self.points, used = self._db.execute("SELECT count(*), total(length(line)) FROM spool").fetchone()
        self.bytes = int(used) + self.points * ROW_OVERHEAD_BYTES
        if self.points:
            log.info("spool %s: resuming with %d points (%.1f MB) to deliver", self.path, self.points, self.bytes / 1e6)

    def _open(self, sync: str) -> sqlite3.Connection:
        for attempt in (1, 2):
            try:
                db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={sync}")
                db.execute(_SCHEMA)
                db.execute("SELECT count(*) FROM spool").fetchone()
                return db
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not self.path.exists():
                    raise StoreError(f"spool {self.path}: cannot open: {exc}") from exc
                aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                log.error("spool %s is unreadable (%s); moved aside to %s and starting a new one", self.path, exc, aside)
                self.path.rename(aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def __len__(self) -> int:
        return self.points

    # --- the writer side --------------------------------------------------------------------
    def append(self, points: Iterable[Point]) -> int:
        """Commit points (one transaction). Returns how many were spooled."""
        return self.append_lines([line for line in map(self._encode, points) if line is not None])

    def append_lines(self, lines: Sequence[str]) -> int:
        if not lines:
            return 0
        added = sum(map(len, lines)) + len(lines) * ROW_OVERHEAD_BYTES
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT INTO spool (line) VALUES (?)", [(line,) for line in lines])
                    dropped = self._enforce_budget(self.bytes + added)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"spool {self.path}: append failed: {exc}") from exc
            self.points += len(lines) - dropped[0]
            self.bytes += added - dropped[1]
            self.changed.notify_all()
        if dropped[0]:
            self.dropped_points += dropped[0]
            self._warn.log(logging.ERROR, "budget", "spool %s over its %d-byte budget: DROPPED the %d oldest points "
                           "(%d dropped since start); the store has not accepted points for a while",
                           self.path, self.max_bytes, dropped[0], self.dropped_points)
        return len(lines)

    def _enforce_budget(self, total_bytes: int) -> tuple[int, int]:
        """Delete the oldest rows until the spool is back to 90% of its budget: (points, bytes) freed."""
        if total_bytes <= self.max_bytes:
            return 0, 0
        excess = total_bytes - int(self.max_bytes * 0.9)
        freed_points = freed_bytes = 0
        cut: int | None = None
        cursor = self._db.execute("SELECT id, length(line) FROM spool ORDER BY id")
        for row_id, size in cursor:
            cut = row_id
            freed_points += 1
            freed_bytes += size + ROW_OVERHEAD_BYTES
            if freed_bytes >= excess:
                break
        cursor.close()
        if cut is not None:
            self._db.execute("DELETE FROM spool WHERE id <= ?", (cut,))
        return freed_points, freed_bytes

    # --- the delivery side ------------------------------------------------------------------
    def peek(self, limit: int) -> list[tuple[int, str]]:
        """The oldest ``limit`` rows, ``(id, line)``, in order."""
        with self._lock:
            try:
                return self._db.execute("SELECT id, line FROM spool ORDER BY id LIMIT ?", (limit,)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"spool {self.path}: read failed: {exc}") from exc

    def ack(self, first_id: int, last_id: int) -> None:
        """Delete rows ``first_id..last_id`` (delivered, or dead-lettered)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                n, used = self._db.execute("SELECT count(*), total(length(line)) FROM spool WHERE id BETWEEN ? AND ?",
                                           (first_id, last_id)).fetchone()
                self._db.execute("DELETE FROM spool WHERE id BETWEEN ? AND ?", (first_id, last_id))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"spool {self.path}: delete failed: {exc}") from exc
            self.points -= n
            self.bytes -= int(used) + n * ROW_OVERHEAD_BYTES
            self.changed.notify_all()

    def wait(self, predicate: str, timeout_s: float) -> bool:
        """Wait until the spool is ``"empty"`` or ``"nonempty"``; False on timeout."""
        want_empty = predicate == "empty"
        with self.changed:
            return self.changed.wait_for(lambda: (self.points == 0) == want_empty, timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.debug("closing spool %s: %s", self.path, exc)
