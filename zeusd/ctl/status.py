"""`zeusctl status` and `zeusctl whoami`: what the daemon reports, one row per GPU."""

from __future__ import annotations

from . import leases
from .output import table
from .transport import Daemon, DaemonError
from .units import format_power

# Each read route and how its per-GPU answer lands in a GPU's row. This is the hook for
# more columns: when the daemon serves locked clocks or leases (who holds which knob),
# add (route, extractor) here and a column to COLUMNS -- nothing else changes.
STATUS_READS = (
    ("/gpu/get_power", lambda body: {k: {"power_mw": v} for k, v in body["power_mw"].items()}),
    ("/gpu/get_power_limit", lambda body: body),
    ("/gpu/get_power_limit_constraints", lambda body: body),
    ("/gpu/get_persistence_mode",
     lambda body: {k: {"persistence_mode": v["enabled"]} for k, v in body.items()}),
    ("/leases", leases.by_gpu),
)
# Reads an older daemon, or one with leases off, answers 404: the column stays empty.
OPTIONAL_READS = {"/leases"}
FIELDS = ("power_mw", "power_limit_mw", "min_power_limit_mw", "max_power_limit_mw",
          "persistence_mode", "leases")


def _on_off(value) -> str:
    return "-" if value is None else ("on" if value else "off")


COLUMNS = (
    ("GPU", lambda g: str(g["id"])),
    ("NAME", lambda g: g["name"]),
    ("POWER", lambda g: format_power(g["power_mw"])),
    ("LIMIT", lambda g: format_power(g["power_limit_mw"])),
    ("RANGE", lambda g: "-" if g["min_power_limit_mw"] is None else
     f"{format_power(g['min_power_limit_mw'])} - {format_power(g['max_power_limit_mw'])}"),
    ("PERSISTENCE", lambda g: _on_off(g["persistence_mode"])),
    ("LEASES", lambda g: leases.status_cell(g["leases"])),
)


def collect_status(daemon: Daemon, gpu_ids: list[int] | None) -> dict:
    """{"gpus": [row...], "errors": [{"route", "status", "message"}...]}: a read the daemon
    refuses (policy, disabled group, NVML) leaves its fields null and is listed in errors."""
    info = daemon.get("/discover")
    known = {g["id"] for g in info["gpus"]}
    params = {"gpu_ids": ",".join(map(str, gpu_ids))} if gpu_ids is not None else None
    if gpu_ids is not None and not set(gpu_ids) <= known:
        daemon.get(STATUS_READS[0][0], params)  # raises with the daemon's own "not found"
    rows = {str(g["id"]): {"id": g["id"], "name": g["name"], **dict.fromkeys(FIELDS)}
            for g in info["gpus"] if gpu_ids is None or g["id"] in gpu_ids}
    errors = []
    for route, extract in STATUS_READS if rows else ():
        try:
            per_gpu = extract(daemon.get(route, params))
        except DaemonError as exc:
            if route in OPTIONAL_READS and exc.status == 404:
                continue
            errors.append({"route": route, "status": exc.status, "message": exc.message})
            continue
        for key, values in per_gpu.items():
            if key in rows:
                rows[key].update(values)
    return {"gpus": list(rows.values()), "errors": errors}


def render_status(result: dict) -> str:
    rows = [[render(g) for _, render in COLUMNS] for g in result["gpus"]]
    return table([name for name, _ in COLUMNS], rows) if rows else "no GPUs"


def collect_whoami(daemon: Daemon) -> dict:
    info = daemon.get("/discover")
    return {"caller": info.get("caller"), "policy": info.get("policy"),
            "auth_required": info.get("auth_required"),
            "enabled_api_groups": info.get("enabled_api_groups", [])}


def _describe_caller(caller: dict | None) -> str:
    if not caller:
        return "the daemon does not say who you are (an older zeusd?)"
    if caller.get("transport") == "unix":
        groups = ",".join(str(g) for g in caller.get("groups", []))
        return (f"uid {caller.get('uid')} gid {caller.get('gid')} pid {caller.get('pid')}"
                f" groups {groups or '-'} (Unix socket)")
    subject = caller.get("subject")
    return f"token subject {subject!r} (TCP)" if subject else "anonymous (TCP, no token)"


def _range(grant: dict, key: str, low: str, high: str, fmt) -> str | None:
    limit = grant.get(key)
    return None if not limit else f"{key.split('_')[0]} {fmt(limit[low])}-{fmt(limit[high])}"


def _describe_grant(grant: dict) -> str:
    gpus = grant["gpus"] if grant["gpus"] == "all" else ",".join(map(str, grant["gpus"]))
    ops = ", ".join(grant["operations"]) or "nothing"
    limits = [r for r in (
        _range(grant, "power_limit_mw", "min_power_limit_mw", "max_power_limit_mw", format_power),
        _range(grant, "gpu_clock_mhz", "min_clock_mhz", "max_clock_mhz", lambda v: f"{v} MHz"),
        _range(grant, "mem_clock_mhz", "min_clock_mhz", "max_clock_mhz", lambda v: f"{v} MHz"),
    ) if r]
    extra = f" (limits: {'; '.join(limits)})" if limits else ""
    return f"rule '{grant['rule']}' on GPUs {gpus}: {ops}{extra}"


def render_whoami(result: dict) -> str:
    lines = [f"caller: {_describe_caller(result['caller'])}",
             f"API groups enabled: {', '.join(result['enabled_api_groups']) or '-'}"]
    policy = result.get("policy")
    if policy:
        lines.append(f"policy {policy['policy_hash'][:12]} from {policy['source']} "
                     "(first matching rule decides):")
        lines += [f"  {_describe_grant(g)}" for g in policy["applies"]] or ["  nothing"]
    return "\n".join(lines)
