"""`zeusctl set ...` and `zeusctl reset ...`: one POST to the daemon's query-style API."""

from __future__ import annotations

from .transport import Daemon
from .units import format_clock, format_power, parse_clock_range, parse_on_off, parse_power_mw

# knob -> (route, parse(value) -> params, describe(params) -> text)
SETTERS = {
    "power-limit": ("/gpu/set_power_limit",
                    lambda v: {"power_limit_mw": parse_power_mw(v)},
                    lambda p: f"power limit {format_power(p['power_limit_mw'])}"),
    "gpu-clocks": ("/gpu/set_gpu_locked_clocks",
                   lambda v: dict(zip(("min_clock_mhz", "max_clock_mhz"), parse_clock_range(v))),
                   lambda p: f"GPU clocks locked to {_clock_range(p)}"),
    "mem-clocks": ("/gpu/set_mem_locked_clocks",
                   lambda v: dict(zip(("min_clock_mhz", "max_clock_mhz"), parse_clock_range(v))),
                   lambda p: f"memory clocks locked to {_clock_range(p)}"),
    "persistence": ("/gpu/set_persistence_mode",
                    lambda v: {"enabled": "true" if parse_on_off(v) else "false"},
                    lambda p: f"persistence mode {'on' if p['enabled'] == 'true' else 'off'}"),
}
RESETTERS = {
    "gpu-clocks": ("/gpu/reset_gpu_locked_clocks", "GPU clocks unlocked"),
    "mem-clocks": ("/gpu/reset_mem_locked_clocks", "memory clocks unlocked"),
    "clocks": ("/gpu/reset_locked_clocks", "GPU and memory clocks unlocked"),
}


def _clock_range(params: dict) -> str:
    low, high = params["min_clock_mhz"], params["max_clock_mhz"]
    return format_clock(low) if low == high else f"{low}-{format_clock(high)}"


def parse_setting(knob: str, value: str) -> dict:
    """The query parameters for ``set <knob> <value>``; UnitError before anything is sent."""
    return SETTERS[knob][1](value)


def apply(daemon: Daemon, route: str, gpu_ids: list[int] | None, params: dict,
          block: bool) -> list[int]:
    """POST the change; ``gpu_ids`` None means every GPU /discover lists. Returns the ids."""
    if gpu_ids is None:
        gpu_ids = [g["id"] for g in daemon.get("/discover")["gpus"]]
    query = {"gpu_ids": ",".join(map(str, gpu_ids)), **params,
             "block": "true" if block else "false"}
    daemon.post(route, query)
    return gpu_ids


def result(operation: str, gpu_ids: list[int], params: dict, block: bool) -> dict:
    """The --json shape of a change that the daemon accepted."""
    typed = {k: (v == "true") if k == "enabled" else v for k, v in params.items()}
    return {"ok": True, "operation": operation, "gpu_ids": gpu_ids, "block": block,
            "params": typed}


def describe(text: str, gpu_ids: list[int], block: bool) -> str:
    gpus = ",".join(map(str, gpu_ids))
    return f"GPU {gpus}: {text}" + ("" if block else " (queued, not waited for)")
