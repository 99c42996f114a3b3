"""Typed readers for single policy values; each raises FieldError(what was found).

The caller (parse.py) adds file, line and key path to the message.
"""

from __future__ import annotations

import grp
import pwd
from decimal import Decimal

from zeusd.policy.model import OPERATION_NAMES, OPERATION_SHORTHANDS, Range

MAX_U32 = 2**32 - 1
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no id" to the kernel


class FieldError(ValueError):
    """A single value is wrong; the message says what was expected and what was found."""


def found(value: object) -> str:
    """'string "abc"', 'integer 5', ... for 'found ...' in messages."""
    kinds = ((bool, "boolean"), (int, "integer"), (Decimal, "number"), (str, "string"),
             (list, "array"), (dict, "table"))
    kind = next((name for typ, name in kinds if isinstance(value, typ)), type(value).__name__)
    if isinstance(value, str):
        return f'{kind} "{value}"'
    if isinstance(value, dict):
        return kind
    return f"{kind} {_toml_text(value)}"


def _toml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_text(v) if not isinstance(v, str) else f'"{v}"'
                               for v in value) + "]"
    return str(value)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, found {found(value)}")
    return value


def string_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FieldError(f"must be a list of {what}, found {found(value)}")
    return value


def id_list(value: object, what: str) -> list[str | int]:
    """A list of names or numeric ids (users/groups)."""
    if not isinstance(value, list) or not all((isinstance(v, str) and v) or is_int(v)
                                              for v in value):
        raise FieldError(f"must be a list of {what} names or numeric ids, found {found(value)}")
    for entry in value:
        if is_int(entry) and not 0 <= entry <= MAX_ID:
            raise FieldError(f"{entry} is not a valid numeric id (0-{MAX_ID})")
    return value


def resolve_user(entry: str | int) -> int | None:
    """uid of a user name (None if unknown); a numeric uid is taken as it is."""
    if is_int(entry):
        return entry
    try:
        return pwd.getpwnam(entry).pw_uid
    except KeyError:
        return None


def resolve_group(entry: str | int) -> int | None:
    """gid of a group name (None if unknown); a numeric gid is taken as it is."""
    if is_int(entry):
        return entry
    try:
        return grp.getgrnam(entry).gr_gid
    except KeyError:
        return None


def gpus(value: object) -> frozenset[int] | None:
    """"all" -> None, or a non-empty list of distinct GPU indices."""
    if value == "all":
        return None
    if not isinstance(value, list) or not value or not all(is_int(v) and 0 <= v <= MAX_U32
                                                           for v in value):
        raise FieldError(f'must be "all" or a non-empty list of GPU indices, found {found(value)}')
    if len(set(value)) != len(value):
        raise FieldError(f"lists a GPU index twice: {_toml_text(value)}")
    return frozenset(value)


def operations(value: object) -> frozenset[str]:
    names = string_list(value, "operation names")
    granted: set[str] = set()
    for name in names:
        if name in OPERATION_SHORTHANDS:
            granted.update(OPERATION_SHORTHANDS[name])
        elif name in OPERATION_NAMES:
            granted.add(name)
        else:
            known = ", ".join(sorted(OPERATION_NAMES) + sorted(OPERATION_SHORTHANDS))
            raise FieldError(f'unknown operation "{name}" (known: {known})')
    return frozenset(granted)


def power_range_mw(value: object) -> Range:
    """[min_w, max_w] in watts (decimals allowed if exact in mW) -> Range in mW."""
    low_w, high_w = _pair(value, "watts")
    return _ordered(_watts_to_mw(low_w), _watts_to_mw(high_w), low_w, high_w, "W", "mW")


def clock_range_mhz(value: object) -> Range:
    low, high = _pair(value, "MHz")
    for bound in (low, high):
        if not is_int(bound):
            raise FieldError(f"clock bounds are whole MHz, found {found(bound)}")
    return _ordered(low, high, low, high, "MHz", "MHz")


def _pair(value: object, unit: str) -> tuple:
    if (not isinstance(value, list) or len(value) != 2
            or not all(is_int(v) or isinstance(v, Decimal) for v in value)):
        raise FieldError(f"must be a range [min, max] in {unit}, found {found(value)}")
    return value[0], value[1]


def _watts_to_mw(watts: int | Decimal) -> int:
    """Exact, without Decimal arithmetic: its context would round 1e-999999999 W to 0 mW
    and overflow on 1e999999 W. Comparisons are exact; the digits are then shifted."""
    if isinstance(watts, Decimal) and not watts.is_finite():
        raise FieldError(f"{watts} W is not a finite number of watts")
    if not 0 <= watts <= Decimal(MAX_U32) / 1000:
        raise FieldError(f"{watts} W is out of bounds (0 to {MAX_U32} mW)")
    _, digits, exponent = Decimal(watts).as_tuple()
    value = int("".join(map(str, digits)))
    if value == 0:
        return 0
    shift = exponent + 3  # watts -> milliwatts
    if shift >= 0:
        return value * 10**shift  # bounded: watts <= 4294967.295 was checked
    if -shift > len(digits) or value % 10**-shift:
        raise FieldError(f"{watts} W is not a whole number of milliwatts "
                         f"(at most 3 decimals, e.g. 250.5)")
    return value // 10**-shift


def _ordered(low: int, high: int, low_shown, high_shown, unit: str, api_unit: str) -> Range:
    for bound, shown in ((low, low_shown), (high, high_shown)):
        if not 0 <= bound <= MAX_U32:
            raise FieldError(f"{shown} {unit} is out of bounds (0 to {MAX_U32} {api_unit})")
    if low > high:
        raise FieldError(f"is an empty range: min {low_shown} {unit} > max {high_shown} {unit}")
    return Range(low, high)
