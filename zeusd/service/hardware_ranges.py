"""What each GPU accepts (power limit constraints, supported clocks), and the early check of a
write against it.

Why early: a non-blocking write is answered before it runs, so a value the GPU will refuse
used to answer 200 and fail later, seen only in the daemon's log. The ranges never change
while the driver is loaded, so each GPU's are read once, in its own queue, when a write first
needs them, and a value outside them answers 400 before anything is queued, block or not.
Where a range cannot be read (the GPU lacks the function, or is lost or hung), nothing is
checked early and the driver's own check still applies when the command runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import operations as ops
from ..devices.base import GpuDevice
from ..devices.errors import NOT_FOUND, NvmlError
from ..errors import AggregatedError, InvalidValue, ZeusdError
from ..operations import GpuChange
from .gpu_manager import GpuManager

log = logging.getLogger(__name__)


def supported_clocks(device: GpuDevice) -> dict:
    """The GPU's supported clock tables as /gpu/get_supported_clocks answers them: memory
    clocks, the graphics clocks at each, and the lowest and highest of both."""
    memory = device.get_supported_memory_clocks_mhz()
    graphics: dict[str, list[int]] = {}
    for mem_mhz in memory:
        try:
            graphics[str(mem_mhz)] = device.get_supported_graphics_clocks_mhz(mem_mhz)
        except NvmlError as exc:
            if exc.code != NOT_FOUND:  # NOT_FOUND: no graphics clock at this memory clock
                raise
    every_graphics = [mhz for table in graphics.values() for mhz in table]
    return {
        "memory_clocks_mhz": memory,
        "graphics_clocks_mhz": graphics,
        "min_mem_clock_mhz": min(memory, default=None),
        "max_mem_clock_mhz": max(memory, default=None),
        "min_gpu_clock_mhz": min(every_graphics, default=None),
        "max_gpu_clock_mhz": max(every_graphics, default=None),
    }


@dataclass(frozen=True)
class Ranges:
    """One GPU's limits; None where the GPU could not say."""

    power_limit_mw: tuple[int, int] | None
    gpu_clock_mhz: tuple[int, int] | None
    mem_clock_mhz: tuple[int, int] | None


def _pair(low, high) -> tuple[int, int] | None:
    return None if low is None or high is None else (low, high)


def read_ranges(device: GpuDevice) -> Ranges:
    try:
        power = tuple(device.get_power_limit_constraints_mw())
    except NvmlError:
        power = None
    try:
        clocks = supported_clocks(device)
    except NvmlError:
        clocks = dict.fromkeys(("min_gpu_clock_mhz", "max_gpu_clock_mhz", "min_mem_clock_mhz",
                                "max_mem_clock_mhz"))
    return Ranges(power, _pair(clocks["min_gpu_clock_mhz"], clocks["max_gpu_clock_mhz"]),
                  _pair(clocks["min_mem_clock_mhz"], clocks["max_mem_clock_mhz"]))


def out_of_range(change: GpuChange, ranges: Ranges) -> str | None:
    """Why the GPU would refuse ``change`` (the client's message), or None."""
    i = change.gpu_index
    if change.operation == ops.SET_POWER_LIMIT and ranges.power_limit_mw is not None:
        low, high = ranges.power_limit_mw
        if not low <= change.power_limit_mw <= high:
            return (f"Invalid request: power_limit_mw {change.power_limit_mw} is outside the "
                    f"valid range {low}-{high} mW of GPU {i}")
        return None
    clocks = {ops.SET_GPU_LOCKED_CLOCKS: ("GPU", ranges.gpu_clock_mhz),
              ops.SET_MEM_LOCKED_CLOCKS: ("memory", ranges.mem_clock_mhz)}
    if change.operation not in clocks:
        return None
    kind, supported = clocks[change.operation]
    low_mhz, high_mhz = change.min_clock_mhz, change.max_clock_mhz
    if low_mhz > high_mhz:
        return (f"Invalid request: min_clock_mhz {low_mhz} is above max_clock_mhz {high_mhz}")
    if supported is not None and not supported[0] <= low_mhz <= high_mhz <= supported[1]:
        return (f"Invalid request: {kind} clocks {low_mhz}-{high_mhz} MHz are outside the "
                f"supported range {supported[0]}-{supported[1]} MHz of GPU {i}")
    return None


_CHECKED = frozenset({ops.SET_POWER_LIMIT, ops.SET_GPU_LOCKED_CLOCKS, ops.SET_MEM_LOCKED_CLOCKS})


class RangeCheck:
    """Every GPU's ranges, read once each; ``check`` raises before a bad value is queued."""

    def __init__(self, manager: GpuManager) -> None:
        self.manager = manager
        self._ranges: dict[int, Ranges] = {}

    def ranges(self, index: int) -> Ranges | None:
        known = self._ranges.get(index)
        if known is not None:
            return known
        try:
            known = self.manager.run_one(index, read_ranges, "read supported ranges")
        except ZeusdError as exc:  # lost, hung, backed up: the write will say so itself
            log.debug("GPU %d ranges unknown (%s); no early range check", index, exc.message)
            return None
        self._ranges[index] = known  # a race only reads the same values twice
        return known

    def check(self, changes: list[GpuChange]) -> None:
        """AggregatedError of InvalidValue (400) for every change its GPU would refuse."""
        if changes[0].operation not in _CHECKED:
            return
        errors = {}
        for change in changes:
            ranges = self.ranges(change.gpu_index)
            problem = None if ranges is None else out_of_range(change, ranges)
            if problem is not None:
                errors[change.gpu_index] = InvalidValue(problem)
        if errors:
            raise AggregatedError(errors)
