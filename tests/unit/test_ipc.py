"""The socket protocol against a real Unix socket server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbond import ipc
from carbond.errors import CarbondError, DaemonUnavailableError
from carbond.server import SocketServer


@pytest.fixture
def server(tmp_path: Path):
    calls = []
    ops = {
        "echo": ipc.Op({"text": str, "n": int}, lambda a: (calls.append(a), {"text": a.get("text"), "n": a.get("n")})[1],
                       required=("text",)),
        "boom": ipc.Op({}, lambda a: 1 / 0),
    }
    path = str(tmp_path / "s.sock")
    srv = SocketServer(path, ops)
    yield path, calls
    srv.close()


def _raw(path: str, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        with s.makefile("rb") as fh:
            line = ipc.read_line(fh, limit=10**7)
    assert line is not None
    return json.loads(line)


def test_request_and_peer_credentials(server):
    path, calls = server
    assert ipc.request(path, "echo", text="hi", n=3) == {"text": "hi", "n": 3}
    import os

    assert calls[0]["_peer"][1] == os.getuid()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json\n", "not valid JSON"),
        (b"[1,2]\n", "must be a JSON object"),
        (b'{"v": 2, "op": "echo"}\n', "unsupported protocol version"),
        (b'{"v": 1, "op": "nope"}\n', "unknown op 'nope'"),
        (b'{"v": 1, "op": "echo", "text": "x", "pid": 1}\n', "unknown field 'pid'"),
        (b'{"v": 1, "op": "echo", "text": 5}\n', "wrong type"),
        (b'{"v": 1, "op": "echo", "text": "x", "n": true}\n', "wrong type"),
        (b'{"v": 1, "op": "echo"}\n', "missing field 'text'"),
    ],
)
def test_bad_messages_get_error_replies(server, payload, error):
    path, _ = server
    reply = _raw(path, payload)
    assert reply["ok"] is False and error in reply["error"]
    assert ipc.request(path, "echo", text="still up") == {"text": "still up", "n": None}


def test_oversize_message_is_refused(server):
    path, _ = server
    reply = _raw(path, b'{"v":1,"op":"echo","text":"' + b"x" * (ipc.MAX_MESSAGE_BYTES + 10) + b'"}\n')
    assert reply["ok"] is False and "limit" in reply["error"]
    assert ipc.request(path, "echo", text="ok")["text"] == "ok"


def test_handler_bug_is_an_error_reply_not_a_crash(server):
    path, _ = server
    with pytest.raises(ipc.ProtocolError, match="internal error: ZeroDivisionError"):
        ipc.request(path, "boom")
    assert ipc.request(path, "echo", text="alive")["text"] == "alive"


def test_no_daemon(tmp_path: Path):
    with pytest.raises(DaemonUnavailableError, match="no carbond daemon"):
        ipc.request(str(tmp_path / "none.sock"), "status")


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path: Path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    srv = SocketServer(path, {"ping": ipc.Op({}, lambda a: "pong")})
    try:
        assert ipc.request(path, "ping") == "pong"
        with pytest.raises(CarbondError, match="already listening"):
            SocketServer(path, {})
        assert oct(Path(path).stat().st_mode & 0o777) == "0o660"
    finally:
        srv.close()


@pytest.fixture(scope="module")
def ping_server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fz") / "s.sock")
    srv = SocketServer(path, {"ping": ipc.Op({}, lambda a: "pong"), "echo": ipc.Op({"text": str}, lambda a: a["text"])})
    yield path
    srv.close()


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                 st.dictionaries(st.sampled_from(["v", "op", "text", "x"]),
                                 st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans()),
                                 max_size=4).map(lambda d: json.dumps(d).encode())))
def test_fuzzed_messages_always_get_a_reply_and_never_crash_the_server(ping_server, data):
    line = data.replace(b"\n", b" ")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(ping_server)
        s.sendall(line + b"\n" + b'{"v":1,"op":"ping"}\n')
        with s.makefile("rb") as fh:
            first = ipc.read_line(fh)
        assert first is not None
        reply = json.loads(first)
        assert reply["v"] == 1 and isinstance(reply["ok"], bool)
        if not line.strip():  # a blank line is skipped: the reply is the ping's
            assert reply == {"v": 1, "ok": True, "result": "pong"}
    assert ipc.request(ping_server, "ping") == "pong"
