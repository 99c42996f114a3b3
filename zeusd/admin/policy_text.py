"""The policy in plain words, for the admin (`zeusd policy check`, `zeusd doctor`)."""

from __future__ import annotations

from decimal import Decimal

from zeusd import operations as ops
from zeusd.policy.load import is_builtin
from zeusd.policy.model import Grant, Rule


def watts(milliwatts: int) -> str:
    """200000 -> '200', 250500 -> '250.5'."""
    return format((Decimal(milliwatts) / 1000).normalize(), "f")


def describe_operations(operations: frozenset[str]) -> str:
    if not operations:
        return "nothing"
    parts = []
    writes = [op for op in ops.GPU_WRITE_OPERATIONS if op in operations]
    if len(writes) == len(ops.GPU_WRITE_OPERATIONS):
        parts.append("change every GPU setting (gpu-control)")
    elif writes:
        parts.append(", ".join(writes))
    reads = {ops.GPU_READ: "read GPUs (gpu-read)", ops.CPU_READ: "read CPUs (cpu-read)",
             ops.METRICS: "scrape /metrics (metrics)"}
    parts.extend(text for group, text in reads.items() if group in operations)
    return "; ".join(parts)


def describe_limits(grant: Grant) -> str:
    limits = []
    if grant.power_limit_mw is not None:
        limit = grant.power_limit_mw
        limits.append(f"power limit {watts(limit.low)}-{watts(limit.high)} W")
    for name, limit in (("GPU clocks", grant.gpu_clock_mhz), ("memory clocks",
                                                             grant.mem_clock_mhz)):
        if limit is not None:
            limits.append(f"{name} {limit.low}-{limit.high} MHz")
    if not limits:
        return "within the hardware's own limits"
    return "within " + ", ".join(limits)


# What restore_on_exit = true means, wherever the switch is shown.
_RESTORED = "changes are put back when the changing process exits"


def describe_grant(grant: Grant) -> str:
    text = f"may {describe_operations(grant.operations)}"
    if any(op in grant.operations for op in ops.GPU_WRITE_OPERATIONS):
        undo = (f"restore_on_exit = true ({_RESTORED})" if grant.restore_on_exit
                else "changes stay after the caller exits")
        if grant.share_leases:
            undo += "; share_leases = true (its callers may change what another of them holds)"
        text += f", {describe_limits(grant)}; {undo}"
    return text


def describe_who(rule: Rule) -> str:
    who = rule.subjects
    parts = []
    if who.everyone:
        parts.append("every identified caller (Unix peers, valid tokens; not anonymous TCP)")
    if who.user_labels:
        parts.append("users " + ", ".join(who.user_labels))
    if who.group_labels:
        parts.append("members of groups " + ", ".join(who.group_labels))
    if who.token_subjects:
        parts.append("token subjects " + ", ".join(sorted(who.token_subjects)))
    if who.anonymous:
        parts.append("anonymous TCP callers")
    return "; ".join(parts) or "nobody on this machine"


def describe_gpus(gpus: frozenset[int] | None) -> str:
    if gpus is None:
        return "every GPU"
    noun = "GPU" if len(gpus) == 1 else "GPUs"
    return f"{noun} " + ", ".join(str(index) for index in sorted(gpus))


def describe_policy(policy) -> list[str]:
    """One line per rule, in order, then the defaults: what each grants."""
    restore = f"restore_on_exit = true, {_RESTORED}" if policy.root_restore_on_exit \
        else "changes stay after the caller exits"
    lines = [f"root (uid 0): may do everything on every GPU ({restore})"]
    for rule in policy.rules:
        where = f" (line {rule.line})" if rule.line else ""
        lines.append(f"rule '{rule.name}'{where}: {describe_who(rule)}, on "
                     f"{describe_gpus(rule.gpus)}, {describe_grant(rule.grant)}")
    label = "built-in policy" if is_builtin(policy) else "defaults"
    lines.append(f"{label} (callers no rule matches): {describe_grant(policy.defaults)}")
    return lines
