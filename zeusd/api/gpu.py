"""Query-style GPU routes (current Zeus clients): /gpu/set_*, /gpu/reset_*, /gpu/get_*."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

from .. import operations as ops
from ..operations import GpuChange
from .params import optional_ids, parse_bool, parse_id_list, parse_query, parse_u32
from .respond import EMPTY, Answer, after_response_in, caller_of, json_answer, pin_owner_in

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

    def prepare(self, query_string: str):
        """Parse the query (400 if it is bad): a call ``(caller, environ) -> Answer`` that
        serves this query for any caller, so the fast lane parses a query only once."""
        params = parse_query(query_string, self.allowed, self.allowed)
        gpu_ids = parse_id_list(params["gpu_ids"], "gpu")
        block = parse_bool(params["block"])
        values = {name: params[name] for name in self.value_names}
        changes = tuple(build_changes(self.operation, gpu_ids, values))  # shared: immutable
        return functools.partial(self.answer, changes, block)

    def answer(self, changes: tuple[GpuChange, ...], block: bool, caller, environ) -> Answer:
        self.control.change(caller, changes, block, pin_owner_in(environ),
                            after_response_in(environ))
        return EMPTY

    def on_post(self, req, resp) -> None:
        self.prepare(req.query_string)(caller_of(req), req.env).to_falcon(resp)


UNAVAILABLE_HEADER = "Zeusd-Unavailable-Gpus"


class GpuRead:
    group = ops.GPU_READ

    def __init__(self, reads: GpuReads, method: str) -> None:
        self.read = getattr(reads, method)

    def prepare(self, query_string: str):
        """Parse the query (400 if it is bad): a call ``(caller, environ) -> Answer``."""
        params = parse_query(query_string, ("gpu_ids",), ())
        return functools.partial(self.answer, optional_ids(params, "gpu"))

    def answer(self, gpu_ids: tuple[int, ...] | None, caller, environ) -> Answer:
        body = self.read(caller, gpu_ids)
        missing = getattr(body, "unavailable", None)
        if missing:  # a header: released clients parse every body key as a GPU id
            return json_answer(body, headers=((UNAVAILABLE_HEADER, json.dumps(
                {str(k): v for k, v in missing.items()})),))
        return json_answer(body)

    def on_get(self, req, resp) -> None:
        self.prepare(req.query_string)(caller_of(req), req.env).to_falcon(resp)


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
