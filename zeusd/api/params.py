"""Strict query-string and JSON-body parsing with upstream's error texts.

The Rust daemon parses with serde; clients and the upstream tests match on its
wording (`missing field`, `unknown field`, `invalid`), so we keep it.
"""

from __future__ import annotations

import json
from typing import Iterable
from urllib.parse import parse_qsl

from ..errors import BadRequest

U32_MAX = 2**32 - 1


def _qerr(text: str) -> BadRequest:
    return BadRequest(f"Query deserialize error: {text}")


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


def parse_u32(text: str) -> int:
    if text == "":
        raise _qerr("cannot parse integer from empty string")
    if not text.isascii() or not text.isdigit():
        raise _qerr("invalid digit found in string")
    value = int(text)
    if value > U32_MAX:
        raise _qerr("number too large to fit in target type")
    return value


def parse_id_list(text: str, kind: str) -> list[int]:
    """`gpu_ids` / `cpu_ids`: comma-separated, trimmed, sorted, de-duplicated."""
    if text.strip() == "":
        raise BadRequest(f"{kind}_ids must contain at least one {kind.upper()} index")
    ids = set()
    for raw in text.split(","):
        elem = raw.strip()
        if elem == "":
            raise BadRequest(f"{kind}_ids contains an empty {kind.upper()} index")
        if not elem.isascii() or not elem.isdigit():
            raise BadRequest(f"Invalid {kind.upper()} index: {elem}")
        ids.add(int(elem))
    return sorted(ids)


# --- legacy JSON bodies (serde_json wording) ---------------------------------------

_JSON_TYPE = {bool: "a boolean", int: "u32"}


def _jerr(text: str) -> BadRequest:
    return BadRequest(f"Json deserialize error: {text}")


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


def parse_json_body(raw: bytes, fields: dict[str, type]) -> dict[str, object]:
    """Every field required, unknown fields ignored, types strict (no coercion)."""
    try:
        data = json.loads(raw.decode("utf-8") if raw else "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _jerr(f"expected value ({exc})") from None
    except RecursionError:  # deeply nested input is bad input, not a daemon failure
        raise _jerr("recursion limit exceeded") from None
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
