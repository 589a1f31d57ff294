"""A service manager's end of sd_notify: a real AF_UNIX datagram socket that records every message."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    """Bound at ``path``; a thread collects each datagram as a dict of its ``KEY=VALUE`` lines."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.messages: list[dict[str, str]] = []
        self.received_at: list[float] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._closed = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(msg)
                self.received_at.append(time.monotonic())

    def snapshot(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.messages)

    def with_key(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        return [m for m in self.snapshot() if key in m and (value is None or m[key] == value)]

    def keys_in_order(self, *keys: str) -> list[str]:
        """The sequence of the given keys as they arrived (e.g. READY, RELOADING, STOPPING)."""
        return [k for m in self.snapshot() for k in keys if k in m]

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self._thread.join(timeout=5)
