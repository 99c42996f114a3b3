"""The Falcon application: wires routes to services and errors to responses."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import falcon

from ..errors import AggregatedError, ZeusdError
from . import cpu, gpu, legacy, streams
from .middleware import Gate
from .params import IndexConverter
from .respond import LegacyError, send_json, send_text
from .service import Discover, Time, Whoami

log = logging.getLogger(__name__)


@dataclass
class DaemonState:
    """Everything the HTTP layer needs, built by the CLI."""

    gpu_infos: list
    cpus: list
    enabled_groups: frozenset
    signing_key: bytes | None
    backend_kind: str
    policy_store: object
    gpu_control: object
    gpu_reads: object
    cpu_reads: object
    streams: object = None  # service.streams.StreamHub; None: no stream routes


def _zeusd_error(req, resp, ex: ZeusdError, params) -> None:
    for name, value in ex.headers().items():
        resp.set_header(name, value)
    send_json(resp, ex.body(), ex.status)


def _legacy_error(req, resp, ex: LegacyError, params) -> None:
    err = ex.error
    if isinstance(err, AggregatedError) and len(err.errors) == 1:
        err = next(iter(err.errors.values()))
    send_text(resp, err.message, err.status)


def _http_error(req, resp, ex: falcon.HTTPError, params) -> None:
    """Falcon's own errors (unknown route 404, 405, ...), in our body shape."""
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)
    send_json(resp, {"error": ex.title}, falcon.http_status_to_code(ex.status))


def _unexpected(req, resp, ex: Exception, params) -> None:
    # Never let a traceback reach the client; keep the type for the operator.
    log.error("internal error in %s %s: %s: %s", req.method, req.path, type(ex).__name__, ex)
    log.debug("traceback", exc_info=ex)
    send_json(resp, {"error": "Internal server error"}, 500)


def create_app(state: DaemonState) -> falcon.App:
    app = falcon.App(middleware=[Gate(state.enabled_groups, state.signing_key)])
    app.req_options.keep_blank_qs_values = True
    app.router_options.converters["index"] = IndexConverter
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(ZeusdError, _zeusd_error)
    app.add_error_handler(LegacyError, _legacy_error)
    app.add_route("/discover", Discover(state))
    app.add_route("/time", Time())
    app.add_route("/auth/whoami", Whoami(state))
    gpu.add_routes(app, state.gpu_control, state.gpu_reads)
    legacy.add_routes(app, state.gpu_control)
    cpu.add_routes(app, state.cpu_reads)
    if state.streams is not None:
        streams.add_routes(app, state.streams, state.gpu_reads.gate, state.cpu_reads.gate)
    return app
