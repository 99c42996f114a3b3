"""The deadline of the request the current thread serves.

Set by the transport when a worker thread picks a request up (from when its last
byte arrived, so time spent waiting for a worker counts), read by the GPU layer
so that a request never waits past it, however long a GPU's queue is.
"""

from __future__ import annotations

import contextvars
import time

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "zeusd_request_deadline", default=None)


def start(at_monotonic: float) -> None:
    _deadline.set(at_monotonic)


def clear() -> None:
    _deadline.set(None)


def remaining_s() -> float | None:
    """Seconds left (may be <= 0), or None outside a request (no limit)."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()
