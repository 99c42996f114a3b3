"""The lease book: who changed which knob, what it was before, and putting it back.

Thread-safe: every method may be called from any HTTP or GPU worker thread.
The book's lock is never held across a device call (those can block for
``--nvml-timeout-s``); a lease being written or restored is marked busy
instead, and a change to a busy lease is refused with LeaseBusy (409) rather
than waiting. Lease files are written under the lock (a few fsyncs).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from . import events as ev
from . import knobs
from .device import NO_READING, KnobIO
from .errors import LeaseBusy, LeaseConflict
from .owner import Owner, OwnerGone, PinnedOwner, boot_id, is_exited, pin_pid
from .records import Holder, LeaseRecord, RecordStore
from .state import BUSY, LIVE, RESTORING, Change, Lease, LeaseView
from .state import last as _last
from .watcher import ExitWatcher

log = logging.getLogger(__name__)

_UNKNOWN = object()  # the daemon does not know what a no-getter knob holds
DEFAULT_MAX_OWNERS = 128  # each owner costs a pidfd; waitress's select() breaks past fd 1023


class _OwnerEntry:
    def __init__(self, pinned: PinnedOwner) -> None:
        self.pinned = pinned
        self.leases: set[tuple[int, str]] = set()


class LeaseBook:
    """Leases per (GPU index, knob), durable under ``directory``, restored when owners exit."""

    def __init__(self, directory: str, device: KnobIO, on_event: Callable[[ev.LeaseEvent], None], *,
                 clock: Callable[[], float] = time.time, max_owners: int = DEFAULT_MAX_OWNERS) -> None:
        self._store = RecordStore(directory)
        self.directory = directory
        self._device = device
        self._on_event = on_event
        self._clock = clock
        self._max_owners = max_owners
        self._boot_id = boot_id()
        self._lock = threading.Lock()
        self._leases: dict[tuple[int, str], Lease] = {}
        self._owners: dict[tuple[int, int], _OwnerEntry] = {}
        self._known: dict[tuple[int, str], object] = {}
        self._watcher = ExitWatcher(self._owner_exited)
        self.rejected_files: list[str] = []

    # -- changes -----------------------------------------------------------------------------

    def change(self, pinned: PinnedOwner | None, gpu_index: int, knob: str, new_value: object, *,
               before: object = NO_READING, restore_on_exit: bool = True, may_share: bool = False,
               override: bool = False) -> Change:
        """Start a change: check the lease, capture and record it (fsync'd). The caller then does
        the hardware write and calls ``commit()`` or ``abort()`` (or uses the Change as a context
        manager). ``pinned`` is None for a caller without a process (TCP); the book takes over
        its pidfd in every case. Raises LeaseConflict, LeaseBusy, OSError (recording failed),
        or whatever reading the value before raises; nothing has changed then."""
        key = (gpu_index, knob)
        wants_lease = restore_on_exit and pinned is not None
        try:
            new_value = knobs.check(knob, new_value)
            with self._lock:
                change = self._begin(pinned, key, new_value, wants_lease, may_share, override)
        except BaseException as exc:
            if pinned is not None:
                pinned.close()  # never adopted: adoption is the last step of a successful _begin
            if isinstance(exc, LeaseConflict):
                self._emit(exc.event)
            raise
        if change.opening:
            self._capture(change, before)
        return change

    def _begin(self, pinned, key, new_value, wants_lease, may_share, override) -> Change:
        lease = self._leases.get(key)
        me = pinned.owner if pinned is not None else None
        if lease is not None:
            return self._begin_on_lease(lease, pinned, me, new_value, wants_lease, may_share, override)
        if pinned is not None and not wants_lease:
            pinned.close()
        if not wants_lease:
            return Change(self, key, None, new_value, kind=None)
        self._check_capacity(me)
        record = LeaseRecord(key[0], key[1], None, self._clock(), self._boot_id,
                             holders=[Holder(me, self._clock(), may_share)])
        lease = self._leases[key] = Lease(record, state=BUSY)
        self._owner_ref(pinned, key)
        return Change(self, key, lease, new_value, kind=ev.OPENED, owner=me, opening=True)

    def _begin_on_lease(self, lease, pinned, me, new_value, wants_lease, may_share, override):
        if lease.state != LIVE:
            raise LeaseBusy(f"GPU {lease.record.gpu_index} {lease.record.knob} is being "
                            f"{'restored' if lease.state == RESTORING else 'changed'}; try again")
        holders = lease.record.holders
        mine = me is not None and any(h.owner.key == me.key for h in holders)
        shared = (not mine and wants_lease and may_share and all(h.shareable for h in holders))
        if not (mine or shared or override):
            if self._all_exited(holders):  # the watcher is about to restore it
                raise LeaseBusy(f"GPU {lease.record.gpu_index} {lease.record.knob} is being "
                                "restored; try again")
            self._conflict(lease, holders[0], me)
        kind = ev.EXTENDED if mine else ev.SHARED if shared else ev.OVERRIDE
        if kind != ev.EXTENDED and wants_lease:
            self._check_capacity(me)
        old_holders = list(holders) if kind == ev.OVERRIDE else []
        self._write_intent(lease, new_value, Holder(me, self._clock(), may_share) if shared else None)
        key = (lease.record.gpu_index, lease.record.knob)
        if shared:
            self._owner_ref(pinned, key)
        elif mine and pinned is not None:
            pinned.close()  # the book already watches this process
        return Change(self, key, lease, new_value, kind, owner=me,
                      pinned=pinned if kind == ev.OVERRIDE else None, old_holders=old_holders,
                      drop=kind == ev.OVERRIDE and not wants_lease)

    def _write_intent(self, lease: Lease, new_value, joining: Holder | None) -> None:
        """Record the value about to be written (fsync'd) before the hardware write; on failure
        leave the lease exactly as it was."""
        r = lease.record
        r.pending = [new_value]
        if joining is not None:
            r.holders.append(joining)
        try:
            self._store.write(r)
        except BaseException:
            r.pending = []
            if joining is not None:
                r.holders.pop()
            raise
        lease.state = BUSY

    def _all_exited(self, holders: list[Holder]) -> bool:
        entries = [self._owners.get(h.owner.key) for h in holders]
        return all(e is None or is_exited(e.pinned.pidfd) for e in entries)

    def _check_capacity(self, me: Owner) -> None:
        if me.key not in self._owners and len(self._owners) >= self._max_owners:
            raise LeaseBusy(f"{self._max_owners} processes already hold leases; try later")

    def _conflict(self, lease: Lease, holder: Holder, me: Owner | None) -> None:
        r = lease.record
        error = LeaseConflict(r.gpu_index, r.knob, holder.owner, holder.since_s)
        error.event = ev.LeaseEvent(ev.CONFLICT, r.gpu_index, r.knob, holder.owner, r.captured,
                                    _last(r.set), other=me, since_s=holder.since_s)
        raise error

    def _capture(self, change: Change, before: object) -> None:
        """Read the value before (outside the lock), then record the lease as an intent."""
        gpu_index, knob = change.key
        try:
            if before is NO_READING:
                before = self._device.read(gpu_index, knob)
            if before is NO_READING:  # no getter: what the daemon last wrote, else "not locked"
                before = self._known.get(change.key, None)
                before = None if before is _UNKNOWN else before
            before = knobs.check(knob, before)
            with self._lock:
                change.lease.record.captured = before
                change.lease.record.pending = [change.new_value]
                self._store.write(change.lease.record)
        except BaseException:
            with self._lock:
                self._forget(change.lease)
            raise

    def _finish(self, change: Change, applied: bool, maybe_applied: bool) -> None:
        lease, events = change.lease, []
        with self._lock:
            if applied or maybe_applied:
                self._known[change.key] = change.new_value if applied else _UNKNOWN
            if lease is None:
                return
            if applied:
                self._apply_commit(change, events)
            elif maybe_applied:
                lease.record.set += lease.record.pending  # either value may be on the hardware now
                lease.record.pending = []
                self._write_after(lease.record)
            else:
                self._apply_abort(change)
            restore = self._settle(lease)
        for event in events:
            self._emit(event)
        if restore:  # not here: this may be the GPU's worker thread, which the restore needs
            self._watcher.call_soon(
                lambda: self._restore(lease, ev.RESTORED, "the owner exited during the change"))

    def _write_after(self, r: LeaseRecord) -> None:
        """A write after the hardware step. If it fails the file still holds the intent, which
        covers the hardware's value (the CAS accepts pending values), so log and go on."""
        try:
            self._store.write(r)
        except OSError as exc:
            log.error("cannot update lease file %s: %s; the previous record stays", r.filename, exc)

    def _delete_after(self, r: LeaseRecord) -> None:
        """If a removal fails, the next start finds the file and restores by CAS (a no-op)."""
        try:
            self._store.delete(r)
        except OSError as exc:
            log.error("cannot remove lease file %s: %s", r.filename, exc)

    def _apply_commit(self, change: Change, events: list) -> None:
        r = change.lease.record
        r.set, r.pending = [change.new_value], []
        if change.kind == ev.OVERRIDE:
            self._take_over(change, events)
        else:
            events.append(self._event(change.kind, r, change.owner))
        if change.drop:
            self._delete_after(r)
            self._forget(change.lease)
            events.append(self._event(ev.DROPPED, r, None, reason="overridden by a change "
                                      "that is not restored on exit"))
        else:
            self._write_after(r)

    def _take_over(self, change: Change, events: list) -> None:
        r = change.lease.record
        me = change.pinned.owner if change.pinned is not None else None
        for old in change.old_holders:
            events.append(self._event(ev.OVERRIDE, r, old.owner, other=me))
            self._owner_unref(old.owner.key, change.key)
        r.holders = []
        if change.drop:
            if change.pinned is not None:
                change.pinned.close()
        else:
            self._owner_ref(change.pinned, change.key)
            r.holders = [Holder(me, self._clock(), False)]
            change.lease.orphaned = False

    def _apply_abort(self, change: Change) -> None:
        r = change.lease.record
        if change.opening:
            self._delete_after(r)
            self._forget(change.lease)
            return
        r.pending = []
        if change.kind == ev.SHARED and any(h.owner.key == change.owner.key for h in r.holders):
            r.holders = [h for h in r.holders if h.owner.key != change.owner.key]
            self._owner_unref(change.owner.key, change.key)
        self._write_after(r)
        if change.pinned is not None:
            change.pinned.close()

    def _settle(self, lease: Lease) -> bool:
        """After a write: live again, or (every holder gone meanwhile) to be restored now."""
        if self._leases.get((lease.record.gpu_index, lease.record.knob)) is not lease:
            return False
        if lease.orphaned or not lease.record.holders:
            lease.state = RESTORING
            return True
        lease.state = LIVE
        return False

    # -- owners --------------------------------------------------------------------------------

    def _owner_ref(self, pinned: PinnedOwner, key: tuple[int, str]) -> None:
        entry = self._owners.get(pinned.owner.key)
        if entry is None:  # capacity was checked by the caller, before anything changed
            entry = self._owners[pinned.owner.key] = _OwnerEntry(pinned)
            self._watcher.watch(pinned.owner.key, pinned.pidfd)
        elif entry.pinned is not pinned:
            pinned.close()
        entry.leases.add(key)

    def _owner_unref(self, owner_key: tuple[int, int], key: tuple[int, str]) -> None:
        entry = self._owners.get(owner_key)
        if entry is None:
            return
        entry.leases.discard(key)
        if not entry.leases:
            del self._owners[owner_key]
            self._watcher.unwatch(entry.pinned.pidfd)
            entry.pinned.close()

    def _forget(self, lease: Lease) -> None:
        key = (lease.record.gpu_index, lease.record.knob)
        if self._leases.get(key) is lease:
            del self._leases[key]
        for holder in lease.record.holders:
            self._owner_unref(holder.owner.key, key)

    def _owner_exited(self, owner_key: tuple[int, int]) -> None:
        """Watcher thread: the process exited. Its leases that nobody else holds go back now."""
        self._restore_many(self._detach(owner_key, None), ev.RESTORED, "the owner exited")

    def _detach(self, owner_key, keys) -> list[Lease]:
        """Remove ``owner_key`` from its leases (those in ``keys``, or all); return the ones now
        held by nobody that can be restored right away (in-flight ones restore on commit)."""
        to_restore = []
        with self._lock:
            entry = self._owners.get(owner_key)
            for key in sorted(entry.leases if entry else ()):
                if keys is not None and key not in keys:
                    continue
                lease = self._leases[key]
                lease.last_holder = entry.pinned.owner
                lease.record.holders = [h for h in lease.record.holders if h.owner.key != owner_key]
                self._owner_unref(owner_key, key)
                if lease.record.holders:
                    self._write_after(lease.record)
                elif lease.state == BUSY:
                    lease.orphaned = True
                else:
                    lease.state = RESTORING
                    to_restore.append(lease)
        return to_restore

    # -- restoring -----------------------------------------------------------------------------

    def release(self, owner_key: tuple[int, int], gpu_index: int | None = None,
                knob: str | None = None) -> list[tuple[int, str]]:
        """The owner ends its leases early (all, one GPU's, or one knob): restored now, by CAS.
        Shared leases are only left. Returns the (GPU, knob) pairs the owner no longer holds."""
        with self._lock:
            entry = self._owners.get(owner_key)
            keys = {k for k in (entry.leases if entry else ())
                    if (gpu_index is None or k[0] == gpu_index) and (knob is None or k[1] == knob)}
        self._restore_many(self._detach(owner_key, keys), ev.RELEASED, "released early by its owner")
        return sorted(keys)

    def _restore_many(self, leases: list[Lease], kind: str, reason: str) -> None:
        for lease in leases:
            self._restore(lease, kind, reason)

    def _restore(self, lease: Lease, kind: str, reason: str) -> None:
        """Compare-and-swap: put the capture back only if the knob still holds what the lease set."""
        r = lease.record
        holder = lease.last_holder or (r.holders[0].owner if r.holders else None)
        try:
            current = self._current(r)
            # the knob already back at the capture (say, a crash before the write) counts as ours
            if current is _UNKNOWN or current in r.ours() or current == r.captured:
                if current is _UNKNOWN or current != r.captured:
                    self._device.apply(r.gpu_index, r.knob, r.captured)
                event = self._event(kind, r, holder, reason=reason,
                                    current=None if current is _UNKNOWN else current)
                with self._lock:
                    self._known[(r.gpu_index, r.knob)] = r.captured
            else:
                event = self._event(ev.RESTORE_SKIPPED, r, holder, current=current,
                                    reason=f"{reason}, but the value was changed by someone else")
        except Exception as exc:  # a lost GPU, an NVML error: log it, never leave the lease stuck
            event = self._event(ev.RESTORE_FAILED, r, holder, reason=f"{reason}: {exc}")
        with self._lock:
            self._delete_after(r)
            self._forget(lease)
        self._emit(event)

    def _current(self, r: LeaseRecord) -> object:
        current = self._device.read(r.gpu_index, r.knob)
        if current is NO_READING:
            with self._lock:
                current = self._known.get((r.gpu_index, r.knob), _UNKNOWN)
        return current

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Read the lease files left by the last run: adopt leases whose owner still lives,
        restore the rest now. Corrupt or hostile files are logged and skipped."""
        records, self.rejected_files = self._store.load_all()
        for record in records:
            self._start_one(record)

    def _start_one(self, r: LeaseRecord) -> None:
        holder = r.holders[0].owner if r.holders else None
        if r.boot_id != self._boot_id:
            self._delete_after(r)
            self._emit(self._event(ev.DROPPED, r, holder,
                                   reason="recorded before the last reboot"))
            return
        alive = []
        for h in r.holders:
            try:
                alive.append((h, pin_pid(h.owner.uid, *h.owner.key)))
            except OwnerGone:
                continue
        lease = Lease(r, state=RESTORING if not alive else LIVE, last_holder=holder)
        with self._lock:
            self._leases[(r.gpu_index, r.knob)] = lease
            ours = r.ours()
            if ours:  # a no-getter knob holds what was last written, if only one value is possible
                self._known[(r.gpu_index, r.knob)] = ours[0] if len(ours) == 1 else _UNKNOWN
            r.holders = [h for h, _ in alive]
            for _, pinned in alive:
                self._owner_ref(pinned, (r.gpu_index, r.knob))
            if alive:
                self._write_after(r)
        if alive:
            self._emit(self._event(ev.ADOPTED, r, r.holders[0].owner))
        else:
            self._restore(lease, ev.RESTORED_AT_START, "the owner exited while zeusd was down")

    def stop(self, keep_leases: bool) -> None:
        """Stop watching. ``keep_leases`` (a restart for an upgrade): the files stay for the next
        start. Otherwise every lease is restored now, by CAS, and its file removed."""
        self._watcher.stop()
        with self._lock:
            leases = [lease for lease in self._leases.values() if lease.state == LIVE]
            if not keep_leases:
                for lease in leases:
                    lease.state = RESTORING
        if not keep_leases:
            self._restore_many(leases, ev.RESTORED, "zeusd is stopping")
        with self._lock:
            for entry in self._owners.values():
                entry.pinned.close()
            self._owners.clear()
            self._leases.clear()

    # -- reading -------------------------------------------------------------------------------

    def known(self, gpu_index: int, knob: str) -> object:
        """The knob's value as the daemon last wrote (or restored) it, or NO_READING if it does
        not know. The write path's cache: a change needs no read of the value it replaces."""
        with self._lock:
            value = self._known.get((gpu_index, knob), NO_READING)
        return NO_READING if value is _UNKNOWN else value

    def has_leases(self) -> bool:
        with self._lock:
            return bool(self._leases)

    def leases(self) -> list[LeaseView]:
        """Every lease, ordered by GPU and knob. The caller filters by what its caller may read."""
        now = self._clock()
        with self._lock:
            return [LeaseView(r.gpu_index, r.knob, r.captured, _last(r.set),
                              tuple((h.owner, h.since_s) for h in r.holders), r.opened_s,
                              max(0.0, now - r.opened_s), lease.state)
                    for lease in sorted(self._leases.values(),
                                        key=lambda l: (l.record.gpu_index, l.record.knob))
                    for r in [lease.record]]

    def _event(self, kind, r: LeaseRecord, holder: Owner | None, **fields) -> ev.LeaseEvent:
        since = r.holders[0].since_s if r.holders else r.opened_s
        return ev.LeaseEvent(kind, r.gpu_index, r.knob, holder, r.captured, _last(r.set),
                             since_s=since, **fields)

    def _emit(self, event: ev.LeaseEvent) -> None:
        log.info("%s", event.message())
        try:
            self._on_event(event)
        except Exception:  # the auditor's failure must not undo or block a lease step
            log.exception("lease event handler failed for %s", event.kind)
