"""Lease events: one per thing that happened to a lease, for the auditor to write one record each."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from . import knobs
from .owner import Owner

OPENED = "opened"              # first change of a knob by an owner; value before captured
EXTENDED = "extended"          # a later change by the same owner (capture kept)
SHARED = "shared"              # another process joined the lease (both sides allowed sharing)
CONFLICT = "conflict"          # a change refused: another live process holds the knob
OVERRIDE = "override"          # a change taken over from the holder; capture carried over
RESTORED = "restored"          # owner exited: captured value put back
RESTORE_SKIPPED = "restore_skipped"  # owner exited, but the knob no longer holds what it set
RESTORE_FAILED = "restore_failed"    # the device refused the restore; the value stays
RELEASED = "released"          # the owner ended its lease early (restored now)
ADOPTED = "adopted"            # after a daemon restart: the owner still lives, lease kept
RESTORED_AT_START = "restored_at_start"  # after a restart: the owner had gone; restored
DROPPED = "dropped"            # a lease ended without a restore (see reason)
KINDS = (OPENED, EXTENDED, SHARED, CONFLICT, OVERRIDE, RESTORED, RESTORE_SKIPPED, RESTORE_FAILED,
         RELEASED, ADOPTED, RESTORED_AT_START, DROPPED)


@dataclass(frozen=True)
class LeaseEvent:
    """What happened, to which knob, and whose lease it is.

    ``holder`` is the lease's owner; ``other`` the process on the other side
    (the refused or overriding caller). Values are typed knob values; ``current``
    is what the hardware (or the daemon's last write) held when a restore decided.
    """

    kind: str
    gpu_index: int
    knob: str
    holder: Owner | None
    captured: object = None
    set_value: object = None
    current: object = None
    other: Owner | None = None
    reason: str = ""
    since_s: float | None = None
    extra: dict = field(default_factory=dict)

    def fields(self) -> dict:
        """Flat structured fields (journal-style upper-case keys are the auditor's business)."""
        out = {"event": self.kind, "gpu_index": self.gpu_index, "knob": self.knob,
               "captured": knobs.to_json(self.captured), "set_value": knobs.to_json(self.set_value)}
        for name, who in (("holder", self.holder), ("other", self.other)):
            if who is not None:
                out.update({f"{name}_uid": who.uid, f"{name}_pid": who.pid,
                            f"{name}_command": who.comm})
        if self.current is not None or self.kind in (RESTORED, RESTORE_SKIPPED):
            out["current"] = knobs.to_json(self.current)
        if self.reason:
            out["reason"] = self.reason
        if self.since_s is not None:
            out["since_s"] = self.since_s
        return {**out, **self.extra}

    def message(self) -> str:
        """One human line: 'lease restored: GPU 0 power_limit -> 500000 mW (holder uid 1001 pid 42 (python))'."""
        who = self.holder.describe() if self.holder else "no holder"
        line = f"lease {self.kind}: GPU {self.gpu_index} {self.knob}"
        line += f" captured {knobs.text(self.knob, self.captured)}"
        if self.kind in (OPENED, EXTENDED, SHARED, OVERRIDE):
            line += f", set {knobs.text(self.knob, self.set_value)}"
        line += f" (holder {who})"
        if self.other is not None:
            line += f" by {self.other.describe()}"
        return line + (f": {self.reason}" if self.reason else "")


# Events an administrator should notice: a refused change, a restore that did not happen.
_WARNINGS = (CONFLICT, RESTORE_SKIPPED, RESTORE_FAILED)


def to_auditor(auditor) -> Callable[[LeaseEvent], None]:
    """The ``on_event`` that writes one audit record per event through zeusd's Auditor:
    ZEUSD_EVENT=lease_<kind>, the fields as ZEUSD_<NAME>, warnings at priority 4."""

    def on_event(event: LeaseEvent) -> None:
        fields = {key: json.dumps(value) if isinstance(value, list) else value
                  for key, value in event.fields().items()}
        fields.update(event=f"lease_{event.kind}", priority=4 if event.kind in _WARNINGS else 6)
        auditor.event(event.message(), **fields)

    return on_event
