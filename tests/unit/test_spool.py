"""The durable spool on its own: order, acknowledgement, restart, disk budget."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbond.errors import UsageError
from carbond.store.base import Point, make_point
from carbond.store.lineprotocol import encode
from carbond.store.spool import ROW_OVERHEAD_BYTES, LineEncoder, Spool

S = 1_000_000_000


def _lines(n: int, start: int = 0) -> list[str]:
    return [f"m,host=h v={i} {i * S}" for i in range(start, start + n)]


@pytest.fixture
def spool(tmp_path: Path):
    s = Spool(tmp_path / "spool.db")
    yield s
    s.close()


def test_fifo_peek_and_ack(spool):
    spool.append_lines(_lines(10))
    assert len(spool) == 10
    batch = spool.peek(4)
    assert [line for _, line in batch] == _lines(4)
    spool.ack(batch[0][0], batch[-1][0])
    assert len(spool) == 6
    assert [line for _, line in spool.peek(100)] == _lines(6, start=4)
    assert spool.bytes == sum(len(x) + ROW_OVERHEAD_BYTES for x in _lines(6, start=4))


def test_points_are_encoded_as_float_line_protocol(spool):
    spool.append([make_point("device", {"host": "a b", "device": "gpu,0"}, {"energy_j": 12, "power_w": 1.5}, 7)])
    ((_, line),) = spool.peek(1)
    assert line == r"device,device=gpu\,0,host=a\ b energy_j=12,power_w=1.5 7"


def test_ids_are_never_reused_so_a_stale_ack_cannot_delete_new_points(spool):
    spool.append_lines(_lines(3))
    old = spool.peek(3)
    spool.ack(old[0][0], old[-1][0])
    spool.append_lines(_lines(3, start=3))
    spool.ack(old[0][0], old[-1][0])  # a late duplicate acknowledgement of the old range
    assert [line for _, line in spool.peek(10)] == _lines(3, start=3)


def test_survives_kill_9_and_resumes_in_order(tmp_path: Path):
    path = tmp_path / "spool.db"
    code = textwrap.dedent(f"""
        import os, signal
        from carbond.store.spool import Spool
        s = Spool({str(path)!r})
        for i in range(50):
            s.append_lines([f"m,host=h v={{i}} {{i}}"])
        batch = s.peek(10)
        s.ack(batch[0][0], batch[-1][0])   # the first 10 were delivered
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    s = Spool(path)
    try:
        assert len(s) == 40
        assert [line for _, line in s.peek(100)] == [f"m,host=h v={i} {i}" for i in range(10, 50)]
    finally:
        s.close()


def test_disk_budget_drops_the_oldest_counted_and_logged_loudly(tmp_path: Path, caplog):
    line_bytes = len(_lines(1)[0]) + ROW_OVERHEAD_BYTES
    s = Spool(tmp_path / "spool.db", max_bytes=100 * line_bytes)
    caplog.set_level(logging.ERROR, "carbond.store.spool")
    for i in range(0, 150, 10):
        s.append_lines(_lines(10, start=i))
    assert s.bytes <= s.max_bytes
    assert s.dropped_points > 0 and len(s) + s.dropped_points == 150
    kept = [line for _, line in s.peek(1000)]
    assert kept == _lines(150)[s.dropped_points:]  # the newest survive, still in order
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "DROPPED" in errors[0].getMessage() and "budget" in errors[0].getMessage()
    assert len(errors) == 1  # loud, but not once per tick
    s.close()
    reopened = Spool(tmp_path / "spool.db", max_bytes=100 * line_bytes)
    assert len(reopened) == len(kept) and reopened.bytes == s.bytes
    reopened.close()


def test_bad_budget_and_unwritable_directory(tmp_path: Path):
    with pytest.raises(UsageError, match="budget"):
        Spool(tmp_path / "s.db", max_bytes=0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(UsageError, match="not writable"):
            Spool(locked / "s.db")
    finally:
        locked.chmod(0o700)


def test_a_corrupt_spool_is_moved_aside(tmp_path: Path, caplog):
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    s = Spool(path)
    s.append_lines(_lines(1))
    assert len(s) == 1
    assert list(tmp_path.glob("spool.db.corrupt-*"))
    assert "moved aside" in caplog.text
    s.close()


def test_wait_for_empty(spool):
    assert spool.wait("empty", 0.01)
    spool.append_lines(_lines(2))
    assert not spool.wait("empty", 0.01)
    rows = spool.peek(2)
    spool.ack(rows[0][0], rows[-1][0])
    assert spool.wait("empty", 0.01)


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(
    Point,
    _text,
    st.dictionaries(_text, _text, max_size=4),
    st.dictionaries(_text, st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.integers(min_value=0, max_value=2**62),
), max_size=5))
def test_the_cached_encoder_writes_exactly_what_lineprotocol_writes(points):
    encoder = LineEncoder()
    for _ in range(2):  # cold, then from the cache
        assert [encoder(p) for p in points] == [encode(p) for p in points]
