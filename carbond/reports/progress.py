"""A progress line on stderr for long report queries — only when stderr is a terminal.

``Progress`` shows nothing for the first ``delay_s`` (fast queries never flicker), then
redraws one line about ten times a second from a small thread: a bar when the total is
known (``update(done, total)``), else a spinner with the elapsed time. ``close()`` erases
the line. Stdlib only.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_SPIN = "|/-\\"


class Progress:
    def __init__(self, label: str = "", *, stream: TextIO | None = None, enabled: bool | None = None,
                 delay_s: float = 0.5, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.label = label
        self.delay_s = delay_s
        self.width = width
        self._done = 0
        self._total = 0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = False
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(target=self._run, name="carbond-progress", daemon=True)
            self._thread.start()

    def stage(self, label: str) -> None:
        """A new step of the work (resets the bar)."""
        with self._lock:
            self.label, self._done, self._total = label, 0, 0

    def update(self, done: int, total: int) -> None:
        with self._lock:
            self._done, self._total = done, total

    def line(self) -> str:
        with self._lock:
            elapsed = time.monotonic() - self._t0
            if self._total > 0:
                frac = min(max(self._done / self._total, 0.0), 1.0)
                full = int(frac * self.width)
                bar = "#" * full + "-" * (self.width - full)
                return f"{self.label} [{bar}] {frac * 100:3.0f}% {elapsed:5.1f}s"
            return f"{self.label} {_SPIN[int(elapsed * 10) % len(_SPIN)]} {elapsed:5.1f}s"

    def draw(self) -> None:
        if not self.enabled:
            return
        self.stream.write("\r\033[K" + self.line())
        self.stream.flush()
        self._drawn = True

    def _run(self) -> None:
        if self._stop.wait(self.delay_s):
            return
        while not self._stop.is_set():
            try:
                self.draw()
            except (OSError, ValueError):  # the terminal went away: stop drawing, never fail the report
                return
            self._stop.wait(0.1)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        if self._drawn:
            try:
                self.stream.write("\r\033[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoProgress(Progress):
    """A progress that never draws (scheduled reports, tests)."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
