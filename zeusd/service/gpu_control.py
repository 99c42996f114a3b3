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
from ..errors import NvmlFailure, PolicyDenied, UnknownDevice, ZeusdError
from ..identity import Caller
from ..operations import GpuChange, knob_text
from .gpu_manager import GpuManager
from .hardware_ranges import RangeCheck
from .leasing import FROM_GPU, Leasing, OldValue

log = logging.getLogger(__name__)


def _apply(device: GpuDevice, change: GpuChange) -> None:
    """The NVML call(s) of one change, from the operations table. A reset tries every one of
    its calls (reset_locked_clocks: GPU, then memory); the first error wins, as upstream."""
    spec = change.spec
    if spec.setter is not None:
        getattr(device, spec.setter)(*change.values())
        return
    first_error = None
    for method in spec.resetters:
        try:
            getattr(device, method)()
        except Exception as exc:  # noqa: BLE001 - the next reset is still attempted
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


def _explain_invalid(device: GpuDevice, change: GpuChange, exc: Exception) -> Exception:
    """NVML says only "Invalid Argument"; name the range the GPU accepts."""
    if not (isinstance(exc, NvmlError) and exc.code == INVALID_ARGUMENT
            and change.spec.value_kind == ops.POWER_MW):
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
    spec = ops.GPU_OPERATIONS[op]
    getter = spec.getter if spec.knobs else None
    if getter is None:
        return None
    try:
        return knob_text(spec.knobs[0], getattr(device, getter)())
    except Exception:  # noqa: BLE001 - the audit must not stop the write
        return None


def _read_old(device: GpuDevice, op: str) -> OldValue | None:
    text = _old_value(device, op)
    return None if text is None else OldValue(text, FROM_GPU)


class GpuControl:
    """Decides, leases, queues and audits GPU changes."""

    def __init__(self, manager: GpuManager, policy_store, auditor, book=None) -> None:
        self.manager = manager
        self.policy_store = policy_store
        self.auditor = auditor
        self.leasing = Leasing(book)
        self.ranges = RangeCheck(manager)

    def _check_gpus(self, gpu_indices: list[int]) -> None:
        for index in gpu_indices:
            if not self.manager.has(index):
                raise UnknownDevice(f"GPU index {index} does not exist.")

    def change(self, caller: Caller, changes: list[GpuChange], block: bool,
               pin_owner=None, after_response=None) -> None:
        """Check the GPUs exist, decide all, lease all, then run (block) or queue (non-block).
        ``pin_owner`` (from the transport) pins the calling process for a lease; None: the
        caller has no process (TCP) or leases are off. ``after_response`` (from the
        transport) lets a non-blocking write to an idle GPU run on this request's thread
        once its answer is sent, instead of on the GPU's thread. Raises ZeusdError."""
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
        leases = self.leasing.begin(caller, pin_owner, by_index)
        job = self._job(caller, by_index, leases, policy.hash)
        try:
            self._run(caller, by_index, leases, job, policy.hash, block, after_response)
        except BaseException:  # a job not started now never will be: its leases end here
            for gpu_leases in leases.values():
                gpu_leases.abort_unclaimed()
            raise

    def _job(self, caller, by_index, leases, policy_hash):
        def job(device: GpuDevice) -> None:
            change, decision = by_index[device.index]
            gpu_leases = leases[device.index]
            if not gpu_leases.claim():
                return  # the request already gave up on this GPU and ended its leases
            old = gpu_leases.old or _read_old(device, change.operation)
            try:
                _apply(device, change)
            except Exception as exc:
                gpu_leases.end(applied=False)
                exc = _explain_invalid(device, change, exc)
                self._audit(caller, change, decision, policy_hash, old,
                            f"failed: {getattr(exc, 'message', type(exc).__name__)}")
                raise exc from None
            gpu_leases.end(applied=True)
            self._audit(caller, change, decision, policy_hash, old, "applied")
        return job

    def _run(self, caller, by_index, leases, job, policy_hash, block,
             after_response=None) -> None:
        name = next(iter(by_index.values()))[0].operation
        if block:
            self.manager.run_all(by_index, job, name)
            return

        def dropped(index: int, reason: str) -> None:
            leases[index].abort_unclaimed()
            change, decision = by_index[index]
            self._audit(caller, change, decision, policy_hash, None, f"dropped: {reason}")

        self.manager.submit_all(by_index, job, name, self._deferred_error(caller, name),
                                on_drop=dropped, after_response=after_response)
    def _current_value(self, change: GpuChange) -> OldValue | None:
        """The value a denied change would have replaced, read in the GPU's turn."""
        try:
            return self.manager.run_one(change.gpu_index,
                                        lambda device: _read_old(device, change.operation),
                                        f"audit: read {change.operation} value")
        except ZeusdError:
            return None

    def _audit(self, caller, change, decision, policy_hash, old, outcome) -> None:
        uuid = self.manager.infos[change.gpu_index].uuid
        self.auditor.change(caller=caller, change=change, gpu_uuid=uuid, decision=decision,
                            policy_hash=policy_hash, old_value=old.text if old else None,
                            old_source=old.source if old else None, outcome=outcome)

    @staticmethod
    def _deferred_error(caller: Caller, operation: str):
        def on_error(index: int, exc: BaseException) -> None:
            log.error("non-blocking %s on GPU %d for %s failed: %s", operation, index,
                      caller.describe(), getattr(exc, "message", repr(exc)))
        return on_error
