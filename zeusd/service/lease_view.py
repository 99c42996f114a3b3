"""Leases as callers see them: the listing (filtered by what the caller may read) and
early release (a process's own leases, or those of its user's processes)."""

from __future__ import annotations

from ..errors import InvalidValue, NotEnabled, PolicyDenied
from ..identity import Caller
from ..leases import knobs
from ..operations import GPU_READ

OFF = ("leases are off on this server: it was started without --lease-dir and without a "
       "systemd StateDirectory")


def lease_json(view) -> dict:
    """One lease as the API and `zeusd leases` show it (values typed, clocks [min, max])."""
    return {"gpu_id": view.gpu_index, "knob": view.knob,
            "captured": knobs.to_json(view.captured),
            "captured_text": knobs.text(view.knob, view.captured),
            "set_value": knobs.to_json(view.set_value),
            "set_text": knobs.text(view.knob, view.set_value),
            "holders": [{"uid": o.uid, "pid": o.pid, "command": o.comm, "cmdline": o.cmdline,
                         "since_s": round(since, 3)} for o, since in view.holders],
            "opened_s": round(view.opened_s, 3), "age_s": round(view.age_s, 3),
            "state": view.state}


class LeaseService:
    def __init__(self, book, policy_store) -> None:
        self.book = book
        self.policy_store = policy_store

    def listing(self, caller: Caller, gpu_ids: list[int] | None = None) -> list[dict]:
        """Every lease on a GPU the caller may read (gpu-read), of ``gpu_ids`` (None: all)."""
        self._require()
        policy = self.policy_store.current
        readable: dict[int, bool] = {}
        out = []
        for view in self.book.leases():
            if gpu_ids is not None and view.gpu_index not in gpu_ids:
                continue
            if view.gpu_index not in readable:
                readable[view.gpu_index] = policy.decide_read(caller, GPU_READ,
                                                              view.gpu_index).allowed
            if readable[view.gpu_index]:
                out.append(lease_json(view))
        return out

    def release(self, caller: Caller, gpu_ids: list[int] | None, knob: str | None,
                pid: str) -> list[dict]:
        """End leases early (restored now, by compare-and-swap). ``pid`` "self": the calling
        process's own; "any": any process of the caller's uid (root: any process); a
        number: that process, if it is the caller's user's (root: anyone's)."""
        self._require()
        if knob is not None and knob not in knobs.KNOBS:
            raise InvalidValue(f"unknown knob '{knob[:40]}' (known: {', '.join(knobs.KNOBS)})")
        if caller.transport != "unix" or not caller.known:
            raise PolicyDenied("only a local process (Unix socket) holds leases to release")
        owners = self._owners(caller, pid)
        released = []
        for owner in owners:
            for gpu in gpu_ids if gpu_ids is not None else [None]:
                for gpu_index, knob_name in self.book.release(owner.key, gpu, knob):
                    released.append({"gpu_id": gpu_index, "knob": knob_name, "pid": owner.pid})
        return released

    def _owners(self, caller: Caller, pid: str) -> list:
        from ..leases import Owner

        if pid == "self":
            return [Owner(caller.uid, caller.pid, caller.start_time_ticks or 0, "", "")]
        if pid != "any" and not (pid.isascii() and pid.isdigit() and len(pid) <= 10):
            raise InvalidValue(f"pid must be self, any or a process id, got '{pid[:20]}'")
        owners = {}
        for view in self.book.leases():
            for owner, _ in view.holders:
                if (pid == "any" or owner.pid == int(pid)) and (caller.is_root
                                                                 or owner.uid == caller.uid):
                    owners[owner.key] = owner
        return list(owners.values())

    def _require(self) -> None:
        if self.book is None:
            raise NotEnabled(OFF)
