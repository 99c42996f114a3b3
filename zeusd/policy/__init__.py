"""Access policy: who may change which GPU setting, within which range.

The daemon loads one file (DEFAULT_POLICY_PATH) into a frozen Policy, holds it
in a PolicyStore (atomic swap on SIGHUP) and asks ``decide_change`` once per
GPU before touching any of them.
"""

from zeusd.policy.model import Policy
from zeusd.policy.load import DEFAULT_POLICY_PATH, builtin_policy, load_policy
from zeusd.policy.model import Decision, PolicyError
from zeusd.policy.store import PolicyStore

__all__ = [
    "DEFAULT_POLICY_PATH",
    "Decision",
    "Policy",
    "PolicyError",
    "PolicyStore",
    "builtin_policy",
    "load_policy",
]
