"""The daemon's wall clock in the API's unit."""

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MonotonicClock:
    """Seconds for measuring intervals, and sleeping: the simulated GPUs' time. Tests pass a
    clock they advance by hand, so a simulated delay or power curve costs no wall time."""

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)
