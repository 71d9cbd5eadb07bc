"""Log lines that peers can provoke at will, at most once per key per interval, with a count.

A peer that retries a wrong cookie every millisecond must not fill the log (or spend the
node's time formatting lines): the first event of a key is logged, the following ones within
the interval are counted, and the next line says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Keys remembered at most: beyond it the oldest are forgotten (a flood of distinct keys must
#: not grow memory either).
MAX_KEYS = 4096


class OncePer:
    """``log(key, level, msg, *args)`` logs at most once per ``interval`` seconds per key."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[object, tuple[float, int]] = {}  # key -> (logged at, left out since)

    def log(self, key: object, level: int, msg: str, *args: object) -> bool:
        """Log now unless ``key`` was logged within the interval; whether it was logged."""
        now = self._clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self._interval:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        if seen is None and len(self._last) >= MAX_KEYS:
            del self._last[next(iter(self._last))]
        self._last.pop(key, None)
        self._last[key] = (now, 0)
        if seen is not None and seen[1]:
            msg = f"{msg} ({seen[1]} more like this in the last {self._interval:g} s)"
        self._logger.log(level, msg, *args)
        return True
