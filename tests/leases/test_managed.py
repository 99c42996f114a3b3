"""The book through the real GPU manager, the way the write path will use it: the capture read
and the restores take their turn in each GPU's worker; commit runs on the worker itself."""

from __future__ import annotations

import pytest

from zeusd.devices.loader import open_backend
from zeusd.leases import events as ev
from zeusd.leases.device import ManagedKnobs, apply_knob
from zeusd.service.gpu_manager import GpuManager

from .support import GPU_CLOCKS, POWER, Events, new_book, wait_until


@pytest.fixture
def rig(lease_dir):
    backend = open_backend("simulated", "h200x2")
    devices = backend.devices()
    manager = GpuManager(devices, [d.info() for d in devices], call_timeout_s=10)
    events = Events()
    book = new_book(lease_dir, ManagedKnobs(manager), events)
    try:
        yield book, manager, devices, events
    finally:
        book.stop(keep_leases=False)
        manager.close()
        backend.close()


def _write_on_worker(book, manager, pinned, gpu, knob, value, before_commit=None):
    change = book.change(pinned, gpu, knob, value)  # HTTP thread: 409 comes from here

    def job(device):  # the GPU's worker: hardware write, then commit or abort
        try:
            apply_knob(device, knob, value)
        except BaseException:
            change.abort()
            raise
        if before_commit is not None:
            before_commit()
        change.commit()

    manager.run_one(gpu, job, f"set {knob}")


def test_restore_goes_through_the_gpu_worker(rig, children):
    book, manager, devices, events = rig
    job = children()
    _write_on_worker(book, manager, job.pin(), 1, POWER, 300_000)
    _write_on_worker(book, manager, job.pin(), 1, GPU_CLOCKS, (990, 1980))
    job.kill()
    events.wait(ev.RESTORED, 2)
    state = devices[1].state()
    assert state["power_limit_mw"] == devices[1].profile.default_power_limit_mw
    assert state["gpu_locked_clocks_mhz"] is None


def test_owner_exit_during_the_write_does_not_deadlock_the_worker(rig, children):
    book, manager, devices, events = rig
    job = children()

    def die_and_wait():  # the owner dies while its write is on the worker
        job.kill()
        wait_until(lambda: book._leases[(0, POWER)].orphaned)

    _write_on_worker(book, manager, job.pin(), 0, POWER, 300_000, before_commit=die_and_wait)
    events.wait(ev.RESTORED)
    assert devices[0].state()["power_limit_mw"] == devices[0].profile.default_power_limit_mw


def test_a_refused_hardware_write_leaves_no_lease(rig, children):
    book, manager, devices, events = rig
    with pytest.raises(Exception) as err:
        _write_on_worker(book, manager, children().pin(), 0, POWER, 1_000)  # below the range
    assert "Invalid Argument" in str(err.value)
    assert not book.has_leases() and events.all == []
