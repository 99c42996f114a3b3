"""The simulated CPUs: counters advance with the modelled power, wrap where RAPL's do, and
the real RaplCpu wrap counting keeps the daemon's values monotonic."""

from __future__ import annotations

import pytest

from zeusd.devices.rapl import RaplCpu
from zeusd.devices.simulated_rapl import (
    PACKAGE_MAX_ENERGY_UJ,
    PowerModel,
    SimulatedRaplCpu,
    simulated_cpus,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_energy_is_the_integral_of_power():
    model = PowerModel(100.0, 30.0, 20.0, 3.0)
    # Over a whole period the sine averages out: exactly base power times time.
    assert model.energy_uj(20.0) == 100.0 * 20.0 * 1_000_000
    # Over a short step the energy is close to power times the step.
    step = model.energy_uj(5.001) - model.energy_uj(5.0)
    assert step == pytest.approx(model.power_w(5.0) * 0.001 * 1_000_000, rel=1e-3)


def test_model_refuses_negative_power():
    with pytest.raises(ValueError, match="swing must be below the base"):
        PowerModel(10.0, 20.0, 5.0, 0.0)


def test_counters_advance_with_time_and_match_modelled_power():
    clock = FakeClock()
    cpu = simulated_cpus(1, clock)[0]
    assert isinstance(cpu, RaplCpu) and cpu.dram_available
    cpu0, dram0 = cpu.read_energy_uj(True, True)
    clock.now_s += 10.0
    cpu1, dram1 = cpu.read_energy_uj(True, True)
    assert 60 * 10e6 <= cpu1 - cpu0 <= 120 * 10e6  # 90 W +- 30 W for 10 s
    assert 14 * 10e6 <= dram1 - dram0 <= 22 * 10e6  # 18 W +- 4 W


def test_raw_counter_wraps_and_the_daemon_value_stays_monotonic():
    clock = FakeClock()
    max_uj = 5_000_000  # wraps every ~50 ms of 100 W: many wraps below
    cpu = SimulatedRaplCpu(0, PowerModel(100.0, 10.0, 1.0, 0.0), None, clock,
                           package_max_uj=max_uj)
    raws, values = [], []
    for _ in range(40):
        clock.now_s += 0.02  # read more than once per wrap period, as the daemon does
        raws.append(cpu._raw_uj(cpu.package))
        values.append(cpu.read_cpu_energy_uj())
    assert all(0 <= r < max_uj for r in raws)
    assert any(b < a for a, b in zip(raws, raws[1:])), "the raw counter never wrapped"
    assert all(b > a for a, b in zip(values, values[1:]))
    # What the daemon reports grew by the modelled energy, wraps included.
    assert values[-1] - values[0] == pytest.approx(100.0 * 0.78 * 1e6, rel=0.05)


def test_cpu_without_dram_model_reports_none():
    cpu = SimulatedRaplCpu(0, PowerModel(50.0, 5.0, 4.0, 0.0), None, FakeClock())
    assert not cpu.dram_available
    assert cpu.read_energy_uj(True, True)[1] is None


def test_default_range_is_the_hardware_one_and_counts_are_checked():
    cpus = simulated_cpus(3, FakeClock())
    assert [c.index for c in cpus] == [0, 1, 2]
    assert cpus[0].package.max_energy_uj == PACKAGE_MAX_ENERGY_UJ
    for bad in (0, 65):
        with pytest.raises(ValueError, match="simulated CPUs must be 1-64"):
            simulated_cpus(bad)
