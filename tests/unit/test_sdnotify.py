"""sd_notify over real AF_UNIX datagram sockets: paths, the abstract namespace, watchdog pacing."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbond.sdnotify import Notifier, socket_address, watchdog_usec


class Listener:
    """A service manager's end: a bound datagram socket that collects messages."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(address))
        self.sock.settimeout(5)

    def recv(self) -> dict[str, str]:
        data = self.sock.recv(65536).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def pending(self) -> list[bytes]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(65536))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5)
        return out


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.sock.close()


def test_no_notify_socket_means_every_call_is_a_no_op():
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x") and not n.status("x") and not n.watchdog() and not n.stopping()
    n.close()


def test_ready_status_reloading_stopping_arrive_as_key_value_lines(listener):
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    assert n.ready("measuring 3 devices")
    assert listener.recv() == {"READY": "1", "STATUS": "measuring 3 devices"}
    assert n.status("12 W\nsecond line")
    assert listener.recv() == {"STATUS": "12 W second line"}  # a newline would start a new assignment
    assert n.reloading()
    msg = listener.recv()
    assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    assert n.stopping("flushing")
    assert listener.recv() == {"STOPPING": "1", "STATUS": "flushing"}
    n.close()


def test_abstract_namespace_socket():
    address = f"@carbond-test-{uuid.uuid4().hex}"
    lst = Listener(address)
    try:
        n = Notifier({"NOTIFY_SOCKET": address})
        assert n.ready()
        assert lst.recv() == {"READY": "1"}
        n.close()
    finally:
        lst.sock.close()


def test_watchdog_pings_at_most_every_half_period(listener):
    now = [100.0]
    n = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "4000000"}, clock=lambda: now[0])
    assert n.watchdog_s == 4.0
    sent_at = []
    for _ in range(41):  # 10 s of ticks every 0.25 s
        if n.watchdog():
            sent_at.append(now[0] - 100.0)
        now[0] += 0.25
    assert sent_at == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # never closer than half the period
    assert listener.pending() == [b"WATCHDOG=1"] * 6
    n.close()


def test_watchdog_for_another_pid_or_without_usec_is_off(listener):
    assert watchdog_usec({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, pid=2) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}, pid=os.getpid()) == 5_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "junk"}, pid=1) == 0
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    assert not n.watchdog() and listener.pending() == []
    n.close()


def test_extend_watchdog_tells_the_manager(listener):
    n = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"})
    assert n.extend_watchdog(90.0)
    assert listener.recv() == {"WATCHDOG_USEC": "90000000"} and n.watchdog_s == 90.0
    n.close()


def test_a_vanished_manager_never_raises(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert not n.ready() and not n.status("x")
    assert sum("sd_notify" in r.message for r in caplog.records) == 1  # warned once
    n.close()


def test_a_full_queue_does_not_block(listener):
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    results = [n.status("x" * 1000) for _ in range(5000)]  # nobody reads: the queue fills up
    assert results[0] and not all(results)
    n.close()
