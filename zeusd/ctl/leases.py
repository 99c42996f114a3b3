"""Leases as `zeusctl leases`, `zeusctl release`, the LEASES column of `zeusctl status`, and
`zeusd leases` print them: one line per lease (standard library only)."""

from __future__ import annotations

from .output import table

HEADERS = ["GPU", "KNOB", "HOLDER", "CAPTURED", "SET", "AGE"]


def holders_text(lease: dict) -> str:
    return ", ".join(f"uid {h['uid']} pid {h['pid']} ({h['command']})"
                     for h in lease["holders"]) or "-"


def format_leases(leases: list[dict]) -> str:
    """GPU, knob, holders, the value that comes back, the value set, age."""
    if not leases:
        return "no leases"
    return table(HEADERS, [[str(l["gpu_id"]), l["knob"], holders_text(l), l["captured_text"],
                            l["set_text"], f"{l['age_s']:.0f}s"] for l in leases])


def status_cell(leases: list[dict] | None) -> str:
    """The LEASES column: which knobs are held, by which process."""
    if not leases:
        return "-"
    return "; ".join(f"{l['knob']} by pid {','.join(str(h['pid']) for h in l['holders'])}"
                     for l in leases)


def by_gpu(body: dict) -> dict:
    """GET /leases's answer as status rows' ``leases`` field, per GPU id."""
    rows: dict[str, dict] = {}
    for lease in body["leases"]:
        rows.setdefault(str(lease["gpu_id"]), {"leases": []})["leases"].append(lease)
    return rows


def describe_released(released: list[dict]) -> str:
    if not released:
        return "nothing to release"
    return "\n".join(f"released GPU {r['gpu_id']} {r['knob']} (pid {r['pid']}): restored"
                     for r in released)
