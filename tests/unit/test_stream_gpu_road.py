"""Stream polls reach a GPU through the GPU manager: beside its command queue (a backlog
of writes never stalls a stream) but with the same health record and hang detection."""

from __future__ import annotations

import threading
import time

import pytest

from zeusd.devices.base import GpuInfo
from zeusd.devices.errors import GPU_IS_LOST, NvmlError
from zeusd.errors import GpuLost, GpuTimedOut
from zeusd.service.gpu_manager import GpuManager
from zeusd.service.streams import GpuPowerStep, ManagedGpuPower


class GateGpu:
    """A GPU whose calls block while their gate is closed, or raise what they are told."""

    def __init__(self) -> None:
        self.index = 0
        self.power_gate = threading.Event()
        self.power_gate.set()
        self.write_gate = threading.Event()
        self.write_gate.set()
        self.power_error: Exception | None = None
        self.power_calls = 0
        self.writes = 0

    def get_power_mw(self) -> int:
        self.power_calls += 1
        self.power_gate.wait(10)
        if self.power_error is not None:
            raise self.power_error
        return 75_000

    def set_power_limit_mw(self, mw: int) -> None:
        self.write_gate.wait(10)
        self.writes += 1


def info() -> GpuInfo:
    return GpuInfo(index=0, name="gate", pci_address="00000000:01:00.0", uuid="GPU-gate",
                   cumulative_energy_available=True)


def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def rig():
    gpu = GateGpu()
    manager = GpuManager([gpu], [info()], call_timeout_s=0.2)
    try:
        yield gpu, manager, ManagedGpuPower(manager, 0)
    finally:
        gpu.power_gate.set()
        gpu.write_gate.set()
        manager.close()


def test_a_poll_does_not_queue_behind_writes():
    gpu = GateGpu()
    manager = GpuManager([gpu], [info()], call_timeout_s=10.0)
    power = ManagedGpuPower(manager, 0)
    gpu.write_gate.clear()
    for _ in range(3):  # one write running (blocked), two queued behind it
        manager.submit(0, lambda d: d.set_power_limit_mw(1), "set_power_limit")
    assert power.get_power_mw() == 75_000
    assert gpu.writes == 0
    gpu.write_gate.set()
    wait_until(lambda: gpu.writes == 3)
    manager.close()


def test_a_hung_poll_makes_the_gpu_hung_for_requests_and_discover(rig):
    gpu, manager, power = rig
    gpu.power_gate.clear()
    poll = threading.Thread(target=power.get_power_mw, daemon=True)
    poll.start()
    wait_until(lambda: manager.health()[0]["state"] == "hung")
    assert manager.health()[0]["error"].startswith("NVML call get_power (stream) has not "
                                                   "returned for ")
    with pytest.raises(GpuTimedOut, match=r"^GPU 0 is not responding: NVML call get_power "
                                          r"\(stream\) has not returned for \d+ s; nothing "
                                          r"was queued$"):
        manager.run_one(0, lambda d: d.set_power_limit_mw(1), "set_power_limit")
    with pytest.raises(GpuTimedOut):  # and the next poll does not call the GPU either
        power.get_power_mw()
    assert (gpu.writes, gpu.power_calls) == (0, 1)
    gpu.power_gate.set()
    poll.join(5)
    assert manager.health()[0] == {"state": "ok"}
    assert power.get_power_mw() == 75_000


def test_a_gpu_lost_in_a_poll_is_lost_for_everyone(rig):
    gpu, manager, power = rig
    gpu.power_error = NvmlError(GPU_IS_LOST, "nvmlDeviceGetPowerUsage")
    step = GpuPowerStep(power)
    assert step.tick() is None
    assert manager.health()[0] == {"state": "lost", "error": gpu.power_error.message}
    with pytest.raises(GpuLost, match=r"^GPU 0 is lost \(GPU is lost in "
                                      r"nvmlDeviceGetPowerUsage\)"):
        manager.run_one(0, lambda d: d.set_power_limit_mw(1), "set_power_limit")
    assert step.tick() is None  # not called again: a lost GPU stays silent
    assert (gpu.power_calls, gpu.writes) == (1, 0)


def test_a_gpu_hung_by_a_command_is_not_polled(rig):
    gpu, manager, power = rig
    gpu.write_gate.clear()
    manager.submit(0, lambda d: d.set_power_limit_mw(1), "set_power_limit")
    wait_until(lambda: manager.health()[0]["state"] == "hung")
    with pytest.raises(GpuTimedOut, match=r"NVML call set_power_limit has not returned"):
        power.get_power_mw()
    assert GpuPowerStep(power).tick() is None
    assert gpu.power_calls == 0
