"""Lexical limits checked before tomllib sees the policy text.

tomllib recurses once per nested array or inline table (RecursionError, a
traceback, past ~1000 levels) and converts integer literals with int()
(ValueError past 4300 digits). A policy needs three levels of nesting and
numbers of a few digits, so anything far beyond either is refused here, with
its line, before the parser runs.
"""

from __future__ import annotations

MAX_NESTING = 16
MAX_NUMBER_CHARS = 32

_QUOTES = ('"""', "'''", '"', "'")


def lexical_problem(text: str) -> tuple[int, str] | None:
    """(line, what is wrong) for the first over-deep nesting or over-long number."""
    line, depth, position, size = 1, 0, 0, len(text)
    while position < size:
        char = text[position]
        if char == "\n":
            line += 1
        elif char == "#":
            position = _line_end(text, position)
            continue
        elif char in "\"'":
            position, line = _skip_string(text, position, line)
            continue
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line, (f"arrays or inline tables nested more than {MAX_NESTING} deep "
                              "(a policy needs at most 3)")
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char.isdigit():
            end = _run_end(text, position)
            if end - position > MAX_NUMBER_CHARS:
                return line, (f"a number of {end - position} characters (at most "
                              f"{MAX_NUMBER_CHARS}: no policy value needs more)")
            position = end
            continue
        position += 1
    return None


def _line_end(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end


def _run_end(text: str, position: int) -> int:
    """End of a number-like run: digits, letters (hex, exponents), `_`."""
    while position < len(text) and (text[position].isalnum() or text[position] == "_"):
        position += 1
    return position


def _skip_string(text: str, position: int, line: int) -> tuple[int, int]:
    """Position after the string starting at ``position`` (and the line it ends on).
    An unterminated string runs to the end: tomllib then reports it."""
    quote = next(q for q in _QUOTES if text.startswith(q, position))
    position += len(quote)
    basic = quote[0] == '"'
    while position < len(text):
        if basic and text[position] == "\\":
            line += text[position + 1:position + 2] == "\n"
            position += 2
            continue
        if text.startswith(quote, position):
            return position + len(quote), line
        if text[position] == "\n":
            if len(quote) == 1:  # a one-line string ends at the newline (a TOML error)
                return position, line
            line += 1
        position += 1
    return position, line
