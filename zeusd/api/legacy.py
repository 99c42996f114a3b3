"""Legacy path-style GPU routes (zeus-ml / zeus 0.10-0.13): POST /gpu/{id}/<op>, JSON body.

Errors here are text/plain, as upstream's early daemon answered them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import operations as ops
from ..operations import GpuChange
from .params import parse_json_body, path_index
from .respond import after_response_in, caller_of, pin_owner_in, send_empty

if TYPE_CHECKING:
    from ..service.gpu_control import GpuControl

LEGACY_OPERATIONS = {
    "set_power_limit": ops.SET_POWER_LIMIT,
    "set_persistence_mode": ops.SET_PERSISTENCE_MODE,
    "set_persistent_mode": ops.SET_PERSISTENCE_MODE,  # zeusd 0.1.0 spelling
    "set_gpu_locked_clocks": ops.SET_GPU_LOCKED_CLOCKS,
    "reset_gpu_locked_clocks": ops.RESET_GPU_LOCKED_CLOCKS,
    "set_mem_locked_clocks": ops.SET_MEM_LOCKED_CLOCKS,
    "reset_mem_locked_clocks": ops.RESET_MEM_LOCKED_CLOCKS,
}


class LegacyGpuWrite:
    group = ops.GPU_CONTROL
    legacy_errors = True

    def __init__(self, control: GpuControl, operation: str) -> None:
        self.control = control
        self.operation = operation
        names = ops.GPU_OPERATIONS[operation].params
        self.fields = {n: (bool if n in ops.BOOL_PARAMS else int) for n in names}
        self.fields["block"] = bool

    def on_post(self, req, resp, gpu_id: int) -> None:
        gpu_id = path_index(gpu_id, "gpu")
        body = parse_json_body(req.bounded_stream.read(), self.fields)
        block = body.pop("block")
        change = GpuChange(self.operation, gpu_id, **body)
        self.control.change(caller_of(req), [change], block, pin_owner_in(req.env),
                            after_response_in(req.env))
        send_empty(resp)


def add_routes(app, control: GpuControl) -> None:
    for path_op, operation in LEGACY_OPERATIONS.items():
        app.add_route(f"/gpu/{{gpu_id:index}}/{path_op}", LegacyGpuWrite(control, operation))
