"""A fixed set of audit inputs and the exact records they produce (the byte-for-byte contract).

``records(mode)`` drives one Auditor through every kind of record: allowed, denied, failed and
dropped changes of each operation, denied reads, events (multi-line and hostile values), Unix,
root, unknown, token and anonymous TCP callers, and a denial flood with its coalesced records.
mode "journal": the datagrams a fake journal (a real AF_UNIX datagram socket) received.
mode "file": the lines written to a real file (the fd path); mode "text": to a StringIO.
tests/unit/data/audit_golden.txt holds what they were when the format was fixed; regenerate it
only for an intended format change: python -m tests.unit.audit_golden --write
"""

from __future__ import annotations

import ast
import io
import os
import socket
import sys
import tempfile
from pathlib import Path

from zeusd import operations as ops
from zeusd.audit import Auditor
from zeusd.audit_flood import DenialCoalescer
from zeusd.identity import UNKNOWN_UNIX, Caller
from zeusd.operations import GpuChange
from zeusd.policy import Decision

GOLDEN = Path(__file__).parent / "data" / "audit_golden.txt"
UNIT_CALLER = Caller("unix", pid=4242, uid=1001, gid=1001, groups=(1001,), start_time_ticks=77)
NO_CGROUP_CALLER = Caller("unix", pid=5151, uid=1002, gid=100, start_time_ticks=9)
ROOT = Caller("unix", pid=1, uid=0, gid=0, start_time_ticks=1)
TOKEN = Caller("tcp", token_subject="alice", token_scopes=("gpu-control",))
HOSTILE_TOKEN = Caller("tcp", token_subject='zoë "x"=\ny\x01')
ANONYMOUS = Caller("tcp")
CALLERS = (UNIT_CALLER, NO_CGROUP_CALLER, ROOT, UNKNOWN_UNIX, TOKEN, HOSTILE_TOKEN, ANONYMOUS)
CHANGES = (GpuChange(ops.SET_POWER_LIMIT, 0, power_limit_mw=300000),
           GpuChange(ops.SET_PERSISTENCE_MODE, 1, enabled=True),
           GpuChange(ops.SET_PERSISTENCE_MODE, 1, enabled=False),
           GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 2, min_clock_mhz=1000, max_clock_mhz=1980),
           GpuChange(ops.RESET_GPU_LOCKED_CLOCKS, 3),
           GpuChange(ops.SET_MEM_LOCKED_CLOCKS, 0, min_clock_mhz=2619, max_clock_mhz=2619),
           GpuChange(ops.RESET_MEM_LOCKED_CLOCKS, 1),
           GpuChange(ops.RESET_LOCKED_CLOCKS, 2))
ALLOW = Decision(True, "ml-team", "", False)
ALLOW_RESTORE = Decision(True, "root", "", True)
DENY = Decision(False, "ml-team", "power_limit_mw 650000 is outside the range 200000-450000 "
                "that rule 'ml-team' allows", True, {"min_power_limit_mw": 200000})
OUTCOMES = ((ALLOW, "300000 mW", "applied"), (ALLOW_RESTORE, None, "applied"),
            (ALLOW, "enabled", "failed: NVML error: Not Supported"),
            (ALLOW, None, "dropped: the daemon is shutting down"),
            (DENY, "250000 mW", "denied"), (DENY, None, "denied"))


class _Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _drive(auditor: Auditor, clock: _Clock, flush) -> None:
    """Every call, then ``flush()`` (what was written since the last flush is one step)."""
    for caller in CALLERS:
        for change in CHANGES:
            for decision, old, outcome in OUTCOMES:
                auditor.change(caller=caller, change=change, gpu_uuid=f"GPU-{change.gpu_index}",
                               decision=decision, policy_hash="f00d", old_value=old,
                               outcome=outcome)
                flush()
                clock.now_s += 1.0  # a fresh flood window for each, so none is coalesced
        for gpu_index in (None, 3):
            auditor.read_denied(caller=caller, group=ops.GPU_READ, gpu_index=gpu_index,
                                decision=Decision(False, "default", "gpu-read is not allowed",
                                                  True), policy_hash="beef")
            flush()
        clock.now_s += 1.0
    auditor.event("policy abc in force", event="policy", policy_hash="abc", rules=3,
                  none=None)
    auditor.event("policy rejected:\nline two", event="policy", priority=3, detail="a\nb",
                  path="/etc/zeusd/policy.toml")
    auditor.event("lease 7 restored", event="lease", **{"gpu-index": 0, "old value": "x y"})
    flush()
    _flood(auditor, clock, flush)


def _flood(auditor: Auditor, clock: _Clock, flush) -> None:
    """Past the burst, denials are counted per kind; the window's end writes the counts."""
    for i in range(14):
        change = CHANGES[0] if i % 3 else CHANGES[3]
        for caller in (UNIT_CALLER, TOKEN):
            auditor.change(caller=caller, change=change, gpu_uuid="GPU-0", decision=DENY,
                           policy_hash="f00d", old_value=f"{i} mW", outcome="denied")
        clock.now_s += 0.01
        flush()
    clock.now_s += 0.5
    auditor.read_denied(caller=UNIT_CALLER, group=ops.CPU_READ, gpu_index=None,
                        decision=DENY, policy_hash="f00d")  # counted in the same window
    flush()
    clock.now_s += 2.0
    auditor.change(caller=UNIT_CALLER, change=CHANGES[0], gpu_uuid="GPU-0", decision=DENY,
                   policy_hash="f00d", old_value=None, outcome="denied")  # ends its window
    flush()
    auditor.flush()  # at exit: the token caller's counts
    flush()


def _proc_root(tmp: str) -> str:
    os.makedirs(f"{tmp}/proc/4242")
    with open(f"{tmp}/proc/4242/cgroup", "w", encoding="utf-8") as file:
        file.write("0::/user.slice/user-1001.slice/user@1001.service/app.slice/train.service\n")
    return f"{tmp}/proc"


def _auditor(clock: _Clock, **kwargs) -> Auditor:
    auditor = Auditor(**kwargs)
    auditor._coalescer = DenialCoalescer(auditor._write, clock=clock, background=False)
    return auditor


def records(mode: str) -> list[str]:
    """Each record (journal: the datagram's repr; otherwise the line) in order."""
    clock, out = _Clock(), []
    with tempfile.TemporaryDirectory() as tmp:
        proc_root = _proc_root(tmp)
        if mode == "journal":
            server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            server.bind(f"{tmp}/journal.sock")
            server.setblocking(False)
            auditor = _auditor(clock, use_journal=True, journal_socket=f"{tmp}/journal.sock",
                               proc_root=proc_root)

            def flush() -> None:
                while True:
                    try:
                        out.append(repr(server.recv(65536)))
                    except BlockingIOError:
                        return
            _drive(auditor, clock, flush)
            server.close()
            return out
        stream = open(f"{tmp}/audit.log", "w+", encoding="utf-8") if mode == "file" \
            else io.StringIO()
        auditor = _auditor(clock, use_journal=False, stream=stream, proc_root=proc_root)
        _drive(auditor, clock, lambda: None)
        stream.seek(0)
        text = stream.read()
        stream.close()
        return text.splitlines()


def golden() -> dict[str, list[str]]:
    """The stored records: {"journal": [...], "line": [...]}."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        elif line and not line.startswith("# "):
            current.append(ast.literal_eval(line))
    return sections


def _write() -> None:
    lines = ["# Audit records for tests/unit/audit_golden.py's inputs, one Python literal a "
             "line.", "## journal"]
    lines += [repr(record) for record in records("journal")]
    lines += ["## line"] + [repr(record) for record in records("file")]
    GOLDEN.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write()
