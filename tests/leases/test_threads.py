"""Many threads, many processes, the same knobs: one holder per knob, and every value back."""

from __future__ import annotations

import threading

from zeusd.leases import events as ev
from zeusd.leases.errors import LeaseBusy, LeaseConflict

from .support import GPU_CLOCKS, POWER, write


def test_concurrent_changes_keep_one_holder_and_restore_everything(book, device, events, children):
    jobs = [children() for _ in range(6)]
    knobs = [(gpu, knob) for gpu in (0, 1) for knob in (POWER, GPU_CLOCKS)]
    outcomes, lock = [], threading.Lock()

    def hammer(i, job):
        for round_ in range(30):
            gpu, knob = knobs[(i + round_) % len(knobs)]
            value = 300_000 + i * 1000 if knob == POWER else (900 + i, 1980)
            try:
                write(book, device, job.pin(), gpu, knob, value)
                result = "ok"
            except (LeaseConflict, LeaseBusy) as exc:
                result = type(exc).__name__
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=hammer, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    views = book.leases()
    assert {(v.gpu_index, v.knob) for v in views} == set(knobs)
    assert all(len(v.holders) == 1 and v.state == "live" for v in views)
    assert {v.captured for v in views if v.knob == POWER} == {700_000}
    assert {v.captured for v in views if v.knob == GPU_CLOCKS} == {None}
    assert outcomes.count("ok") >= len(knobs) and "LeaseConflict" in outcomes
    for job in jobs:
        job.kill()
    events.wait(ev.RESTORED, len(knobs))
    assert not book.has_leases()
    assert all(device.hw[(g, POWER)] == 700_000 and device.hw[(g, GPU_CLOCKS)] is None for g in (0, 1))
