"""The lease book with real child processes and real pidfds, on a dict-backed fake device."""

from __future__ import annotations

import os

import pytest

from zeusd.api.errors import body_of, status_of
from zeusd.leases import events as ev
from zeusd.leases.errors import LeaseBusy, LeaseConflict

from .support import GPU_CLOCKS, MEM_CLOCKS, PERSISTENCE, POWER, new_book, wait_until, write


def test_sigkill_restores_every_knob_exactly(book, device, events, children):
    device.hw[(0, POWER)] = 512_345
    child = children()
    write(book, device, child.pin(), 0, POWER, 300_000)
    write(book, device, child.pin(), 0, GPU_CLOCKS, (900, 1980))
    write(book, device, child.pin(), 0, MEM_CLOCKS, (1593, 2619))
    write(book, device, child.pin(), 0, PERSISTENCE, True)
    assert [e.kind for e in events.all] == [ev.OPENED] * 4
    child.kill()
    events.wait(ev.RESTORED, 4)
    assert device.hw[(0, POWER)] == 512_345
    assert device.hw[(0, PERSISTENCE)] is False
    # clocks that were not locked before are reset (value None = reset), not re-locked
    assert (0, GPU_CLOCKS, None) in device.applied and (0, MEM_CLOCKS, None) in device.applied
    assert device.hw[(0, GPU_CLOCKS)] is None and device.hw[(0, MEM_CLOCKS)] is None
    assert not book.has_leases() and book.leases() == []


def test_restored_event_names_holder_and_values(book, device, events, children):
    child = children()
    write(book, device, child.pin(), 1, POWER, 300_000)
    child.kill()
    event = events.wait(ev.RESTORED)
    assert (event.holder.pid, event.holder.uid) == (child.pid, os.getuid())
    assert event.fields() == {
        "event": "restored", "gpu_index": 1, "knob": POWER, "captured": 700_000,
        "set_value": 300_000, "current": 300_000, "holder_uid": os.getuid(),
        "holder_pid": child.pid, "holder_command": event.holder.comm,
        "reason": "the owner exited", "since_s": event.since_s}
    assert event.message().startswith("lease restored: GPU 1 power_limit captured 700000 mW")


def test_locked_clocks_before_are_locked_again(book, device, events, children):
    admin, job = children(), children()
    write(book, device, admin.pin(), 0, GPU_CLOCKS, (1200, 1500), restore_on_exit=False)
    write(book, device, job.pin(), 0, GPU_CLOCKS, (900, 1980))
    assert book.leases()[0].captured == (1200, 1500)
    job.kill()
    events.wait(ev.RESTORED)
    assert device.applied[-1] == (0, GPU_CLOCKS, (1200, 1500))


def test_same_owner_extends_and_keeps_first_capture(book, device, events, children):
    child = children()
    write(book, device, child.pin(), 0, POWER, 300_000)
    write(book, device, child.pin(), 0, POWER, 400_000)
    assert events.kinds() == [ev.OPENED, ev.EXTENDED]
    (view,) = book.leases()
    assert (view.captured, view.set_value) == (700_000, 400_000)
    child.kill()
    events.wait(ev.RESTORED)
    assert device.hw[(0, POWER)] == 700_000


def test_conflict_names_holder_and_changes_nothing(book, device, events, children):
    first, second = children(), children()
    write(book, device, first.pin(), 0, POWER, 300_000)
    applied_before = list(device.applied)
    with pytest.raises(LeaseConflict) as err:
        book.change(second.pin(), 0, POWER, 250_000)
    assert status_of(err.value) == 409
    holder = f"uid {os.getuid()} pid {first.pid} ({err.value.holder.comm})"
    assert err.value.message.startswith(f"GPU 0 power_limit is held by {holder} since ")
    assert err.value.message.endswith("; it is restored when that process exits")
    assert body_of(err.value)["holder_pid"] == first.pid
    assert body_of(err.value)["holder_uid"] == os.getuid()
    conflict = events.of(ev.CONFLICT)[0]
    assert (conflict.holder.pid, conflict.other.pid) == (first.pid, second.pid)
    assert device.applied == applied_before and device.hw[(0, POWER)] == 300_000
    assert book.leases()[0].set_value == 300_000
    first.kill()
    events.wait(ev.RESTORED)
    write(book, device, second.pin(), 0, POWER, 250_000)  # the knob is free again
    assert book.leases()[0].captured == 700_000


def test_override_carries_the_original_capture(book, device, events, children):
    job, root = children(), children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    write(book, device, root.pin(), 0, POWER, 450_000, override=True)
    override = events.of(ev.OVERRIDE)[0]
    assert (override.holder.pid, override.other.pid) == (job.pid, root.pid)
    (view,) = book.leases()
    assert [h.pid for h, _ in view.holders] == [root.pid]
    assert view.captured == 700_000
    job.kill()  # no longer a holder: nothing happens
    root.kill()
    events.wait(ev.RESTORED)
    assert device.hw[(0, POWER)] == 700_000
    assert len(events.of(ev.RESTORED)) == 1


def test_override_by_a_permanent_change_drops_the_lease(book, device, events, children):
    job = children()
    write(book, device, job.pin(), 0, GPU_CLOCKS, (900, 1980))
    write(book, device, None, 0, GPU_CLOCKS, (1200, 1500), override=True)  # e.g. TCP, root token
    assert events.of(ev.DROPPED)[0].reason.startswith("overridden by a change")
    assert not book.has_leases()
    job.kill()
    assert device.hw[(0, GPU_CLOCKS)] == (1200, 1500)


def test_tcp_caller_takes_no_lease_but_meets_conflicts(book, device, events, children):
    write(book, device, None, 0, POWER, 300_000)
    assert not book.has_leases() and events.all == []
    job = children()
    write(book, device, job.pin(), 0, POWER, 400_000)
    with pytest.raises(LeaseConflict):
        book.change(None, 0, POWER, 500_000)
    assert events.of(ev.CONFLICT)[0].other is None


def test_restore_on_exit_false_takes_no_lease(book, device, events, children, lease_dir):
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000, restore_on_exit=False)
    assert not book.has_leases() and os.listdir(lease_dir) == []
    job.kill()
    assert device.hw[(0, POWER)] == 300_000


def test_sharing_needs_both_sides_and_restores_after_the_last(book, device, events, children):
    a, b, c = children(), children(), children()
    write(book, device, a.pin(), 0, POWER, 300_000, may_share=True)
    write(book, device, b.pin(), 0, POWER, 350_000, may_share=True)
    with pytest.raises(LeaseConflict):
        book.change(c.pin(), 0, POWER, 400_000)  # c's rule does not allow sharing
    assert events.of(ev.SHARED)[0].holder.pid == b.pid
    a.kill()
    wait_until(lambda: len(book.leases()[0].holders) == 1)  # a's exit seen; b still holds it
    b_view = book.leases()[0]
    assert [h.pid for h, _ in b_view.holders] == [b.pid]
    assert device.hw[(0, POWER)] == 350_000
    b.kill()
    events.wait(ev.RESTORED)
    assert device.hw[(0, POWER)] == 700_000


def test_admin_change_survives_the_owner_exit(book, device, events, children):
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    device.hw[(0, POWER)] = 650_000  # nvidia-smi -pl by an administrator
    job.kill()
    skipped = events.wait(ev.RESTORE_SKIPPED)
    assert skipped.current == 650_000 and skipped.captured == 700_000
    assert skipped.reason == "the owner exited, but the value was changed by someone else"
    assert device.hw[(0, POWER)] == 650_000 and device.applied == []


def test_early_release_restores_now(book, device, events, children):
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    write(book, device, job.pin(), 1, POWER, 300_000)
    assert book.release(job.key, gpu_index=0) == [(0, POWER)]
    assert events.of(ev.RELEASED)[0].gpu_index == 0
    assert device.hw[(0, POWER)] == 700_000 and device.hw[(1, POWER)] == 300_000
    assert book.release(job.key) == [(1, POWER)]
    assert not book.has_leases()
    assert book.release(job.key) == []


def test_failed_hardware_write_opens_no_lease(book, device, events, children, lease_dir):
    job = children()
    with pytest.raises(RuntimeError):
        with book.change(job.pin(), 0, POWER, 300_000):
            raise RuntimeError("NVML said no")
    assert not book.has_leases() and os.listdir(lease_dir) == [] and events.all == []


def test_failed_extension_keeps_the_lease_as_it_was(book, device, events, children):
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    with pytest.raises(RuntimeError):
        with book.change(job.pin(), 0, POWER, 400_000):
            raise RuntimeError("NVML said no")
    (view,) = book.leases()
    assert (view.set_value, view.state) == (300_000, "live")


def test_timed_out_write_keeps_both_values_as_ours(book, device, events, children):
    job = children()
    write(book, device, job.pin(), 0, GPU_CLOCKS, (900, 1980))
    change = book.change(job.pin(), 0, GPU_CLOCKS, (1000, 1100))
    change.abort(maybe_applied=True)  # an NVML call that ran past --nvml-timeout-s
    job.kill()
    events.wait(ev.RESTORED)  # the daemon cannot tell which it is: it restores
    assert device.applied[-1] == (0, GPU_CLOCKS, None)


def test_change_in_flight_makes_the_knob_busy(book, device, events, children):
    job, other = children(), children()
    change = book.change(job.pin(), 0, POWER, 300_000)
    with pytest.raises(LeaseBusy) as err:
        book.change(other.pin(), 0, POWER, 250_000)
    assert status_of(err.value) == 409
    assert err.value.message == "GPU 0 power_limit is being changed; try again"
    change.abort()


def test_owner_exit_during_the_write_restores_after_commit(book, device, events, children):
    job = children()
    change = book.change(job.pin(), 0, POWER, 300_000)
    device.hw[(0, POWER)] = 300_000
    job.kill()
    wait_until(lambda: book._leases[(0, POWER)].orphaned)  # the watcher has seen the exit
    change.commit()
    events.wait(ev.RESTORED)
    assert events.kinds() == [ev.OPENED, ev.RESTORED]
    assert device.hw[(0, POWER)] == 700_000 and not book.has_leases()


def test_an_exited_owner_cannot_open_a_lease(book, device, children):
    from zeusd.leases.owner import OwnerGone

    job = children()
    job.kill()
    with pytest.raises(OwnerGone):
        job.pin()


def test_owner_limit_answers_busy(lease_dir, device, events, children):
    book = new_book(lease_dir, device, events, max_owners=1)
    try:
        write(book, device, children().pin(), 0, POWER, 300_000)
        with pytest.raises(LeaseBusy) as err:
            book.change(children().pin(), 1, POWER, 300_000)
        assert err.value.message == "1 processes already hold leases; try later"
        assert book.leases()[0].gpu_index == 0
    finally:
        book.stop(keep_leases=True)


def test_failed_restore_is_reported_and_ends_the_lease(book, device, events, children):
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    device.fail_apply = RuntimeError("GPU is lost")
    job.kill()
    failed = events.wait(ev.RESTORE_FAILED)
    assert failed.reason == "the owner exited: GPU is lost"
    assert not book.has_leases()


def test_listing_shows_holder_values_and_age(lease_dir, device, events, children):
    now = [1000.0]
    book = new_book(lease_dir, device, events, clock=lambda: now[0])
    try:
        job = children("--job-name", "x" * 400)
        write(book, device, job.pin(), 1, POWER, 300_000)
        now[0] = 1042.5
        (view,) = book.leases()
        owner, since = view.holders[0]
        assert (view.gpu_index, view.knob, view.captured, view.set_value) == (1, POWER, 700_000, 300_000)
        assert (owner.pid, owner.uid, since, view.age_s) == (job.pid, os.getuid(), 1000.0, 42.5)
        assert owner.comm == "python3" or owner.comm.startswith("python")
        assert len(owner.cmdline) == 256 and owner.cmdline.endswith("...")
    finally:
        book.stop(keep_leases=True)


def test_clean_stop_restores_everything(lease_dir, device, events, children):
    book = new_book(lease_dir, device, events)
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    write(book, device, job.pin(), 1, PERSISTENCE, True)
    book.stop(keep_leases=False)
    assert device.hw[(0, POWER)] == 700_000 and device.hw[(1, PERSISTENCE)] is False
    assert os.listdir(lease_dir) == [] and len(events.of(ev.RESTORED)) == 2


def test_bad_values_are_refused_before_anything(book, children):
    from zeusd.leases.knobs import BadValue

    for knob, value in [(POWER, "300"), (POWER, True), (GPU_CLOCKS, (2000, 1000)),
                        (PERSISTENCE, 1), ("fan_speed", 1)]:
        with pytest.raises(BadValue):
            book.change(children().pin(), 0, knob, value)
    assert not book.has_leases()


def test_a_holder_that_just_exited_is_busy_not_a_conflict(book, device, events, children):
    job, other = children(), children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    book._watcher.unwatch(book._owners[job.key].pinned.pidfd)  # hold the watcher back
    job.kill()
    with pytest.raises(LeaseBusy) as err:
        book.change(other.pin(), 0, POWER, 250_000)
    assert err.value.message == "GPU 0 power_limit is being restored; try again"
    assert events.of(ev.CONFLICT) == []
