from __future__ import annotations

from pathlib import Path

from carbond.store.base import make_point
from carbond.store.journal import Journal, encode_record, journal_dir_for, read_segment


def _points(n: int, t0: int = 0):
    return [make_point("host", {"host": "h", "q": 'a"b'}, {"energy_j": float(i), "co2_g": i / 3}, t0 + i) for i in range(n)]


def test_append_rotate_and_read_back_in_order(tmp_path: Path):
    j = Journal(tmp_path / "j")
    j.append(_points(3))
    j.append(_points(2, t0=100))
    j.append([])  # nothing to write: no record
    closed = j.rotate()
    assert len(closed) == 1
    back = list(read_segment(closed[0]))
    assert [p.time_ns for p in back] == [0, 1, 2, 100, 101]
    assert back[1].tags == {"host": "h", "q": 'a"b'} and back[1].fields == {"energy_j": 1.0, "co2_g": 1 / 3}
    j.append(_points(1, t0=200))
    closed = j.rotate()
    assert [p.name for p in closed] == ["000000000001.seg", "000000000002.seg"]  # both still there until deleted
    j.close()


def test_reopen_continues_numbering_and_keeps_old_segments(tmp_path: Path):
    j = Journal(tmp_path / "j")
    j.append(_points(2))
    j.close()  # a non-empty segment survives close
    j2 = Journal(tmp_path / "j")
    assert [p.name for p in j2.segments()] == ["000000000001.seg", "000000000002.seg"]
    j2.close()  # the empty one it opened is removed
    assert [p.name for p in j2.segments()] == ["000000000001.seg"]


def test_torn_tail_record_is_ignored(tmp_path: Path, caplog):
    seg = tmp_path / "000000000001.seg"
    good, second = encode_record(_points(2)), encode_record(_points(2, t0=10))
    seg.write_bytes(good + second[:-3])  # crash in the middle of the second write
    assert [p.time_ns for p in read_segment(seg)] == [0, 1]
    assert "torn record" in caplog.text
    seg.write_bytes(good + second[:8] + b"X" + second[9:])  # corrupted payload: CRC mismatch
    assert [p.time_ns for p in read_segment(seg)] == [0, 1]


def test_journal_dir_is_per_store():
    assert journal_dir_for("sqlite:///var/lib/carbond/c.db") == Path("/var/lib/carbond/c.db.journal")
    a = journal_dir_for("influxdb+v1://u:p@h:8086/db", {"STATE_DIRECTORY": "/var/lib/carbond"})
    b = journal_dir_for("influxdb+v1://u:p@h:8086/other", {"STATE_DIRECTORY": "/var/lib/carbond"})
    assert a.parent == Path("/var/lib/carbond/journal") and a != b


def test_rotation_lists_what_is_left_without_reading_the_directory(tmp_path: Path):
    j = Journal(tmp_path / "j")
    j.append(_points(1))
    j.close()
    j = Journal(tmp_path / "j")  # segment 1 was left by an earlier daemon
    j.append(_points(1, t0=10))
    first, second = j.rotate()
    assert (first.name, second.name) == ("000000000001.seg", "000000000002.seg")
    j.discard(first)
    assert not first.exists()
    j.append(_points(1, t0=20))
    assert [p.name for p in j.rotate()] == ["000000000002.seg", "000000000003.seg"]
    second.unlink()  # removed behind the journal's back: no longer offered
    assert [p.name for p in j.rotate()] == ["000000000003.seg", "000000000004.seg"]
    j.close()
