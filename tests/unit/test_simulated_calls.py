"""The simulated backend counts NVML calls per GPU and function (tests count driver calls)."""

from __future__ import annotations

import pytest

from zeusd.devices.errors import INVALID_ARGUMENT, NO_PERMISSION, NvmlError
from zeusd.devices.simulated import SimulatedBackend


def test_each_call_is_counted_on_its_own_gpu_failed_ones_too():
    gpu0, gpu1 = SimulatedBackend.from_spec("h200x2").devices()
    assert gpu0.call_counts() == {} and gpu1.call_counts() == {}
    for _ in range(3):
        gpu0.get_power_limit_mw()
    gpu0.get_total_energy_mj()
    with pytest.raises(NvmlError) as excinfo:
        gpu0.set_power_limit_mw(1)  # below the range: the driver is still called
    assert excinfo.value.code == INVALID_ARGUMENT
    gpu1.inject_fault("nvmlDeviceGetPersistenceMode", "NO_PERMISSION")
    with pytest.raises(NvmlError) as excinfo:
        gpu1.get_persistence_mode()
    assert excinfo.value.code == NO_PERMISSION
    assert gpu0.call_counts() == {"nvmlDeviceGetPowerManagementLimit": 3,
                                  "nvmlDeviceGetTotalEnergyConsumption": 1,
                                  "nvmlDeviceSetPowerManagementLimit": 1}
    assert gpu1.call_counts() == {"nvmlDeviceGetPersistenceMode": 1}


def test_state_is_no_driver_call_and_counts_are_a_copy():
    (gpu,) = SimulatedBackend.from_spec("h200").devices()
    gpu.state()
    counts = gpu.call_counts()
    counts["nvmlDeviceGetPowerManagementLimit"] = 99
    assert gpu.call_counts() == {}
