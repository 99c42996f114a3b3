"""The narrow interface every GPU backend implements (NVML and simulated): what the
daemon calls, and nothing else. What only the admin's tools read (library versions) is
the separate probe interface in probe.py.

All methods are synchronous and may block; the GPU manager calls them on one
worker thread per GPU. Every failure is raised as ``NvmlError`` with NVML's own
code, so callers cannot tell a simulated GPU from a real one by its errors.
Units are in the names: ``_mw`` milliwatts, ``_mj`` millijoules, ``_mhz`` MHz.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    """What does not change while the daemon runs; read once at start-up."""

    index: int
    name: str
    uuid: str
    pci_address: str  # dddd:bb:dd.f, lower-case hex, as `lspci -D` prints it
    cumulative_energy_available: bool


class GpuDevice(abc.ABC):
    """One GPU. Each method maps to exactly one NVML call unless it says otherwise."""

    index: int

    @abc.abstractmethod
    def name(self) -> str: ...

    @abc.abstractmethod
    def uuid(self) -> str: ...

    @abc.abstractmethod
    def pci_address(self) -> str: ...

    @abc.abstractmethod
    def get_power_limit_mw(self) -> int: ...

    @abc.abstractmethod
    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        """(min, max) power limit the driver accepts."""

    @abc.abstractmethod
    def set_power_limit_mw(self, power_limit_mw: int) -> None: ...

    @abc.abstractmethod
    def get_persistence_mode(self) -> bool: ...

    @abc.abstractmethod
    def set_persistence_mode(self, enabled: bool) -> None: ...

    @abc.abstractmethod
    def set_gpu_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int) -> None: ...

    @abc.abstractmethod
    def reset_gpu_locked_clocks(self) -> None: ...

    @abc.abstractmethod
    def set_mem_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int) -> None: ...

    @abc.abstractmethod
    def reset_mem_locked_clocks(self) -> None: ...

    @abc.abstractmethod
    def get_supported_memory_clocks_mhz(self) -> list[int]:
        """For /gpu/get_supported_clocks and the early range check of locked clocks."""

    @abc.abstractmethod
    def get_supported_graphics_clocks_mhz(self, mem_clock_mhz: int) -> list[int]:
        """The graphics clocks at one supported memory clock (else NOT_FOUND)."""

    @abc.abstractmethod
    def get_total_energy_mj(self) -> int: ...

    @abc.abstractmethod
    def get_power_mw(self) -> int:
        """Instantaneous power: the POWER_INSTANT field where the driver has it,
        else nvmlDeviceGetPowerUsage (averaged)."""

    def info(self) -> GpuInfo:
        """Static facts for /discover. Probes the energy counter once, as upstream:
        NOT_SUPPORTED means no counter (pre-Volta); any other error propagates."""
        from .errors import NOT_SUPPORTED, NvmlError

        try:
            self.get_total_energy_mj()
            energy = True
        except NvmlError as err:
            if err.code != NOT_SUPPORTED:
                raise
            energy = False
        return GpuInfo(self.index, self.name(), self.uuid(), self.pci_address(), energy)


class GpuBackend(abc.ABC):
    """A set of GPUs. ``open()`` initialises the library once."""

    kind: str  # "nvml" or "simulated"

    @abc.abstractmethod
    def devices(self) -> list[GpuDevice]:
        """All GPUs, indexed by NVML index (list position == index)."""

    def close(self) -> None:
        """Release the library (optional)."""
