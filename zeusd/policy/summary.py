"""What one caller may do under a policy, for /discover's "policy" key (json-able)."""

from __future__ import annotations

from zeusd import operations as ops
from zeusd.policy.model import READ_GROUPS, Grant, Range

_ALL = frozenset(ops.GPU_WRITE_OPERATIONS + READ_GROUPS)


def _range_json(limit: Range | None, low_key: str, high_key: str) -> dict | None:
    return None if limit is None else {low_key: limit.low, high_key: limit.high}


def _grant_json(name: str, gpus, grant: Grant) -> dict:
    return {
        "rule": name,
        "gpus": "all" if gpus is None else sorted(gpus),
        "operations": sorted(grant.operations),
        "power_limit_mw": _range_json(grant.power_limit_mw, "min_power_limit_mw",
                                      "max_power_limit_mw"),
        "gpu_clock_mhz": _range_json(grant.gpu_clock_mhz, "min_clock_mhz", "max_clock_mhz"),
        "mem_clock_mhz": _range_json(grant.mem_clock_mhz, "min_clock_mhz", "max_clock_mhz"),
        "restore_on_exit": grant.restore_on_exit,
    }


def summary_for(policy, caller) -> dict:
    """What ``caller`` may do: the rules that match it, in order, then the defaults."""
    summary = {"policy_hash": policy.hash, "source": policy.source,
               "first_match_decides": True, "applies": []}
    if not caller.known or (caller.transport == "unix" and caller.uid is None):
        summary["applies"] = []
        return summary
    if caller.is_root:
        summary["applies"] = [_grant_json("root", None, Grant(_ALL, restore_on_exit=
                                                              policy.root_restore_on_exit))]
        return summary
    for rule in policy.rules:
        if rule.subjects.match(caller):
            summary["applies"].append(_grant_json(rule.name, rule.gpus, rule.grant))
            if rule.gpus is None:
                return summary  # nothing below it can match this caller
    summary["applies"].append(_grant_json(policy.default_rule, None, policy.defaults))
    return summary
