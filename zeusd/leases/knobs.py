"""The four knobs a lease can hold, their typed values, and their strict JSON form.

Values: power limit in mW (int); locked clocks as a (min_mhz, max_mhz) tuple, or
None for "not locked"; persistence mode as a bool. The JSON form is what lease
files hold, so decoding is strict: anything but exactly these shapes is refused.
"""

from __future__ import annotations

from ..operations import (GPU_LOCKED_CLOCKS, KNOBS, MEM_LOCKED_CLOCKS,  # noqa: F401 - re-exported
                          PERSISTENCE_MODE, POWER_LIMIT)
from ..operations import knob_text as text  # noqa: F401 - re-exported
CLOCK_KNOBS = (GPU_LOCKED_CLOCKS, MEM_LOCKED_CLOCKS)

_MAX_MW = 10**9  # 1 MW: far above any GPU, small enough to refuse garbage
_MAX_MHZ = 10**6



class BadValue(ValueError):
    """A knob value of the wrong type or range (from a caller or a lease file)."""


def check(knob: str, value: object) -> object:
    """``value`` as the canonical typed value of ``knob``; BadValue otherwise."""
    if knob == POWER_LIMIT:
        if type(value) is not int or not 0 < value <= _MAX_MW:
            raise BadValue(f"{knob}: expected milliwatts (int), got {value!r}")
        return value
    if knob == PERSISTENCE_MODE:
        if type(value) is not bool:
            raise BadValue(f"{knob}: expected a bool, got {value!r}")
        return value
    if knob in CLOCK_KNOBS:
        return _check_clocks(knob, value)
    raise BadValue(f"unknown knob {knob!r}")


def _check_clocks(knob: str, value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(type(v) is int and 0 <= v <= _MAX_MHZ for v in value)
            and value[0] <= value[1]):
        return (value[0], value[1])
    raise BadValue(f"{knob}: expected (min_mhz, max_mhz) or None, got {value!r}")


def to_json(value: object) -> object:
    """The JSON form: clocks become [min, max]; the rest stays as is."""
    return list(value) if isinstance(value, tuple) else value
