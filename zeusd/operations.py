"""The operations zeusd performs, by the names the API, the policy and the audit use."""

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

GPU_WRITE_OPERATIONS = (
    SET_POWER_LIMIT,
    SET_PERSISTENCE_MODE,
    SET_GPU_LOCKED_CLOCKS,
    RESET_GPU_LOCKED_CLOCKS,
    SET_MEM_LOCKED_CLOCKS,
    RESET_MEM_LOCKED_CLOCKS,
    RESET_LOCKED_CLOCKS,
)


@dataclass(frozen=True)
class GpuChange:
    """One requested change to one GPU. Only the fields of ``operation`` are set."""

    operation: str
    gpu_index: int
    power_limit_mw: int | None = None
    enabled: bool | None = None
    min_clock_mhz: int | None = None
    max_clock_mhz: int | None = None

    def value_text(self) -> str:
        """The new value as the audit log prints it."""
        if self.power_limit_mw is not None:
            return f"{self.power_limit_mw} mW"
        if self.enabled is not None:
            return "enabled" if self.enabled else "disabled"
        if self.min_clock_mhz is not None:
            return f"{self.min_clock_mhz}-{self.max_clock_mhz} MHz"
        return "reset"
