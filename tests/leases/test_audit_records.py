"""One audit record per lease event, through zeusd's real Auditor (written as lines here)."""

from __future__ import annotations

import io
import os

import pytest

from zeusd.audit import Auditor
from zeusd.leases import events as ev
from zeusd.leases.errors import LeaseConflict

from .support import GPU_CLOCKS, POWER, Events, new_book, write


def test_each_event_is_one_audit_record(lease_dir, device, children):
    stream, seen = io.StringIO(), Events()
    to_audit = ev.to_auditor(Auditor(use_journal=False, stream=stream))

    def on_event(event):
        to_audit(event)
        seen(event)

    book = new_book(lease_dir, device, on_event)
    try:
        job, other = children(), children()
        write(book, device, job.pin(), 0, POWER, 300_000)
        write(book, device, job.pin(), 0, GPU_CLOCKS, (900, 1980))
        with pytest.raises(LeaseConflict):
            book.change(other.pin(), 0, POWER, 250_000)
        job.kill()
        seen.wait(ev.RESTORED, 2)
    finally:
        book.stop(keep_leases=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(seen.all) == 5
    opened, conflict = lines[0], lines[2]
    assert "event=lease_opened " in opened and " captured=700000 " in opened
    assert f" holder_pid={job.pid} " in opened and f" holder_uid={os.getuid()} " in opened
    assert "event=lease_conflict " in conflict and f" other_pid={other.pid} " in conflict
    clocks = next(line for line in lines[3:] if "gpu_locked_clocks" in line)
    assert "event=lease_restored " in clocks and "set_value=\"[900, 1980]\"" in clocks
