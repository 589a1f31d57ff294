"""Rate-limited logging: a failure is logged once, then at most once a minute, with counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Throttled:
    """Log each key's first event, then at most one line per ``every_s`` with a count."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        extra = self._suppressed.pop(key, 0)
        if extra:
            msg += f" ({extra} more since last report)"
        self._logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)
