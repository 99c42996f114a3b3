"""The Falcon application: wires routes to the services they call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from ..service.lease_view import LeaseService
from . import cpu, errors, gpu, leases, legacy, meta, streams
from .middleware import Gate
from .params import IndexConverter

if TYPE_CHECKING:
    from ..service.discovery import Discovery
    from ..service.gpu_control import GpuControl
    from ..service.reads import CpuReads, GpuReads
    from ..service.streams import StreamHub


def create_app(*, enabled_groups: frozenset[str], signing_key: bytes | None,
               discovery: Discovery, gpu_control: GpuControl, gpu_reads: GpuReads,
               cpu_reads: CpuReads, streams_hub: StreamHub | None = None,
               leases_service: LeaseService | None = None) -> falcon.App:
    """``streams_hub`` None: no stream routes. ``signing_key`` None: no tokens."""
    app = falcon.App(middleware=[Gate(enabled_groups, signing_key)])
    app.req_options.keep_blank_qs_values = True
    app.router_options.converters["index"] = IndexConverter
    errors.install(app)
    meta.add_routes(app, discovery)
    gpu.add_routes(app, gpu_control, gpu_reads)
    legacy.add_routes(app, gpu_control)
    cpu.add_routes(app, cpu_reads)
    leases.add_routes(app, leases_service or LeaseService(None, None))  # None: leases are off
    if streams_hub is not None:
        streams.add_routes(app, streams_hub)
    return app
