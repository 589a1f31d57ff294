"""StateFile: two slots overwritten in turn; a torn or corrupt save falls back to the previous one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carbond.statefile import StateFile, StateFileError


def test_saves_alternate_between_the_slots_and_the_newest_loads(tmp_path: Path):
    sf = StateFile(tmp_path / "runs.json")
    assert sf.load() is None  # nothing saved yet
    for n in range(1, 6):
        sf.save({"n": n})
        newest = sf.slots[(n - 1) % 2]
        assert json.loads(newest.read_text())["state"] == {"n": n}
        assert StateFile(tmp_path / "runs.json").load() == {"n": n}
    assert {json.loads(p.read_text())["seq"] for p in sf.slots} == {4, 5}


@pytest.mark.parametrize("damage", ["truncate", "append", "flip", "empty", "zeros"])
def test_a_damaged_newest_slot_leaves_the_previous_save(tmp_path: Path, damage: str):
    sf = StateFile(tmp_path / "runs.json")
    sf.save({"runs": ["older"]})
    sf.save({"runs": ["newer", "x" * 50]})
    newest = sf.slots[1]
    data = newest.read_bytes()
    damaged = {
        "truncate": data[: len(data) // 2],
        "append": data + b"garbage",
        "flip": data.replace(b"newer", b"nEwer"),  # still JSON: only the checksum notices
        "empty": b"",
        "zeros": b"\0" * len(data),  # what a power loss can leave of unwritten pages
    }[damage]
    newest.write_bytes(damaged)
    assert StateFile(tmp_path / "runs.json").load() == {"runs": ["older"]}


def test_a_shorter_state_leaves_nothing_of_the_longer_one_behind(tmp_path: Path):
    sf = StateFile(tmp_path / "s.json")
    sf.save({"v": "x" * 500})
    sf.save({"v": "y" * 500})
    sf.save({"v": "short"})  # back into the first slot, which held 500 bytes more
    assert json.loads(sf.slots[0].read_text())["state"] == {"v": "short"}
    assert StateFile(tmp_path / "s.json").load() == {"v": "short"}


def test_a_new_instance_continues_the_sequence_without_loading_first(tmp_path: Path):
    first = StateFile(tmp_path / "s.json")
    for n in range(3):
        first.save({"n": n})  # seq 3 is in slot 0
    second = StateFile(tmp_path / "s.json")
    second.save({"n": "after restart"})  # must not overwrite seq 3 with seq 1
    assert StateFile(tmp_path / "s.json").load() == {"n": "after restart"}
    assert json.loads(second.slots[1].read_text())["seq"] == 4


def test_a_plain_document_from_an_older_carbond_loads_and_is_superseded(tmp_path: Path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"version": 1, "runs": [{"run_id": "r-1"}]}))
    sf = StateFile(path)
    assert sf.load() == {"version": 1, "runs": [{"run_id": "r-1"}]}
    sf.save({"version": 1, "runs": []})
    assert StateFile(path).load() == {"version": 1, "runs": []}
    assert json.loads(path.read_text()) == {"version": 1, "runs": [{"run_id": "r-1"}]}  # not overwritten first:
    sf.slots[1].write_bytes(b"")  # a first save torn after an upgrade still leaves the old registry to load
    assert StateFile(path).load() == {"version": 1, "runs": [{"run_id": "r-1"}]}


def test_no_readable_slot_is_an_error_that_names_each_file(tmp_path: Path):
    sf = StateFile(tmp_path / "runs.json")
    sf.slots[0].write_text("{not json")
    sf.slots[1].write_text("[1, 2]")
    with pytest.raises(StateFileError) as err:
        sf.load()
    assert "runs.json: not JSON" in str(err.value) and "runs.json.1: not a JSON object" in str(err.value)


def test_a_refused_save_raises_and_keeps_the_older_state(tmp_path: Path):
    sf = StateFile(tmp_path / "runs.json")
    sf.save({"n": 1})
    sf.save({"n": 2})
    sf.slots[0].unlink()
    sf.slots[0].mkdir()  # the slot the next save goes to cannot be written (whoever runs the test, root too)
    with pytest.raises(OSError):
        sf.save({"n": 3})
    assert StateFile(tmp_path / "runs.json").load() == {"n": 2}
