"""Limits that keep one caller (or one slow GPU) from taking the daemon from everyone else:
their options (flag, default, help: one table), and the values derived from the worker count."""

from __future__ import annotations

from .options import Option, config_class, positive_float, whole_number


MAX_COUNT = 1_000_000  # connections, waiting requests, streams: far above what a node needs
MAX_BODY_BYTES = 1 << 30
_COUNT = whole_number(1, MAX_COUNT)
_COUNT_OR_AUTO = whole_number(0, MAX_COUNT)  # 0: derived from the worker count


LIMIT_OPTIONS = (
    Option("max_connections", int, 256, "open connections in all", _COUNT, metavar="N"),
    Option("reserved_connections", int, 32,
           "of those, kept for root and callers the policy grants a write", _COUNT_OR_AUTO,
           metavar="N"),
    Option("max_connections_per_peer", int, 32,
           "connections one Unix uid or TCP address may hold; root is exempt", _COUNT,
           metavar="N"),
    Option("request_read_timeout_s", float, 10.0,
           "a request must arrive whole within this many seconds of its first byte",
           positive_float, metavar="SECONDS"),
    Option("idle_timeout_s", float, 60.0, "close a connection idle this long", positive_float,
           metavar="SECONDS"),
    Option("request_timeout_s", float, 30.0,
           "a request's whole time in the daemon, queue waits included", positive_float,
           metavar="SECONDS"),
    Option("max_body_bytes", int, 16384, "larger request bodies answer 413 unread",
           whole_number(1, MAX_BODY_BYTES), metavar="N"),
    Option("max_waiting_per_gpu", int, 0,
           "while a GPU is slow, requests waiting on it at once before 429", _COUNT_OR_AUTO,
           metavar="N", shown="0: half of --num-workers"),
    Option("max_streams_per_caller", int, 0, "open power streams per caller", _COUNT_OR_AUTO,
           metavar="N", shown="0: a third of the stream slots, at least 2"),
    Option("shutdown_timeout_s", float, 30.0,
           "at SIGTERM, time to apply acknowledged writes before they are dropped",
           positive_float, metavar="SECONDS"),
)


@config_class(LIMIT_OPTIONS)
class ServeLimits:
    """One field per row of LIMIT_OPTIONS."""

    def waiting_per_gpu(self, num_workers: int) -> int:
        """Below the worker count, so requests for one GPU never hold every worker."""
        if self.max_waiting_per_gpu:
            return self.max_waiting_per_gpu
        return max(1, num_workers // 2)

    def streams_per_caller(self, max_streams: int) -> int:
        if self.max_streams_per_caller:
            return self.max_streams_per_caller
        return max(2, max_streams // 3)

    def check(self) -> None:
        if self.reserved_connections >= self.max_connections:
            raise ValueError("--reserved-connections must be below --max-connections")
