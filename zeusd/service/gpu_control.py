"""GPU writes: decide every listed GPU against the policy, then run, then audit.

Order matters for safety: the whole request is decided before anything is
queued, so a multi-GPU write that is denied on one GPU touches none, and a
denial is never deferred to a non-blocking job.
"""

from __future__ import annotations

import logging

from .. import operations as ops
from ..devices.base import GpuDevice
from ..devices.errors import INVALID_ARGUMENT, NvmlError
from ..errors import InvalidValue, NvmlFailure, PolicyDenied, UnknownDevice, ZeusdError
from ..identity import Caller
from ..operations import GpuChange
from .gpu_manager import GpuManager
from .hardware_ranges import RangeCheck

log = logging.getLogger(__name__)


def _apply(device: GpuDevice, change: GpuChange) -> None:
    """The NVML call(s) of one change. reset_locked_clocks always tries both."""
    op = change.operation
    if op == ops.SET_POWER_LIMIT:
        device.set_power_limit_mw(change.power_limit_mw)
    elif op == ops.SET_PERSISTENCE_MODE:
        device.set_persistence_mode(change.enabled)
    elif op == ops.SET_GPU_LOCKED_CLOCKS:
        device.set_gpu_locked_clocks(change.min_clock_mhz, change.max_clock_mhz)
    elif op == ops.RESET_GPU_LOCKED_CLOCKS:
        device.reset_gpu_locked_clocks()
    elif op == ops.SET_MEM_LOCKED_CLOCKS:
        device.set_mem_locked_clocks(change.min_clock_mhz, change.max_clock_mhz)
    elif op == ops.RESET_MEM_LOCKED_CLOCKS:
        device.reset_mem_locked_clocks()
    elif op == ops.RESET_LOCKED_CLOCKS:
        gpu_error = None
        try:
            device.reset_gpu_locked_clocks()
        except Exception as exc:  # noqa: BLE001 - the memory reset is still attempted
            gpu_error = exc
        try:
            device.reset_mem_locked_clocks()
        except Exception:
            if gpu_error is None:
                raise
        if gpu_error is not None:
            raise gpu_error  # upstream: the GPU reset's error wins
    else:  # pragma: no cover - operations are validated by the HTTP layer
        raise InvalidValue(f"unknown operation {op}")


def _explain_invalid(device: GpuDevice, change: GpuChange, exc: Exception) -> Exception:
    """NVML says only "Invalid Argument"; name the range the GPU accepts."""
    if not (isinstance(exc, NvmlError) and exc.code == INVALID_ARGUMENT
            and change.operation == ops.SET_POWER_LIMIT):
        return exc
    try:
        low, high = device.get_power_limit_constraints_mw()
    except Exception:  # noqa: BLE001 - keep NVML's own error
        return exc
    if low <= change.power_limit_mw <= high:
        return exc  # the driver refused an in-range value: the range is not the reason
    return NvmlFailure(exc.code, exc.function,
                       f"NVML error: {exc.text} ({exc.function}): power_limit_mw "
                       f"{change.power_limit_mw} is outside the valid range {low}-{high} mW "
                       f"of GPU {change.gpu_index}")


def _old_value(device: GpuDevice, op: str) -> str | None:
    """The value before the change, for the audit; None where NVML has no getter."""
    try:
        if op == ops.SET_POWER_LIMIT:
            return f"{device.get_power_limit_mw()} mW"
        if op == ops.SET_PERSISTENCE_MODE:
            return "enabled" if device.get_persistence_mode() else "disabled"
    except Exception:  # noqa: BLE001 - the audit must not stop the write
        return None
    return None


class GpuControl:
    """Decides, queues and audits GPU changes."""

    def __init__(self, manager: GpuManager, policy_store, auditor) -> None:
        self.manager = manager
        self.policy_store = policy_store
        self.auditor = auditor
        self.ranges = RangeCheck(manager)

    def _check_gpus(self, gpu_indices: list[int]) -> None:
        for index in gpu_indices:
            if not self.manager.has(index):
                raise UnknownDevice(f"GPU index {index} does not exist.")

    def change(self, caller: Caller, changes: list[GpuChange], block: bool) -> None:
        """Check the GPUs exist, decide all, then run (block) or queue (non-block).
        Raises ZeusdError."""
        self._check_gpus(sorted({c.gpu_index for c in changes}))
        policy = self.policy_store.current  # one policy decides the whole request
        by_index = {}
        for change in changes:
            decision = policy.decide_change(caller, change)
            if not decision.allowed:
                self._audit(caller, change, decision, policy.hash,
                            self._current_value(change), "denied")
                extra = {"rule": decision.rule}
                if decision.allowed_range:
                    extra["allowed_range"] = decision.allowed_range
                raise PolicyDenied(decision.message, **extra)
            by_index[change.gpu_index] = (change, decision)
        self.ranges.check(changes)  # a value the GPU refuses: 400 now, even with block=false

        def job(device: GpuDevice) -> None:
            change, decision = by_index[device.index]
            old = _old_value(device, change.operation)
            try:
                _apply(device, change)
            except Exception as exc:
                exc = _explain_invalid(device, change, exc)
                self._audit(caller, change, decision, policy.hash, old,
                            f"failed: {getattr(exc, 'message', type(exc).__name__)}")
                raise exc from None
            self._audit(caller, change, decision, policy.hash, old, "applied")

        name = changes[0].operation
        if block:
            self.manager.run_all(by_index, job, name)
        else:
            def dropped(index: int, reason: str) -> None:
                change, decision = by_index[index]
                self._audit(caller, change, decision, policy.hash, None, f"dropped: {reason}")

            self.manager.submit_all(by_index, job, name, self._deferred_error(caller, name),
                                    on_drop=dropped)

    def _current_value(self, change: GpuChange) -> str | None:
        """The value a denied change would have replaced, read in the GPU's turn."""
        try:
            return self.manager.run_one(change.gpu_index,
                                        lambda device: _old_value(device, change.operation),
                                        f"audit: read {change.operation} value")
        except ZeusdError:
            return None

    def _audit(self, caller, change, decision, policy_hash, old, outcome) -> None:
        uuid = self.manager.infos[change.gpu_index].uuid
        self.auditor.change(caller=caller, change=change, gpu_uuid=uuid, decision=decision,
                            policy_hash=policy_hash, old_value=old, outcome=outcome)

    @staticmethod
    def _deferred_error(caller: Caller, operation: str):
        def on_error(index: int, exc: BaseException) -> None:
            log.error("non-blocking %s on GPU %d for %s failed: %s", operation, index,
                      caller.describe(), getattr(exc, "message", repr(exc)))
        return on_error
