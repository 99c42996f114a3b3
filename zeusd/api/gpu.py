"""Query-style GPU routes (current Zeus clients): /gpu/set_*, /gpu/reset_*, /gpu/get_*."""

from __future__ import annotations

import json

from typing import TYPE_CHECKING

from .. import operations as ops
from ..operations import GpuChange
from .params import parse_bool, parse_id_list, parse_query, parse_u32
from .respond import after_response_of, caller_of, pin_owner_of, send_empty, send_json

if TYPE_CHECKING:
    from ..service.gpu_control import GpuControl
    from ..service.reads import GpuReads



def build_changes(operation: str, gpu_ids: list[int], values: dict[str, str]) -> list[GpuChange]:
    """Typed values -> one GpuChange per GPU."""
    typed: dict[str, object] = {}
    for name, text in values.items():
        typed[name] = parse_bool(text) if name in ops.BOOL_PARAMS else parse_u32(text)
    return [GpuChange(operation, i, **typed) for i in gpu_ids]


class GpuWrite:
    group = ops.GPU_CONTROL

    def __init__(self, control: GpuControl, operation: str) -> None:
        self.control = control
        self.operation = operation
        self.value_names = ops.GPU_OPERATIONS[operation].params
        self.allowed = ("gpu_ids", "block", *self.value_names)

    def on_post(self, req, resp) -> None:
        params = parse_query(req.query_string, self.allowed, self.allowed)
        gpu_ids = parse_id_list(params["gpu_ids"], "gpu")
        block = parse_bool(params["block"])
        values = {name: params[name] for name in self.value_names}
        changes = build_changes(self.operation, gpu_ids, values)
        self.control.change(caller_of(req), changes, block, pin_owner_of(req),
                            after_response_of(req))
        send_empty(resp)


UNAVAILABLE_HEADER = "Zeusd-Unavailable-Gpus"


class GpuRead:
    group = ops.GPU_READ

    def __init__(self, reads: GpuReads, method: str) -> None:
        self.read = getattr(reads, method)

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, ("gpu_ids",), ())
        gpu_ids = parse_id_list(params["gpu_ids"], "gpu") if "gpu_ids" in params else None
        body = self.read(caller_of(req), gpu_ids)
        missing = getattr(body, "unavailable", None)
        if missing:  # a header: released clients parse every body key as a GPU id
            resp.set_header(UNAVAILABLE_HEADER, json.dumps({str(k): v for k, v in missing.items()}))
        send_json(resp, body)


READ_ROUTES = {
    "/gpu/get_power": "power",
    "/gpu/get_cumulative_energy": "cumulative_energy",
    "/gpu/get_power_limit": "power_limit",
    "/gpu/get_power_limit_constraints": "power_limit_constraints",
    "/gpu/get_persistence_mode": "persistence_mode",
    "/gpu/get_supported_clocks": "supported_clocks",  # (ours)
}


def add_routes(app, control: GpuControl, reads: GpuReads) -> None:
    for operation in ops.GPU_OPERATIONS:
        app.add_route(f"/gpu/{operation}", GpuWrite(control, operation))
    for path, method in READ_ROUTES.items():
        app.add_route(path, GpuRead(reads, method))
