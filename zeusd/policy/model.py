"""The parsed policy's building blocks: frozen, precomputed, cheap to match.

Everything here is built once by ``load.py``; a request only reads it. Sets are
frozensets so that matching a caller is a few hash look-ups, whatever the size
of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zeusd import operations as ops

READ_GROUPS = (ops.GPU_READ, ops.CPU_READ)

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
