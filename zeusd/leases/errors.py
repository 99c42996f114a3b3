"""Why a change under lease was refused. Both map to HTTP 409 through zeusd's own hierarchy."""

from __future__ import annotations

from ..errors import KnobHeld


class LeaseConflict(KnobHeld):
    """Another live process holds the knob. Carries the holder so the 409 can name it."""

    def __init__(self, gpu_index: int, knob: str, holder, since_s: float) -> None:
        super().__init__(
            f"GPU {gpu_index} {knob} is held by uid {holder.uid} pid {holder.pid} "
            f"({holder.comm}) since {_iso(since_s)}; it is restored when that process exits",
            gpu_index=gpu_index, knob=knob, holder_uid=holder.uid, holder_pid=holder.pid,
            holder_command=holder.comm, since=_iso(since_s))
        self.holder = holder
        self.since_s = since_s


class LeaseBusy(KnobHeld):
    """The knob is being written or restored right now, or no more owners can be watched."""


def _iso(epoch_s: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat(timespec="seconds")
