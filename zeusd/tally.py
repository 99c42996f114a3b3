"""Counters the daemon keeps for /metrics: requests by route and status, policy decisions by
rule and outcome. Plain dicts under a lock, not prometheus_client objects, so that counting
costs a dict update and nothing registers in a process-wide registry; the metrics collector
reads a snapshot at scrape time."""

from __future__ import annotations

import threading
from typing import Hashable


class Tally:
    """Thread-safe counts per key (a tuple of label values)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Hashable, int] = {}

    def add(self, key: Hashable) -> None:
        with self._lock:  # `+=` on a dict item is not atomic across threads
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> dict[Hashable, int]:
        with self._lock:
            return dict(self._counts)


# Every policy decision of this process, by (rule, "allow" | "deny"). One per process because
# a decision is made by whichever Policy object the store holds at the time.
DECISIONS = Tally()


def count_decision(decision):
    """Count and return ``decision`` (a policy.model.Decision)."""
    DECISIONS.add((decision.rule, "allow" if decision.allowed else "deny"))
    return decision
