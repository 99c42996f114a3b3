"""`zeusd doctor`'s findings: one Check each, printed as text or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

OK, PROBLEM, WARNING, INFO, NOT_CHECKED = "ok", "problem", "warning", "info", "not checked"
_TAGS = {OK: "[ ok ]", PROBLEM: "[FAIL]", WARNING: "[warn]", INFO: "[info]",
         NOT_CHECKED: "[ -- ]"}


@dataclass
class Check:
    """A finding. A PROBLEM always carries its ``fix``; ``data`` goes to --json only."""

    name: str
    status: str
    detail: str
    fix: str | None = None
    data: dict = field(default_factory=dict)


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == PROBLEM]


def render_text(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{_TAGS[check.status]} {check.name}: {check.detail}")
        if check.fix:
            lines.append(f"       fix: {check.fix}")
    found = problems(checks)
    lines.append(f"{len(found)} problem(s)" + (": " + ", ".join(c.name for c in found)
                                                if found else ""))
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    return json.dumps({"problems": len(problems(checks)),
                       "checks": [asdict(c) for c in checks]}, indent=2)
