"""Strict query-string and JSON-body parsing with upstream's error texts.

The Rust daemon parses with serde; clients and the upstream tests match on its
wording (`missing field`, `unknown field`, `invalid`), so we keep it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import parse_qsl

import falcon

from ..errors import InvalidValue

U32_MAX = 2**32 - 1
# Digits a u32 can have. Longer digit strings are refused by their length, before int()
# sees them: Python's int() is quadratic-ish and refuses strings over 4300 digits with a
# ValueError whose text must never reach a client.
U32_DIGITS = 10
# serde_json's nesting limit; Python's parser would recurse until RecursionError.
MAX_JSON_DEPTH = 128


def _qerr(text: str) -> InvalidValue:
    return InvalidValue(f"Query deserialize error: {text}")


def parse_query(query_string: str, allowed: Iterable[str],
                required: Iterable[str]) -> dict[str, str]:
    """The query as a dict; unknown, duplicate or missing fields are 400."""
    allowed = tuple(allowed)
    params: dict[str, str] = {}
    for key, value in _pairs(query_string):
        if key not in allowed:
            expected = ", ".join(f"`{a}`" for a in allowed)
            raise _qerr(f"unknown field `{key}`, expected one of {expected}")
        if key in params:
            raise _qerr(f"duplicate field `{key}`")
        params[key] = value
    for key in required:
        if key not in params:
            raise _qerr(f"missing field `{key}`")
    return params


def _pairs(query_string: str) -> list[tuple[str, str]]:
    """Split a query string; percent-decoding only where needed (the hot path)."""
    if not query_string:
        return []
    if "%" in query_string or "+" in query_string:
        try:
            return parse_qsl(query_string, keep_blank_values=True, errors="strict",
                             max_num_fields=32)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _qerr(f"malformed query string ({exc})") from None
    pairs = []
    for part in query_string.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    if len(pairs) > 32:
        raise _qerr("too many fields")
    return pairs


def parse_bool(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise _qerr("provided string was not `true` or `false`")


def is_ascii_digits(text: str) -> bool:
    """Only 0-9: no sign, no `_`, no whitespace, no other script's digits."""
    return text.isascii() and text.isdigit()


def u32_value(digits: str) -> int | None:
    """The value of an ASCII digit string, or None if it does not fit in a u32."""
    significant = digits.lstrip("0")
    if len(significant) > U32_DIGITS:
        return None
    value = int(significant or "0")
    return value if value <= U32_MAX else None


def parse_u32(text: str) -> int:
    if text == "":
        raise _qerr("cannot parse integer from empty string")
    if not is_ascii_digits(text):
        raise _qerr("invalid digit found in string")
    value = u32_value(text)
    if value is None:
        raise _qerr("number too large to fit in target type")
    return value


def parse_index(text: str) -> int | None:
    """A device index (query list element or legacy path segment), or None if it is not one.

    One rule for every place an index comes from: ASCII digits that fit in a u32.
    """
    return u32_value(text) if text and is_ascii_digits(text) else None


def parse_id_list(text: str, kind: str) -> list[int]:
    """`gpu_ids` / `cpu_ids`: comma-separated, trimmed, sorted, de-duplicated."""
    if text.strip() == "":
        raise InvalidValue(f"{kind}_ids must contain at least one {kind.upper()} index")
    ids = set()
    for raw in text.split(","):
        elem = raw.strip()
        if elem == "":
            raise InvalidValue(f"{kind}_ids contains an empty {kind.upper()} index")
        index = parse_index(elem)
        if index is None:
            raise InvalidValue(f"Invalid {kind.upper()} index: {elem}")
        ids.add(index)
    return sorted(ids)


def optional_ids(params: dict[str, str], kind: str) -> tuple[int, ...] | None:
    """``<kind>_ids`` of a parsed query as a tuple (a fast-lane plan shares it between
    concurrent requests, so it must not change), or None when the query has none (all)."""
    name = f"{kind}_ids"
    return tuple(parse_id_list(params[name], kind)) if name in params else None


@dataclass(frozen=True)
class OversizedIndex:
    """ASCII digits in a legacy path that do not fit a u32 (answered 400 by the route)."""

    text: str


class IndexConverter(falcon.routing.BaseConverter):
    """`{gpu_id:index}` in a legacy path: ASCII digits only, so `-1` (as ever), `+2`, `0_1`
    or another script's digits are no route (404); digits past a u32 are matched but never
    reach int() (the route answers `Invalid GPU index: ...`, as the query API does)."""

    def convert(self, value: str) -> int | OversizedIndex | None:
        if not value or not is_ascii_digits(value):
            return None
        index = u32_value(value)
        return OversizedIndex(value) if index is None else index


def path_index(value: int | OversizedIndex, kind: str) -> int:
    """The index a route got from IndexConverter; 400 for one past a u32."""
    if isinstance(value, OversizedIndex):
        raise InvalidValue(f"Invalid {kind.upper()} index: {value.text}")
    return value


# --- legacy JSON bodies (serde_json wording) ---------------------------------------

_JSON_TYPE = {bool: "a boolean", int: "u32"}


def _jerr(text: str) -> InvalidValue:
    return InvalidValue(f"Json deserialize error: {text}")


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if value is None:
        return "null"
    return "a sequence" if isinstance(value, list) else "a map"


def _json_int(text: str) -> int | float:
    # A number too long for any u32 field is kept as a float (inf if huge): it is then
    # refused as "invalid type", as serde_json refuses a number it reads as f64.
    return int(text) if len(text) <= 2 * U32_DIGITS else float(text)


def _too_deep(text: str) -> bool:
    """More than MAX_JSON_DEPTH nested arrays/objects (brackets in strings count too:
    an over-estimate that only ever refuses bodies no client sends)."""
    depth = 0
    for char in text:
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _load_json(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8") if raw else ""
    except UnicodeDecodeError as exc:
        raise _jerr(f"expected value ({exc})") from None
    if ("[" in text or "{" in text) and _too_deep(text):
        raise _jerr("recursion limit exceeded")
    try:
        return json.loads(text, parse_int=_json_int)
    except ValueError as exc:
        raise _jerr(f"expected value ({exc})") from None
    except RecursionError:  # belt and braces: the depth check above should catch it
        raise _jerr("recursion limit exceeded") from None


def parse_json_body(raw: bytes, fields: dict[str, type]) -> dict[str, object]:
    """Every field required, unknown fields ignored, types strict (no coercion)."""
    data = _load_json(raw)
    if not isinstance(data, dict):
        raise _jerr(f"invalid type: {_describe(data)}, expected a struct")
    out: dict[str, object] = {}
    for name, typ in fields.items():
        if name not in data:
            raise _jerr(f"missing field `{name}`")
        value = data[name]
        ok = isinstance(value, bool) if typ is bool else (
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32_MAX)
        if not ok:
            if typ is int and isinstance(value, int) and not isinstance(value, bool):
                raise _jerr(f"invalid value: {_describe(value)}, expected u32")
            raise _jerr(f"invalid type: {_describe(value)}, expected {_JSON_TYPE[typ]}")
        out[name] = value
    return out
