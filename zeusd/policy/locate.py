"""Find the line of a table or key in the policy text, for error messages.

tomllib reports lines only for syntax errors; for semantic errors we scan the
text once. Best effort: a key inside an inline table or a multi-line string
may not be found, and then the message simply has no line number.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")

LineKey = tuple  # ("rule", 0) for a header, ("rule", 0, "power_limit_w") for a key


def index_lines(text: str) -> dict[LineKey, int]:
    """Map table headers and their keys to 1-based line numbers (first occurrence)."""
    lines: dict[LineKey, int] = {}
    counts: dict[str, int] = {}
    current: LineKey = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = _table_key(header.group(1), header.group(2), counts)
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(current + (key.group(1).strip("\"'"),), number)
    return lines


def _table_key(brackets: str, name: str, counts: dict[str, int]) -> LineKey:
    name = name.replace('"', "").replace("'", "").replace(" ", "")
    if brackets == "[[":
        index = counts.get(name, 0)
        counts[name] = index + 1
        return (name, index)
    return (name,)
