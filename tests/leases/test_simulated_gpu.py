"""The lease book on the simulated GPU backend (same units, errors and setters as NVML)."""

from __future__ import annotations

from zeusd.devices.simulated import SimulatedBackend
from zeusd.leases import events as ev
from zeusd.leases.device import NO_READING, GpuKnobs

from .support import GPU_CLOCKS, MEM_CLOCKS, PERSISTENCE, POWER, Events, new_book


def _set(book, knobs, pinned, gpu, knob, value):
    with book.change(pinned, gpu, knob, value):
        knobs.apply(gpu, knob, value)


def test_sigkill_puts_a_simulated_h200_back(lease_dir, children):
    gpus = SimulatedBackend.from_spec("h200x2").devices()
    gpus[0].set_power_limit_mw(500_000)  # the administrator's value, set before the job
    knobs, events = GpuKnobs(gpus), Events()
    before = gpus[0].state()
    book = new_book(lease_dir, knobs, events)
    try:
        job = children()
        _set(book, knobs, job.pin(), 0, POWER, 300_000)
        _set(book, knobs, job.pin(), 0, GPU_CLOCKS, (990, 1980))
        _set(book, knobs, job.pin(), 0, MEM_CLOCKS, (3201, 3201))
        _set(book, knobs, job.pin(), 0, PERSISTENCE, not before["persistence_mode"])
        assert gpus[0].state()["power_limit_mw"] == 300_000
        job.kill()
        events.wait(ev.RESTORED, 4)
        assert gpus[0].state() == before
        assert gpus[1].state()["power_limit_mw"] == gpus[1].profile.default_power_limit_mw
    finally:
        book.stop(keep_leases=True)


def test_device_adapter_reads_what_nvml_can_read():
    gpu = SimulatedBackend.from_spec("h200").devices()[0]
    knobs = GpuKnobs([gpu])
    assert knobs.read(0, POWER) == gpu.get_power_limit_mw()
    assert knobs.read(0, PERSISTENCE) is gpu.get_persistence_mode()
    assert knobs.read(0, GPU_CLOCKS) is NO_READING and knobs.read(0, MEM_CLOCKS) is NO_READING
