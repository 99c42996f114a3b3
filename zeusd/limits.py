"""Limits that keep one caller (or one slow GPU) from taking the daemon from everyone else:
their defaults, their command-line flags, and the values derived from the worker count."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeLimits:
    max_connections: int = 256  # all connections together
    reserved_connections: int = 32  # of those, kept for root and the policy's members
    max_connections_per_peer: int = 32  # per Unix uid or TCP address (root excepted)
    request_read_timeout_s: float = 10.0  # a request's line, headers and body, from 1st byte
    idle_timeout_s: float = 60.0  # a keep-alive connection with no request in progress
    request_timeout_s: float = 30.0  # a request's whole stay, from its last byte to its answer
    max_body_bytes: int = 16384  # no route needs more than a few hundred bytes
    max_waiting_per_gpu: int = 0  # 0: half the HTTP workers
    max_streams_per_caller: int = 0  # 0: a third of the stream slots, at least 2
    shutdown_timeout_s: float = 30.0  # draining acknowledged writes at SIGTERM

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


def _positive(kind):
    def convert(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return convert


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


_FLAGS = (
    ("max_connections", _positive(int), "open connections in all (default 256)"),
    ("reserved_connections", _non_negative_int,
     "of those, kept for root and callers the policy grants a write (default 32)"),
    ("max_connections_per_peer", _positive(int),
     "connections one Unix uid or TCP address may hold; root is exempt (default 32)"),
    ("request_read_timeout_s", _positive(float),
     "a request must arrive whole within this many seconds of its first byte (default 10)"),
    ("idle_timeout_s", _positive(float), "close a connection idle this long (default 60)"),
    ("request_timeout_s", _positive(float),
     "a request's whole time in the daemon, queue waits included (default 30)"),
    ("max_body_bytes", _positive(int), "larger request bodies answer 413 unread (default 16384)"),
    ("max_waiting_per_gpu", _non_negative_int,
     "while a GPU is slow, requests waiting on it at once before 429 "
     "(default 0: half of --num-workers)"),
    ("max_streams_per_caller", _non_negative_int,
     "open power streams per caller (default 0: a third of the stream slots, at least 2)"),
    ("shutdown_timeout_s", _positive(float),
     "at SIGTERM, time to apply acknowledged writes before they are dropped (default 30)"),
)


def add_flags(p: argparse.ArgumentParser, d) -> None:
    """``d(value)`` gives each flag's default (argparse.SUPPRESS for the serve subcommand)."""
    for name, kind, text in _FLAGS:
        p.add_argument("--" + name.replace("_", "-"), type=kind,
                       default=d(getattr(ServeLimits, name)), help=text)


def from_args(args: argparse.Namespace) -> ServeLimits:
    limits = ServeLimits(**{name: getattr(args, name) for name, _, _ in _FLAGS})
    try:
        limits.check()
    except ValueError as exc:
        print(f"zeusd: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return limits
