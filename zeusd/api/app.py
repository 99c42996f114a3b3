"""The Falcon application: wires routes to the services they call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from ..service.lease_view import LeaseService
from . import cpu, errors, gpu, leases, legacy, meta, metrics, streams
from .fast_lane import FastLane
from .middleware import Gate
from .params import IndexConverter

if TYPE_CHECKING:
    from ..service.discovery import Discovery
    from ..service.gpu_control import GpuControl
    from ..service.metrics import MetricsService
    from ..service.reads import CpuReads, GpuReads
    from ..service.streams import StreamHub


def create_app(*, enabled_groups: frozenset[str], signing_key: bytes | None,
               discovery: Discovery, gpu_control: GpuControl, gpu_reads: GpuReads,
               cpu_reads: CpuReads, streams_hub: StreamHub | None = None,
               leases_service: LeaseService | None = None,
               metrics_service: MetricsService | None = None, fast_lane: bool = True):
    """The WSGI app. ``streams_hub`` None: no stream routes. ``signing_key`` None: no tokens.
    ``metrics_service`` None: /metrics answers 404 and no request is counted.
    ``fast_lane``: serve the hot query-style routes through the fast lane (fast_lane.py;
    never with tokens on, whose gate needs Falcon); False: Falcon serves every request."""
    middleware = [Gate(enabled_groups, signing_key)]
    counter = None
    if metrics_service is not None:
        counter = metrics.CountRequests(metrics_service.requests)
        middleware.append(counter)
    app = falcon.App(middleware=middleware)
    app.req_options.keep_blank_qs_values = True
    app.router_options.converters["index"] = IndexConverter
    errors.install(app)
    routes = HeadLikeGet(app, enabled_groups)
    meta.add_routes(routes, discovery)
    gpu.add_routes(routes, gpu_control, gpu_reads)
    legacy.add_routes(routes, gpu_control)
    cpu.add_routes(routes, cpu_reads)
    leases.add_routes(routes, leases_service or LeaseService(None, None))  # None: leases are off
    if streams_hub is not None:
        streams.add_routes(routes, streams_hub)
    metrics.add_routes(routes, metrics_service)  # without one: the group's 404, like any group
    if not fast_lane or signing_key is not None:
        return app
    return FastLane(app, routes.preparable, counter.count if counter is not None else None)


class HeadLikeGet:
    """Adds routes so that every GET route answers HEAD: the GET responder runs (same checks,
    status and headers, Content-Length included) and Falcon sends no body. A resource whose
    GET must not run for a HEAD (a stream) defines its own on_head.
    Also notes the routes the fast lane may serve: a fixed path, a resource with
    ``prepare``, an API group that is on (off: Falcon's gate answers 404)."""

    def __init__(self, app: falcon.App, enabled_groups: frozenset[str]) -> None:
        self.app = app
        self.enabled_groups = enabled_groups
        self.preparable: dict[tuple[str, str], object] = {}

    def add_route(self, uri_template: str, resource, **kwargs) -> None:
        if hasattr(resource, "on_get") and not hasattr(resource, "on_head"):
            resource.on_head = resource.on_get
        self.app.add_route(uri_template, resource, **kwargs)
        if (hasattr(resource, "prepare") and "{" not in uri_template
                and getattr(resource, "group", None) in self.enabled_groups):
            for method in ("GET", "POST"):
                if hasattr(resource, f"on_{method.lower()}"):
                    self.preparable[(method, uri_template)] = resource
