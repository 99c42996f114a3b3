"""A clock that moves only when a test says so, for code that takes an injected clock."""

from __future__ import annotations

import threading


class ManualClock:
    """``now()`` in seconds; ``sleep(s)`` returns at once, having moved the clock on by s."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_s += seconds

    sleep = advance
