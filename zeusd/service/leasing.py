"""The lease side of a GPU write: begun before anything is queued, ended exactly once.

``Leasing.begin`` runs in the HTTP thread after the policy allowed every GPU of a
request: per GPU and knob it asks the lease book (which may refuse with 409, or
fail to record the lease: 503), so a conflict is a synchronous answer even for
``block=false``. Each GPU's changes are then ended by whichever thread gets there
first: the GPU's job (commit or abort around the hardware write), or the HTTP
thread when the job was never started (queue full, timed out before it ran,
dropped at shutdown). A claim lock makes that choice race-free.

The book also remembers the value the daemon last wrote to each knob; the write
path uses it as the audit's old value, so a write needs no read of what it
replaces (``OldValue.source`` says where the value came from).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from ..errors import KnobHeld, LeaseUnrecorded
from ..identity import Caller
from ..leases import NO_READING, OwnerGone
from ..leases.knobs import BadValue
from ..operations import GpuChange, knob_text

# Where the audit's old value came from (ZEUSD_OLD_VALUE_SOURCE).
FROM_GPU = "gpu"                      # read from the hardware just before the write
FROM_LAST_WRITE = "zeusd_last_write"  # the value zeusd itself last wrote or restored
ASSUMED_UNLOCKED = "assumed_not_locked"  # locked clocks zeusd never set (NVML cannot read them)


@dataclass(frozen=True)
class OldValue:
    text: str
    source: str


class GpuLeases:
    """One request's lease changes on one GPU, ended once (commit, or abort)."""

    def __init__(self, changes: list, old: OldValue | None) -> None:
        self.changes = changes
        self.old = old
        self._claim = threading.Lock()

    def claim(self) -> bool:
        """True for the one thread that ends these changes (the job, or the request if the
        job never started)."""
        return self._claim.acquire(blocking=False)

    def end(self, applied: bool, maybe_applied: bool = False) -> None:
        for change in self.changes:
            change.commit() if applied else change.abort(maybe_applied=maybe_applied)

    def abort_unclaimed(self) -> None:
        if self.claim():
            self.end(applied=False)


class Leasing:
    """Lease changes for the GPU write path; ``book`` None means leases are off (what the
    daemon last wrote to each knob is then remembered here, for the same purpose)."""

    def __init__(self, book) -> None:
        self.book = book
        self._written: dict[tuple[int, str], object] = {}  # leases off: (gpu, knob) -> value

    def begin(self, caller: Caller, pin_owner, by_index: dict) -> dict[int, GpuLeases]:
        """Every GPU's lease changes, or none (a refusal on one GPU aborts the others)."""
        started: dict[int, GpuLeases] = {}
        try:
            for index, (change, decision) in by_index.items():
                started[index] = self._begin_gpu(caller, pin_owner, change, decision)
        except BaseException:
            for leases in started.values():
                leases.abort_unclaimed()
            raise
        return started

    def _begin_gpu(self, caller, pin_owner, change: GpuChange, decision) -> GpuLeases:
        if self.book is None:
            return self._remembering(change)
        changes, olds = [], []
        try:
            for knob, value in change.knob_values():
                known = self.book.known(change.gpu_index, knob)
                lease_change = self._begin_knob(caller, pin_owner, change, knob, value, decision)
                changes.append(lease_change)
                olds.append(_old_value(change, knob, known, lease_change))
        except BaseException:
            GpuLeases(changes, None).abort_unclaimed()
            raise
        return GpuLeases(changes, None if None in olds else _joined(olds))

    def _remembering(self, change: GpuChange) -> GpuLeases:
        """Leases off: no lease, but the old value comes from what the daemon last wrote,
        as with leases on, and what this change writes is remembered once it is applied."""
        changes, olds = [], []
        for knob, value in change.knob_values():
            key = (change.gpu_index, knob)
            known = self._written.get(key, NO_READING)
            changes.append(_Remember(self._written, key, value))
            olds.append(None if known is NO_READING else _last_write(knob, known))
        return GpuLeases(changes, None if None in olds else _joined(olds))

    def _begin_knob(self, caller, pin_owner, change, knob, value, decision):
        wants_lease = decision.restore_on_exit and pin_owner is not None
        try:
            pinned = pin_owner() if wants_lease else None
            return self.book.change(pinned, change.gpu_index, knob, value,
                                    restore_on_exit=decision.restore_on_exit,
                                    may_share=decision.share_leases, override=caller.is_root)
        except OwnerGone:
            raise KnobHeld("the calling process has exited; its change would be undone at "
                           "once, so it is not made") from None
        except BadValue:  # no GPU takes it: the device refuses it with its own error, as before
            return _NoLease()
        except OSError as exc:
            raise LeaseUnrecorded(f"the lease for GPU {change.gpu_index} {knob} could not be "
                                  f"recorded ({exc.strerror or exc}), so nothing was changed") \
                from None


class _Remember:
    """A change without a lease (leases off) whose value is remembered once applied, and
    forgotten when whether it was applied is unknown."""

    opening = False

    def __init__(self, written: dict, key: tuple[int, str], value) -> None:
        self.written, self.key, self.value = written, key, value

    def commit(self) -> None:
        self.written[self.key] = self.value

    def abort(self, maybe_applied: bool = False) -> None:
        if maybe_applied:
            self.written.pop(self.key, None)


class _NoLease:
    """A change the book did not take (a value outside every GPU's range)."""

    opening = False

    def commit(self) -> None:
        pass

    def abort(self, maybe_applied: bool = False) -> None:
        pass


def _old_value(change: GpuChange, knob: str, known, lease_change) -> OldValue | None:
    """The value the change replaces, without a device call where the daemon knows it."""
    if lease_change.opening:  # the book has just captured it
        source = (FROM_GPU if change.spec.getter else
                  FROM_LAST_WRITE if known is not NO_READING else ASSUMED_UNLOCKED)
        return OldValue(knob_text(knob, lease_change.captured), source)
    if known is not NO_READING:
        return OldValue(knob_text(knob, known), FROM_LAST_WRITE)
    return None  # read from the GPU in the job (where it has a getter)


@functools.lru_cache(maxsize=1024)
def _last_write(knob: str, value) -> OldValue:
    """The old value of a knob zeusd last set to ``value`` (a client alternates a few)."""
    return OldValue(knob_text(knob, value), FROM_LAST_WRITE)


def _joined(olds: list[OldValue]) -> OldValue:
    if len(olds) == 1:
        return olds[0]
    return OldValue(", ".join(o.text for o in olds), ",".join(sorted({o.source for o in olds})))
