"""The operations zeusd performs, by the names the API, the policy and the audit use.

``GPU_OPERATIONS`` is the one table of GPU writes: for each operation its value
parameters (and their units), the policy range that limits them, the lease knob(s)
it changes, and the GpuDevice methods that read, set and reset that knob. The
HTTP routes, the policy's decisions and explanations, the write path and the
leases all read it; adding an operation is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

# API groups (--enable, token scopes, policy read operations).
GPU_CONTROL = "gpu-control"
GPU_READ = "gpu-read"
CPU_READ = "cpu-read"
# (ours) Prometheus /metrics. Off unless --enable names it, so a default daemon answers
# exactly what the released clients know.
METRICS = "metrics"
DEFAULT_GROUPS = (GPU_CONTROL, GPU_READ, CPU_READ)
API_GROUPS = (*DEFAULT_GROUPS, METRICS)

SET_POWER_LIMIT = "set_power_limit"
SET_PERSISTENCE_MODE = "set_persistence_mode"
SET_GPU_LOCKED_CLOCKS = "set_gpu_locked_clocks"
RESET_GPU_LOCKED_CLOCKS = "reset_gpu_locked_clocks"
SET_MEM_LOCKED_CLOCKS = "set_mem_locked_clocks"
RESET_MEM_LOCKED_CLOCKS = "reset_mem_locked_clocks"
RESET_LOCKED_CLOCKS = "reset_locked_clocks"

# The knobs a write changes (and a lease holds). Values: power limit in mW (int), locked
# clocks as (min_mhz, max_mhz) or None for "not locked", persistence mode a bool.
POWER_LIMIT = "power_limit"
GPU_LOCKED_CLOCKS = "gpu_locked_clocks"
MEM_LOCKED_CLOCKS = "mem_locked_clocks"
PERSISTENCE_MODE = "persistence_mode"
KNOBS = (POWER_LIMIT, GPU_LOCKED_CLOCKS, MEM_LOCKED_CLOCKS, PERSISTENCE_MODE)

# Value kinds: how a value is written on a command line and in the audit.
POWER_MW, SWITCH, CLOCK_RANGE_MHZ = "power_mw", "switch", "clock_range_mhz"
# Parameters that are booleans; every other value parameter is a u32.
BOOL_PARAMS = frozenset({"enabled"})


@dataclass(frozen=True)
class Operation:
    """One GPU write. ``params`` are the request's value parameters in the setter's order;
    ``range_key`` the policy range (a Grant field) that limits every one of them; ``knobs``
    what it changes; ``setter`` the GpuDevice method taking ``params``; ``resetters`` the
    methods a reset calls (all are tried, the first error wins, as upstream); ``getter``
    the method reading the knob (None: NVML has no getter, e.g. locked clocks)."""

    name: str
    params: tuple[str, ...] = ()
    value_kind: str | None = None
    range_key: str | None = None
    knobs: tuple[str, ...] = ()
    setter: str | None = None
    resetters: tuple[str, ...] = ()
    getter: str | None = None


GPU_OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation(SET_POWER_LIMIT, ("power_limit_mw",), POWER_MW, "power_limit_mw", (POWER_LIMIT,),
              setter="set_power_limit_mw", getter="get_power_limit_mw"),
    Operation(SET_PERSISTENCE_MODE, ("enabled",), SWITCH, None, (PERSISTENCE_MODE,),
              setter="set_persistence_mode", getter="get_persistence_mode"),
    Operation(SET_GPU_LOCKED_CLOCKS, ("min_clock_mhz", "max_clock_mhz"), CLOCK_RANGE_MHZ,
              "gpu_clock_mhz", (GPU_LOCKED_CLOCKS,), setter="set_gpu_locked_clocks"),
    Operation(RESET_GPU_LOCKED_CLOCKS, knobs=(GPU_LOCKED_CLOCKS,),
              resetters=("reset_gpu_locked_clocks",)),
    Operation(SET_MEM_LOCKED_CLOCKS, ("min_clock_mhz", "max_clock_mhz"), CLOCK_RANGE_MHZ,
              "mem_clock_mhz", (MEM_LOCKED_CLOCKS,), setter="set_mem_locked_clocks"),
    Operation(RESET_MEM_LOCKED_CLOCKS, knobs=(MEM_LOCKED_CLOCKS,),
              resetters=("reset_mem_locked_clocks",)),
    Operation(RESET_LOCKED_CLOCKS, knobs=(GPU_LOCKED_CLOCKS, MEM_LOCKED_CLOCKS),
              resetters=("reset_gpu_locked_clocks", "reset_mem_locked_clocks")),
)}
GPU_WRITE_OPERATIONS = tuple(GPU_OPERATIONS)

# How each knob is read, set and reset on a GpuDevice: from the first row that sets it.
KNOB_GETTER = {k: op.getter for op in GPU_OPERATIONS.values() if op.setter for k in op.knobs}
KNOB_SETTER = {k: op.setter for op in GPU_OPERATIONS.values() if op.setter for k in op.knobs}
KNOB_RESETTER = {op.knobs[0]: op.resetters[0] for op in GPU_OPERATIONS.values()
                 if len(op.resetters) == 1}


def knob_text(knob: str, value: object) -> str:
    """A knob's value as logs and listings print it: '300000 mW', '900-1980 MHz', 'not locked'."""
    if knob == POWER_LIMIT:
        return f"{value} mW"
    if knob == PERSISTENCE_MODE:
        return "enabled" if value else "disabled"
    return "not locked" if value is None else f"{value[0]}-{value[1]} MHz"


@dataclass(frozen=True)
class GpuChange:
    """One requested change to one GPU. Only the fields of ``operation`` are set."""

    operation: str
    gpu_index: int
    power_limit_mw: int | None = None
    enabled: bool | None = None
    min_clock_mhz: int | None = None
    max_clock_mhz: int | None = None

    @property
    def spec(self) -> Operation:
        return GPU_OPERATIONS[self.operation]

    def values(self) -> tuple:
        """The value parameters, in the setter's order."""
        return tuple(getattr(self, name) for name in self.spec.params)

    def knob_values(self) -> tuple[tuple[str, object], ...]:
        """(knob, new value) per knob changed: a reset is None ("not locked")."""
        values = self.values()
        value = None if not values else values[0] if len(values) == 1 else values
        return tuple((knob, value) for knob in self.spec.knobs)

    def value_text(self) -> str:
        """The new value as the audit log prints it."""
        kind = self.spec.value_kind
        if kind == POWER_MW:
            return f"{self.power_limit_mw} mW"
        if kind == SWITCH:
            return "enabled" if self.enabled else "disabled"
        if kind == CLOCK_RANGE_MHZ:
            return f"{self.min_clock_mhz}-{self.max_clock_mhz} MHz"
        return "reset"
