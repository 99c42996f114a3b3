"""Human units in and out: ``300W``, ``300000mW``, ``1.2kW``, ``1980MHz``, ``1.98GHz``.

Values are parsed with ``Decimal`` so ``1.2kW`` is exactly 1200000 mW; a value
that is not a whole number of the API's unit (mW, MHz) is refused rather than
rounded, because a silently rounded setting is not what the user asked for.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

U32_MAX = 2**32 - 1
POWER_UNITS_MW = {"mw": Decimal(1), "w": Decimal(1000), "kw": Decimal(1_000_000)}
CLOCK_UNITS_MHZ = {"mhz": Decimal(1), "ghz": Decimal(1000)}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


class UnitError(ValueError):
    """A value the user typed is not a valid quantity; the message says what would be."""


def _parse(text: str, units: dict[str, Decimal], what: str, example: str,
           default_unit: str | None = None) -> int:
    match = _QUANTITY.match(text)
    if not match:
        raise UnitError(f"invalid {what} '{text}' (e.g. {example})")
    number, unit = match.group(1), (match.group(2) or default_unit or "").lower()
    if unit not in units:
        names = ", ".join(_unit_name(u) for u in sorted(units, key=units.get))
        raise UnitError(f"invalid {what} '{text}': give a unit ({names}), e.g. {example}")
    try:
        value = Decimal(number) * units[unit]
    except InvalidOperation:
        raise UnitError(f"invalid {what} '{text}' (e.g. {example})") from None
    base = min(units, key=units.get)
    if value != value.to_integral_value():
        raise UnitError(f"invalid {what} '{text}': not a whole number of {_unit_name(base)}")
    if value > U32_MAX:
        raise UnitError(f"invalid {what} '{text}': too large")
    return int(value)


def _unit_name(unit: str) -> str:
    return {"mw": "mW", "w": "W", "kw": "kW", "mhz": "MHz", "ghz": "GHz"}[unit]


def parse_power_mw(text: str) -> int:
    """``300W`` -> 300000; the unit is required (a bare 300 could be W or mW)."""
    return _parse(text, POWER_UNITS_MW, "power", "300W, 300000mW or 1.2kW")


def parse_clock_mhz(text: str, default_unit: str | None = None) -> int:
    """``1980MHz`` or ``1.98GHz`` -> 1980."""
    return _parse(text, CLOCK_UNITS_MHZ, "clock", "1980MHz or 1.98GHz", default_unit)


def parse_clock_range(text: str) -> tuple[int, int]:
    """``900-1980MHz`` -> (900, 1980): a unit on the upper bound also applies to a bare lower
    one; ``1980MHz`` alone locks min = max."""
    low_text, sep, high_text = text.partition("-")
    if not sep:
        value = parse_clock_mhz(text)
        return value, value
    high_match = _QUANTITY.match(high_text)
    shared_unit = high_match.group(2) if high_match else None
    low, high = parse_clock_mhz(low_text, shared_unit), parse_clock_mhz(high_text)
    if low > high:
        raise UnitError(f"invalid clock range '{text}': the minimum {low} MHz is above the "
                        f"maximum {high} MHz (a unit after the range applies to both ends)")
    return low, high


def parse_on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "enabled", "1"):
        return True
    if value in ("off", "false", "disabled", "0"):
        return False
    raise UnitError(f"invalid switch '{text}' (on or off)")


def parse_gpu_ids(text: str) -> list[int] | None:
    """``0,1`` -> [0, 1]; ``all`` -> None (every GPU the daemon has)."""
    if text.strip().lower() == "all":
        return None
    ids = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise UnitError(f"invalid GPU list '{text}' (e.g. 0,1 or all)")
        ids.append(int(part))
    return sorted(set(ids))


def _trim(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_power(mw: int | None) -> str:
    """300000 -> ``300 W``, 312460 -> ``312.5 W`` (0.1 W is what a person reads; --json
    keeps the exact mW); None -> ``-``."""
    if mw is None:
        return "-"
    return f"{_trim(round(Decimal(mw) / 1000, 1))} W"


def format_clock(mhz: int | None) -> str:
    return "-" if mhz is None else f"{mhz} MHz"
