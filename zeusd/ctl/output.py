"""Rendering: aligned tables, sparklines, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import TextIO

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled between the smallest and largest value shown."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        return SPARK_CHARS[len(SPARK_CHARS) // 2] * len(values)
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((v - low) / span * top)] for v in values)


def print_json(data: object, out: TextIO | None = None) -> None:
    """One compact, key-sorted JSON document per line (stable for scripts and diffs)."""
    out = out or sys.stdout
    out.write(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    out.flush()
