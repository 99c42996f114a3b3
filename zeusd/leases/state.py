"""A lease in memory, a change in progress, and a lease as a listing shows it."""

from __future__ import annotations

from dataclasses import dataclass

from .owner import Owner, PinnedOwner
from .records import LeaseRecord

LIVE, BUSY, RESTORING = "live", "busy", "restoring"


@dataclass
class Lease:
    record: LeaseRecord
    state: str = LIVE
    orphaned: bool = False  # every holder exited while a write was in flight
    last_holder: Owner | None = None  # named by the restore's event once every holder is gone


@dataclass(frozen=True)
class LeaseView:
    """One lease as a listing shows it."""

    gpu_index: int
    knob: str
    captured: object
    set_value: object
    holders: tuple[tuple[Owner, float], ...]  # (owner, since_s)
    opened_s: float
    age_s: float
    state: str


class Change:
    """A change in progress. Commit after the hardware write succeeded, abort after it failed
    (``maybe_applied=True`` when it timed out and may still happen)."""

    def __init__(self, book, key, lease: Lease | None, new_value, kind, *,
                 owner: Owner | None = None, opening: bool = False,
                 pinned: PinnedOwner | None = None, old_holders=(), drop: bool = False) -> None:
        self.book, self.key, self.lease, self.new_value, self.kind = book, key, lease, new_value, kind
        self.owner, self.opening, self.pinned = owner, opening, pinned
        self.old_holders, self.drop = old_holders, drop
        self._done = False

    @property
    def captured(self) -> object:
        return self.lease.record.captured if self.lease is not None else None

    def commit(self) -> None:
        self._end(applied=True, maybe_applied=False)

    def abort(self, maybe_applied: bool = False) -> None:
        self._end(applied=False, maybe_applied=maybe_applied)

    def _end(self, applied: bool, maybe_applied: bool) -> None:
        if self._done:
            raise RuntimeError("a lease change ends once")
        self._done = True
        self.book._finish(self, applied, maybe_applied)

    def __enter__(self) -> "Change":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._done:
            self.commit() if exc_type is None else self.abort()
        return False



def last(values: list) -> object:
    return values[-1] if values else None

