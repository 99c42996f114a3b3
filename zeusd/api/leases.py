"""Lease routes: GET /leases (what is held, on the GPUs the caller may read) and
POST /leases/release (end leases early: the captured values are restored now)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import operations as ops
from .params import parse_id_list, parse_query
from .respond import caller_of, send_json

if TYPE_CHECKING:
    from ..service.lease_view import LeaseService


class LeaseList:
    group = ops.GPU_READ

    def __init__(self, service: LeaseService) -> None:
        self.service = service

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, ("gpu_ids",), ())
        gpu_ids = parse_id_list(params["gpu_ids"], "gpu") if "gpu_ids" in params else None
        send_json(resp, {"leases": self.service.listing(caller_of(req), gpu_ids)})


class LeaseRelease:
    group = ops.GPU_CONTROL

    def __init__(self, service: LeaseService) -> None:
        self.service = service

    def on_post(self, req, resp) -> None:
        params = parse_query(req.query_string, ("gpu_ids", "knob", "pid"), ())
        gpu_ids = parse_id_list(params["gpu_ids"], "gpu") if "gpu_ids" in params else None
        released = self.service.release(caller_of(req), gpu_ids, params.get("knob"),
                                        params.get("pid", "self"))
        send_json(resp, {"released": released})


def add_routes(app, service: LeaseService) -> None:
    app.add_route("/leases", LeaseList(service))
    app.add_route("/leases/release", LeaseRelease(service))
