"""Simulated CPU packages for machines without RAPL (the demo, laptops, CI, VMs).

Each simulated package is a real ``RaplCpu`` whose raw counters come from a
power model instead of sysfs: package and DRAM power move smoothly
(``base + swing * sin(...)``), the raw ``energy_uj`` is the exact integral of
that power since start-up plus an offset, taken modulo the domain's
``max_energy_range_uj`` -- so it wraps exactly where the hardware's does, and
``RaplCpu``'s own wrap counting (the code path real RAPL takes) turns it back
into a monotonic counter. No thread and no files: a read computes the counter
for "now", so every read is current and the daemon's reads, power windows,
keepalive and streams all behave as on a real machine.

Why not a generated powercap tree under /tmp? Its counters would need a
writer thread, would be stale between writes, and would leave files behind;
the tree layout itself is already exercised by the tests' fake RAPL trees.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from .rapl import RaplCpu, RaplDomain

# What a typical Intel server reports (uJ); the counters wrap here.
PACKAGE_MAX_ENERGY_UJ = 262_143_328_850
DRAM_MAX_ENERGY_UJ = 65_712_999_613
MAX_SIMULATED_CPUS = 64


class PowerModel:
    """Power ``base_w + swing_w * sin(2*pi*(t + phase_s)/period_s)`` and its exact integral."""

    def __init__(self, base_w: float, swing_w: float, period_s: float, phase_s: float) -> None:
        if not 0 <= swing_w < base_w:
            raise ValueError("the swing must be below the base power (power stays positive)")
        self.base_w = base_w
        self.swing_w = swing_w
        self.omega = 2 * math.pi / period_s
        self.phase_s = phase_s

    def power_w(self, t_s: float) -> float:
        return self.base_w + self.swing_w * math.sin(self.omega * (t_s + self.phase_s))

    def energy_uj(self, t_s: float) -> int:
        """Energy from 0 to ``t_s``; grows strictly, since power is always positive."""
        cos_term = math.cos(self.omega * (t_s + self.phase_s)) - math.cos(self.omega * self.phase_s)
        joules = self.base_w * t_s - self.swing_w / self.omega * cos_term
        return int(joules * 1_000_000)


class SimulatedRaplCpu(RaplCpu):
    """A ``RaplCpu`` whose raw counters are the power models' integrals, wrapped."""

    def __init__(self, index: int, package_model: PowerModel, dram_model: PowerModel | None,
                 clock: Callable[[], float] = time.monotonic,
                 package_max_uj: int = PACKAGE_MAX_ENERGY_UJ,
                 dram_max_uj: int = DRAM_MAX_ENERGY_UJ) -> None:
        base = Path(f"/simulated/intel-rapl:{index}")  # only ever shown in messages
        package = RaplDomain(f"package-{index}", base / "energy_uj", package_max_uj)
        dram = RaplDomain("dram", base / f"intel-rapl:{index}:0" / "energy_uj",
                          dram_max_uj) if dram_model else None
        super().__init__(index, package, dram)
        self._models = {package.energy_path: package_model}
        if dram is not None:
            self._models[dram.energy_path] = dram_model
        # Start somewhere inside the range, as a machine that has been up a while does.
        self._offsets = {package.energy_path: package_max_uj // (3 + index),
                         **({dram.energy_path: dram_max_uj // (5 + index)} if dram else {})}
        self._clock = clock
        self._start_s = clock()

    def _raw_uj(self, domain: RaplDomain) -> int:
        elapsed_s = max(self._clock() - self._start_s, 0.0)
        energy_uj = self._offsets[domain.energy_path] + \
            self._models[domain.energy_path].energy_uj(elapsed_s)
        return energy_uj % domain.max_energy_uj


def simulated_cpus(count: int, clock: Callable[[], float] = time.monotonic) -> list[RaplCpu]:
    """``count`` packages, each with DRAM; package i idles near 90+15i W, DRAM near 18 W."""
    if not 1 <= count <= MAX_SIMULATED_CPUS:
        raise ValueError(f"simulated CPUs must be 1-{MAX_SIMULATED_CPUS}, got {count}")
    return [SimulatedRaplCpu(i, PowerModel(90.0 + 15 * i, 30.0, 20.0, 3.0 * i),
                             PowerModel(18.0, 4.0, 7.0, 1.0 * i), clock)
            for i in range(count)]
