"""sd_notify without a dependency: datagrams to ``$NOTIFY_SOCKET`` (systemd's ``Type=notify``).

The protocol is one ``AF_UNIX`` datagram of newline-separated ``KEY=VALUE`` lines per
message (``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``). A socket
path starting with ``@`` is in the abstract namespace (the ``@`` becomes a NUL byte).
Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemon behaves the same outside
systemd. Sends never block and never raise: a full or vanished socket is logged once.

Watchdog: with ``WATCHDOG_USEC`` set (``WatchdogSec=`` in the unit) and ``WATCHDOG_PID``
absent or equal to this process, :meth:`Notifier.watchdog` sends ``WATCHDOG=1`` at most
once per half of that period; the daemon calls it from its tick loop, so a stuck tick loop
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def socket_address(path: str) -> str | bytes:
    """The address to ``sendto``: abstract-namespace names (``@name``) start with a NUL byte."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def watchdog_usec(env: Mapping[str, str], pid: int) -> int:
    """The watchdog period systemd asked this process for, in µs (0: none)."""
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return 0  # meant for another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    return max(usec, 0)


class Notifier:
    """Talks to the service manager; every method is a cheap no-op without ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.monotonic,
                 pid: int | None = None) -> None:
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        self.path = env.get("NOTIFY_SOCKET", "")
        self.watchdog_s = watchdog_usec(env, pid) / 1e6 if self.path else 0.0
        self._clock = clock
        self._last_ping = float("-inf")
        self._sock: socket.socket | None = None
        self._warned = False
        if self.path:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one message of ``KEY=VALUE`` lines; True when the manager got it."""
        if self._sock is None:
            return False
        data = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            self._sock.sendto(data, socket_address(self.path))
            return True
        except OSError as exc:  # full queue (EAGAIN), manager gone, bad path: never stop the daemon for it
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %s failed: %s (further failures are not logged)", self.path, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match this reload to its request
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def extend_watchdog(self, seconds: float) -> bool:
        """Ask for a longer watchdog period (``WATCHDOG_USEC=``), e.g. when ticks are far apart."""
        if self._sock is None or self.watchdog_s <= 0:
            return False
        self.watchdog_s = seconds
        return self.send(f"WATCHDOG_USEC={int(seconds * 1e6)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``, at most once per half of the watchdog period; False when nothing was sent."""
        if self.watchdog_s <= 0:
            return False
        now = self._clock()
        if now - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
