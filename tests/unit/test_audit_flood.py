"""Denial floods: every denial is counted in exactly one record (issue #8.8).

Driven through the real Auditor, writing its stream records (and, in one test, journal
datagrams on a real socket), with a clock the test moves, so windows open and close exactly
where the test says.
"""

from __future__ import annotations

import io
import socket

import pytest

from tests.support.policy_daemon import parse_audit
from zeusd.audit import Auditor
from zeusd.audit_flood import BURST, DenialCoalescer
from zeusd.identity import Caller
from zeusd.operations import GpuChange
from zeusd.policy import Decision

from tests.unit.test_audit import parse_journal

DENY = Decision(False, "ml-team", "outside the range", True)
ALLOW = Decision(True, "ml-team", "", True)


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class Records:
    """The audit stream, read back as journal-style records (only new ones each time)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.seen = 0

    def __call__(self) -> list[dict[str, str]]:
        text = self.stream.getvalue()
        new, self.seen = text[self.seen:], len(text)
        return [{f"ZEUSD_{k.upper()}" if k != "message" else "MESSAGE": v
                 for k, v in record.items()} for record in parse_audit(new)]


@pytest.fixture
def journal():
    return Records()


def drain(records: Records) -> list[dict[str, str]]:
    return records()


def make(records: Records, clock):
    """An Auditor writing to the test's stream whose coalescer runs on ``clock``."""
    auditor = Auditor(use_journal=False, stream=records.stream)
    auditor._coalescer = DenialCoalescer(auditor._write, clock=clock, background=False)
    return auditor


def deny(auditor, *, uid=1001, pid=4242, gpu=0, mw=650_000, operation="set_power_limit"):
    caller = Caller(transport="unix", pid=pid, uid=uid, gid=uid)
    change = GpuChange(operation, gpu, power_limit_mw=mw)
    auditor.change(caller=caller, change=change, gpu_uuid=f"GPU-{gpu}", decision=DENY,
                   policy_hash="h", old_value=None, outcome="denied")


def total(records, **match) -> int:
    return sum(int(r["ZEUSD_COUNT"]) for r in records
               if all(r.get(k) == v for k, v in match.items()))


def test_a_burst_of_denials_is_counted_exactly(journal):
    clock = Clock()
    auditor = make(journal, clock)
    for i in range(1000):  # one caller stepping through values on 3 GPUs, in one window
        deny(auditor, gpu=i % 3, mw=600_000 + i)
    first = drain(journal)
    assert len(first) == BURST and {r["ZEUSD_COUNT"] for r in first} == {"1"}
    clock.now_s += 1.0
    auditor._coalescer.flush()
    summaries = drain(journal)
    assert len(summaries) == 3  # one per GPU: values do not make a new kind
    assert all(r["ZEUSD_COALESCED"] == "true" and r["ZEUSD_DECISION"] == "deny"
               for r in summaries)
    assert total(first + summaries) == 1000
    last = max(summaries, key=lambda r: r["ZEUSD_NEW_VALUE"])
    assert last["ZEUSD_NEW_VALUE"] == "600999 mW"
    assert "denials like this one in 1.0 s" in last["MESSAGE"]


def test_a_flood_over_many_windows_is_counted_exactly(journal):
    clock = Clock()
    auditor = make(journal, clock)
    records = []
    for window in range(7):
        for i in range(300 + window):
            deny(auditor, gpu=i % 2)
        clock.now_s += 1.0
        records += drain(journal)  # the next denial closes the window without a flush
    auditor.flush()
    records += drain(journal)
    assert total(records) == sum(300 + w for w in range(7))
    assert len(records) <= 7 * (BURST + 2)


def test_each_caller_has_its_own_burst(journal):
    clock = Clock()
    auditor = make(journal, clock)
    for i in range(50):
        deny(auditor, uid=1001)
        deny(auditor, uid=1002, pid=5000 + i)  # a new process per denial: still one caller
    immediate = drain(journal)
    assert total(immediate, ZEUSD_CALLER_UID="1001") == BURST
    assert total(immediate, ZEUSD_CALLER_UID="1002") == BURST
    auditor.flush()  # as at exit: whatever is pending, window over or not
    records = immediate + drain(journal)
    assert total(records, ZEUSD_CALLER_UID="1001") == 50
    assert total(records, ZEUSD_CALLER_UID="1002") == 50


def test_allowed_changes_are_never_coalesced(journal):
    auditor = make(journal, Clock())
    caller = Caller(transport="unix", pid=1, uid=1001, gid=1001)
    for i in range(100):
        auditor.change(caller=caller, change=GpuChange("set_power_limit", 0,
                                                       power_limit_mw=200_000 + i),
                       gpu_uuid="GPU-0", decision=ALLOW, policy_hash="h", old_value="x",
                       outcome="applied")
    records = drain(journal)
    assert len(records) == 100 and total(records) == 100


def test_journal_records_carry_the_counts(tmp_path):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    try:
        clock = Clock()
        auditor = Auditor(use_journal=True, journal_socket=path)
        auditor._coalescer = DenialCoalescer(auditor._write, clock=clock, burst=2,
                                             background=False)
        records = []
        for _ in range(7):
            deny(auditor)
            if len(records) < 2:
                records.append(parse_journal(server.recv(65536)))
        clock.now_s += 1.0
        auditor._coalescer.flush()
        records.append(parse_journal(server.recv(65536)))
    finally:
        server.close()
    assert [r["ZEUSD_COUNT"] for r in records] == ["1", "1", "5"]
    assert records[-1]["ZEUSD_COALESCED"] == "true" and "ZEUSD_COALESCED" not in records[0]


def test_read_denials_are_coalesced_on_the_stream_too():
    stream = io.StringIO()
    clock = Clock()
    auditor = Auditor(use_journal=False, stream=stream)
    auditor._coalescer = DenialCoalescer(auditor._write, clock=clock, background=False)
    caller = Caller(transport="tcp")
    for _ in range(40):
        auditor.read_denied(caller=caller, group="gpu-read", gpu_index=None, decision=DENY,
                            policy_hash="h")
    auditor.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == BURST + 1
    counts = [int(line.split(" count=")[1].split()[0]) for line in lines]
    assert sum(counts) == 40 and counts[-1] == 40 - BURST
    assert "coalesced=true" in lines[-1]


def test_the_background_flusher_writes_the_counts():
    stream = io.StringIO()
    auditor = Auditor(use_journal=False, stream=stream)
    auditor._coalescer = DenialCoalescer(auditor._write, window_s=0.05)
    for _ in range(BURST + 5):
        deny(auditor)
    for _ in range(200):  # the flusher thread runs on its own; wait for it, bounded
        if "coalesced=true" in stream.getvalue():
            break
        threading_event_wait(0.02)
    line = stream.getvalue().splitlines()[-1]
    assert "coalesced=true" in line and " count=5 " in line


def threading_event_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)
