"""The early range check's reads and messages, on simulated GPUs (same errors as NVML)."""

from __future__ import annotations

import pytest

from zeusd import operations as ops
from zeusd.devices.errors import NOT_SUPPORTED
from zeusd.devices.simulated import SimulatedBackend
from zeusd.errors import AggregatedError
from zeusd.operations import GpuChange
from zeusd.service.gpu_manager import GpuManager
from zeusd.service.hardware_ranges import Ranges, RangeCheck, out_of_range, read_ranges, \
    supported_clocks


@pytest.fixture
def backend():
    backend = SimulatedBackend.from_spec("a100x2")
    yield backend
    backend.close()


def test_supported_clocks_cover_every_memory_clock(backend):
    gpu = backend.devices()[0]
    tables = supported_clocks(gpu)
    memory = gpu.get_supported_memory_clocks_mhz()
    assert tables["memory_clocks_mhz"] == memory
    assert list(tables["graphics_clocks_mhz"]) == [str(m) for m in memory]
    every = [mhz for m in memory for mhz in gpu.get_supported_graphics_clocks_mhz(m)]
    assert (tables["min_gpu_clock_mhz"], tables["max_gpu_clock_mhz"]) == (min(every), max(every))
    assert (tables["min_mem_clock_mhz"], tables["max_mem_clock_mhz"]) == (min(memory),
                                                                          max(memory))


def test_a_gpu_without_clock_tables_still_has_its_power_range(backend):
    gpu = backend.devices()[1]
    gpu.inject_fault("nvmlDeviceGetSupportedMemoryClocks", NOT_SUPPORTED)
    ranges = read_ranges(gpu)
    assert ranges.power_limit_mw == gpu.get_power_limit_constraints_mw()
    assert ranges.gpu_clock_mhz is None and ranges.mem_clock_mhz is None
    # Unknown clock ranges: only what any GPU refuses (min above max) is caught early.
    assert out_of_range(GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 1, min_clock_mhz=1, max_clock_mhz=9),
                        ranges) is None
    assert out_of_range(GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 1, min_clock_mhz=9, max_clock_mhz=1),
                        ranges) == "Invalid request: min_clock_mhz 9 is above max_clock_mhz 1"


RANGES = Ranges(power_limit_mw=(100_000, 400_000), gpu_clock_mhz=(210, 1410),
                mem_clock_mhz=(1215, 1593))


@pytest.mark.parametrize("change,message", [
    (GpuChange(ops.SET_POWER_LIMIT, 2, power_limit_mw=99_999),
     "power_limit_mw 99999 is outside the valid range 100000-400000 mW of GPU 2"),
    (GpuChange(ops.SET_POWER_LIMIT, 2, power_limit_mw=400_001),
     "power_limit_mw 400001 is outside the valid range 100000-400000 mW of GPU 2"),
    (GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 0, min_clock_mhz=209, max_clock_mhz=1410),
     "GPU clocks 209-1410 MHz are outside the supported range 210-1410 MHz of GPU 0"),
    (GpuChange(ops.SET_MEM_LOCKED_CLOCKS, 0, min_clock_mhz=1215, max_clock_mhz=1594),
     "memory clocks 1215-1594 MHz are outside the supported range 1215-1593 MHz of GPU 0"),
])
def test_out_of_range_names_the_range(change, message):
    assert out_of_range(change, RANGES) == f"Invalid request: {message}"


@pytest.mark.parametrize("change", [
    GpuChange(ops.SET_POWER_LIMIT, 0, power_limit_mw=100_000),
    GpuChange(ops.SET_POWER_LIMIT, 0, power_limit_mw=400_000),
    GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 0, min_clock_mhz=210, max_clock_mhz=210),
    GpuChange(ops.SET_MEM_LOCKED_CLOCKS, 0, min_clock_mhz=1215, max_clock_mhz=1593),
    GpuChange(ops.SET_PERSISTENCE_MODE, 0, enabled=True),
    GpuChange(ops.RESET_LOCKED_CLOCKS, 0),
])
def test_values_inside_the_range_pass(change):
    assert out_of_range(change, RANGES) is None


def test_range_check_reads_each_gpu_once_and_names_only_the_bad_ones(backend):
    gpus = backend.devices()
    manager = GpuManager(gpus, [g.info() for g in gpus], call_timeout_s=5.0,
                         max_queue_per_gpu=8, max_waiting_per_gpu=4)
    try:
        check = RangeCheck(manager)
        low, high = gpus[0].get_power_limit_constraints_mw()
        before = gpus[0].call_counts().get("nvmlDeviceGetPowerManagementLimitConstraints", 0)
        check.check([GpuChange(ops.SET_POWER_LIMIT, i, power_limit_mw=high) for i in (0, 1)])
        with pytest.raises(AggregatedError) as raised:
            check.check([GpuChange(ops.SET_POWER_LIMIT, i, power_limit_mw=high + 1)
                         for i in (0, 1)])
        assert {i: e.message for i, e in raised.value.errors.items()} == {
            i: f"Invalid request: power_limit_mw {high + 1} is outside the valid range "
               f"{low}-{high} mW of GPU {i}" for i in (0, 1)}
        after = gpus[0].call_counts()["nvmlDeviceGetPowerManagementLimitConstraints"]
        assert after - before == 1  # read once, then remembered
    finally:
        manager.close()
