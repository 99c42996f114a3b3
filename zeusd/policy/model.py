"""The parsed policy's building blocks: frozen, precomputed, cheap to match.

Everything here is built once by ``load.py``; a request only reads it. Sets are
frozensets so that matching a caller is a few hash look-ups, whatever the size
of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zeusd import operations as ops
from zeusd.policy.index import RuleIndex

if TYPE_CHECKING:
    from zeusd.identity import Caller
    from zeusd.operations import GpuChange

READ_GROUPS = (ops.GPU_READ, ops.CPU_READ, ops.METRICS)

# Shorthands an administrator may write in `operations = [...]`.
OPERATION_SHORTHANDS: dict[str, tuple[str, ...]] = {
    ops.GPU_CONTROL: ops.GPU_WRITE_OPERATIONS,
    "all-writes": ops.GPU_WRITE_OPERATIONS,
    "all-reads": READ_GROUPS,
    "all": ops.GPU_WRITE_OPERATIONS + READ_GROUPS,
}
OPERATION_NAMES = frozenset(ops.GPU_WRITE_OPERATIONS + READ_GROUPS)


class PolicyError(Exception):
    """The policy file cannot be used; the message names file, line and key path."""


@dataclass(frozen=True)
class Range:
    """An inclusive range of integers in API units (mW or MHz)."""

    low: int
    high: int

    def __contains__(self, value: int) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Grant:
    """What a rule (or the defaults) lets its callers do on the GPUs it covers.

    A range of None means "whatever the hardware accepts".
    """

    operations: frozenset[str] = frozenset()
    power_limit_mw: Range | None = None
    gpu_clock_mhz: Range | None = None
    mem_clock_mhz: Range | None = None
    restore_on_exit: bool = True
    share_leases: bool = False  # its callers may change a knob another of them holds


@dataclass(frozen=True)
class Subjects:
    """Who a rule is about. Ids are resolved at load time; names kept for display."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    token_subjects: frozenset[str] = frozenset()
    anonymous: bool = False
    everyone: bool = False
    user_labels: tuple[str, ...] = ()
    group_labels: tuple[str, ...] = ()

    def match(self, caller) -> bool:
        """True if this caller is one of the subjects (caller is known).

        ``everyone`` means every *identified* caller: a Unix peer or the holder of a
        valid token. An anonymous TCP caller is nobody in particular, so only
        ``anonymous = true`` names it (a TCP listener must never widen a rule
        written for the local users).
        """
        if caller.transport == "unix":
            if self.everyone or caller.uid in self.uids:
                return True
            if not self.gids:
                return False
            return caller.gid in self.gids or not self.gids.isdisjoint(caller.groups)
        if caller.token_subject is None:
            return self.anonymous
        return self.everyone or caller.token_subject in self.token_subjects


@dataclass(frozen=True)
class Rule:
    """One `[[rule]]` table. ``gpus`` None means every GPU."""

    name: str
    subjects: Subjects
    gpus: frozenset[int] | None
    grant: Grant
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Decision:
    """The answer to one request on one GPU (or one read group)."""

    allowed: bool
    rule: str  # rule name, "root", "default", "no-policy" or "unknown-caller"
    message: str  # for a denial: the 403 "error" text
    restore_on_exit: bool
    allowed_range: dict | None = None
    share_leases: bool = False


_KEPT_DECISIONS = 4096


@dataclass(frozen=True)
class Policy:
    """A parsed policy file, frozen. Decisions read nothing but this object; the
    decision logic itself is in ``decide.py``."""

    hash: str
    source: str
    rules: tuple[Rule, ...]
    defaults: Grant
    root_restore_on_exit: bool = True
    default_rule: str = "default"  # "no-policy" for the built-in fallback
    path: str = ""  # the file it came from, or would have come from
    warnings: tuple[str, ...] = field(default=(), compare=False)
    _index: RuleIndex = field(init=False, repr=False, compare=False)
    _kept: dict = field(init=False, repr=False, compare=False)  # see _keep

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", RuleIndex(self.rules))
        object.__setattr__(self, "_kept", {})

    def first_match(self, caller: Caller, gpu_index: int | None) -> Rule | None:
        """The first rule (file order) that names this caller and covers this GPU."""
        rules = self.rules
        for position in self._index.candidates(caller):
            gpus = rules[position].gpus
            if gpus is None or gpu_index in gpus:
                return rules[position]
        return None

    def decide_change(self, caller: Caller, change: GpuChange) -> Decision:
        """Decide one change on one GPU; the daemon asks once per listed GPU. Which rule
        grants the caller the operation on the GPU is kept (``_keep``); the values are
        checked against its ranges every time."""
        key = ("change", caller, caller.error, change.operation, change.gpu_index)
        granted = self._kept.get(key)
        if granted is None:
            granted = self._keep(key, _decide.granting(self, caller, change.operation,
                                                       change.gpu_index))
        return count_decision(_decide.settle(self, caller, change, granted))

    def decide_read(self, caller: Caller, group: str, gpu_index: int | None) -> Decision:
        """Decide a read of ``group`` ("gpu-read"/"cpu-read"), see ``decide.decide_read``;
        kept (``_keep``)."""
        key = ("read", caller, caller.error, group, gpu_index)
        decision = self._kept.get(key)
        if decision is None:
            decision = self._keep(key, _decide.decide_read(self, caller, group, gpu_index))
        return count_decision(decision)

    def _keep(self, key: tuple, found):
        """Remember what a decision found. It depends on nothing but this frozen policy and
        the key (the whole caller, its error text included, which Caller leaves out of its
        equality), and a client asks the same again and again: a Zeus client setting its
        power limit, a monitor polling power. Bounded: many callers (pids) start it over."""
        kept = self._kept
        if len(kept) >= _KEPT_DECISIONS:
            kept.clear()
        kept[key] = found
        return found

    def summary_for(self, caller: Caller) -> dict:
        """What this caller may do, for the /discover "policy" key (json-able)."""
        from zeusd.policy.summary import summary_for

        return summary_for(self, caller)


# The decisions need the classes above, and Policy calls them: imported last (not inside
# each method, which would cost an import look-up on every decision).
from zeusd.policy import decide as _decide  # noqa: E402
from zeusd.tally import count_decision  # noqa: E402  (for /metrics)
