"""The daemon's write-ahead journal: every tick's points reach the disk before the tick ends.

A tick appends one record with a single ``write`` to the current segment file — far
cheaper than a database transaction — and a flush job moves whole segments into the
store in one batch, deleting a segment only after the store has taken all of it. After
a crash or ``kill -9`` the segments still on disk are replayed at start; stores merge a
point with the same series and timestamp, so a replay never duplicates.

Record: ``length (4 bytes LE) | crc32 (4 bytes LE) | payload``, the payload a
``marshal`` dump of ``[(measurement, tags, fields, time_ns), ...]`` with tags and fields
as plain dicts (marshal reads back data only; it executes nothing). A torn record at the end of
a segment (a crash mid-write) is detected by its length or CRC and ignored.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from carbond.errors import UsageError
from carbond.store.base import Point
from carbond.store.urls import parse_store_url

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SUFFIX = ".seg"


def encode_record(points: list[Point]) -> bytes:
    payload = marshal.dumps([(p.measurement, p.tags, p.fields, p.time_ns) for p in points])
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_segment(path: Path) -> Iterator[Point]:
    """The points of one segment, in order, up to the first torn or corrupt record."""
    data = path.read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size: offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("journal %s: torn record at byte %d (a crash mid-write); the rest is ignored", path, offset)
            return
        try:
            records = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            log.warning("journal %s: unreadable record at byte %d; the rest is ignored", path, offset)
            return
        for m, tags, fields, t in records:
            yield Point(m, tags, fields, t)
        offset += _HEADER.size + length


def journal_dir_for(url: str, env: dict[str, str] | None = None) -> Path:
    """Where the daemon's write-ahead journal for a store lives.

    Next to a SQLite file (``c.db`` → ``c.db.journal/``), so two daemons with two
    stores never share one; for other stores, under the state directory, keyed by URL.
    """
    parsed = parse_store_url(url)
    if parsed.kind == "sqlite":
        path = Path(parsed.path)
        return path.with_name(path.name + ".journal")
    from carbond.config import default_state_dir

    key = hashlib.sha256(parsed.redacted().encode()).hexdigest()[:16]
    return default_state_dir(env) / "journal" / key


class Journal:
    """Segments ``NNNNNNNNNNNN.seg`` in ``directory``; one is open for appends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"journal directory {directory}: {exc.strerror}") from exc
        self._lock = threading.Lock()
        existing = self.segments()
        # closed segments not yet discarded, oldest first: known here, so a rotation lists no directory
        self._closed: list[Path] = existing
        self._seq = int(existing[-1].stem) + 1 if existing else 1
        self._fd = self._open(self._seq)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{_SUFFIX}"

    def _open(self, seq: int) -> int:
        try:
            return os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise UsageError(f"journal {self._path(seq)}: {exc.strerror}") from exc

    def segments(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def append(self, points: list[Point]) -> None:
        """One record, one ``write`` (raises OSError if the disk refuses it)."""
        if not points:
            return
        record = encode_record(points)
        with self._lock:
            os.write(self._fd, record)

    def rotate(self) -> list[Path]:
        """Close the open segment and start a new one; returns every closed segment not yet discarded, oldest first."""
        with self._lock:
            os.close(self._fd)
            self._closed.append(self._path(self._seq))
            self._seq += 1
            self._fd = self._open(self._seq)
            self._closed = [p for p in self._closed if p.exists()]  # one removed behind our back is gone
            return list(self._closed)

    def discard(self, segment: Path) -> None:
        """Delete a closed segment whose points the store has taken."""
        segment.unlink(missing_ok=True)
        with self._lock:
            if segment in self._closed:
                self._closed.remove(segment)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            path = self._path(self._seq)
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
