"""The policy's decisions: the first rule matching caller and GPU decides."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zeusd import operations as ops
from zeusd.identity import Caller
from zeusd.operations import GpuChange
from zeusd.policy.model import READ_GROUPS, Decision, Grant, Range, Rule

if TYPE_CHECKING:
    from zeusd.policy.model import Policy

_RANGE_WORDS = {"gpu_clock_mhz": "GPU clock range", "mem_clock_mhz": "memory clock range"}


def who(caller: Caller) -> str:
    """The caller as a denial names it: 'uid 1001', "token subject 'alice'"."""
    if caller.transport == "unix":
        return f"uid {caller.uid}"
    if caller.token_subject is not None:
        return f"token subject '{caller.token_subject}'"
    return "anonymous TCP callers"


def _where(gpu_index: int | None, group: str | None = None) -> str:
    if group == ops.CPU_READ:
        return "the CPUs"
    if group == ops.METRICS:
        return "the daemon's metrics"
    return "all GPUs" if gpu_index is None else f"GPU {gpu_index}"


# What ``granting`` finds: the decision, and (for an allowed operation) the rule and grant
# whose ranges the change's values must still fit; rule and grant are None when final.
Granting = tuple[Decision, "Rule | None", "Grant | None"]


def decide_change(policy: Policy, caller: Caller, change: GpuChange) -> Decision:
    """Decide one change on one GPU; the daemon asks once per listed GPU."""
    return settle(policy, caller, change,
                  granting(policy, caller, change.operation, change.gpu_index))


def granting(policy: Policy, caller: Caller, operation: str, gpu_index: int) -> Granting:
    """The part of a change's decision its values do not enter: root, an unknown caller or
    an operation the matching rule does not grant are final; an allowed operation comes
    with the grant whose ranges ``settle`` then checks the values against."""
    early = _fixed_decision(caller, policy.root_restore_on_exit)
    if early is not None:
        return early, None, None
    rule = policy.first_match(caller, gpu_index)
    grant = rule.grant if rule is not None else policy.defaults
    name = rule.name if rule is not None else policy.default_rule
    if operation not in grant.operations:
        message = _not_granted(policy, rule, caller, operation, _where(gpu_index))
        return Decision(False, name, message, grant.restore_on_exit), None, None
    allowed = Decision(True, name, "", grant.restore_on_exit, share_leases=grant.share_leases)
    return allowed, rule, grant


def settle(policy: Policy, caller: Caller, change: GpuChange, granted: Granting) -> Decision:
    """The decision for ``change`` given what ``granting`` found for its caller, GPU and
    operation: the grant's ranges decide its values."""
    decision, rule, grant = granted
    if grant is None:
        return decision
    problem = _out_of_range(grant, change)
    if problem is None:
        return decision
    return _range_denial(policy, caller, change, rule, grant, problem)


def decide_read(policy: Policy, caller: Caller, group: str, gpu_index: int | None) -> Decision:
    """Decide a read of ``group`` ("gpu-read"/"cpu-read").

    "cpu-read", and "gpu-read" with ``gpu_index`` None (all GPUs), are
    decided by the first matching rule that covers every GPU (gpus = "all").
    The daemon should ask per GPU index when it knows the indices.
    """
    if group not in READ_GROUPS:
        raise ValueError(f"not a read group: {group!r}")
    early = _fixed_decision(caller, policy.root_restore_on_exit)
    if early is not None:
        return early
    # A rule limited to some GPUs says nothing about the CPUs or "all GPUs".
    rule = policy.first_match(caller, gpu_index if group == ops.GPU_READ else None)
    grant = rule.grant if rule is not None else policy.defaults
    name = rule.name if rule is not None else policy.default_rule
    if group in grant.operations:
        return Decision(True, name, "", grant.restore_on_exit)
    message = _not_granted(policy, rule, caller, group, _where(gpu_index, group))
    return Decision(False, name, message, grant.restore_on_exit)


def _not_granted(policy: Policy, rule: Rule | None, caller: Caller, what: str,
                 where: str) -> str:
    if policy.default_rule == "no-policy":
        return (f"{what} is allowed only to root: {policy.path} does not exist, so zeusd "
                f"uses its built-in policy (everybody may read, only root may change)")
    if rule is not None:
        return f"{what} is not allowed to {who(caller)} on {where} by rule '{rule.name}'"
    return (
        f"no rule of policy {policy.source} matches {who(caller)} on {where}, "
        f"and the [defaults] do not allow {what}"
    )


def _range_denial(policy: Policy, caller: Caller, change: GpuChange, rule: Rule | None,
                  grant: Grant, problem: tuple[str, str, int | None, Range]) -> Decision:
    range_key, field_name, value, limit = problem
    if range_key == "power_limit_mw":
        what = "the range"
        allowed = {"min_power_limit_mw": limit.low, "max_power_limit_mw": limit.high}
    else:
        what = f"the {_RANGE_WORDS[range_key]}"
        allowed = {"min_clock_mhz": limit.low, "max_clock_mhz": limit.high}
    granter = f"rule '{rule.name}' allows" if rule is not None else "the [defaults] allow"
    shown = "no value" if value is None else value
    message = (f"{field_name} {shown} is outside {what} {limit.text()} that {granter} "
               f"{who(caller)} on GPU {change.gpu_index}")
    name = rule.name if rule is not None else policy.default_rule
    return Decision(False, name, message, grant.restore_on_exit, allowed)


def _fixed_decision(caller: Caller, root_restore_on_exit: bool) -> Decision | None:
    """Unknown callers are always denied and root always allowed, whatever the file says."""
    if not caller.known or (caller.transport == "unix" and caller.uid is None):
        reason = caller.error or "no identity"
        message = f"zeusd could not tell who the caller is ({reason}), so it denies the request"
        return Decision(False, "unknown-caller", message, True)
    if caller.is_root:
        return Decision(True, "root", "", root_restore_on_exit)
    return None


def _out_of_range(grant: Grant, change: GpuChange) -> tuple[str, str, int | None, Range] | None:
    """(range key, request field, value, limit) of the first value the grant's range refuses.

    A value that is missing where a range applies is refused too (fail closed).
    """
    range_key = change.spec.range_key
    limit: Range | None = getattr(grant, range_key) if range_key else None
    if limit is None:
        return None
    for field_name, value in zip(change.spec.params, change.values()):
        if value is None or value not in limit:
            return range_key, field_name, value, limit
    return None
