"""The one table from our error types to HTTP: status, headers and body shape.

Services raise errors that say what happened (``zeusd.errors``); only this module
knows which status each one is answered with. A resource that sets
``legacy_errors = True`` answers its errors as upstream's early daemon did:
the bare message as text/plain.
"""

from __future__ import annotations

import logging

import falcon

from ..devices.errors import GPU_IS_LOST, INVALID_ARGUMENT, NO_PERMISSION, NOT_SUPPORTED
from ..errors import (AggregatedError, DeviceFailure, GpuBusy, GpuLost, GpuTimedOut, Internal,
                      InvalidValue, KnobHeld, LeaseUnrecorded, NotEnabled, NvmlFailure,
                      PolicyDenied, QueueFull, ScopeMissing, ShuttingDown, StreamLimit,
                      Unauthenticated, ZeusdError)
from .respond import Answer, json_answer, send_json, send_text

log = logging.getLogger(__name__)

STATUS: dict[type[ZeusdError], int] = {
    InvalidValue: 400,  # UnknownDevice too
    Unauthenticated: 401,
    ScopeMissing: 403,
    PolicyDenied: 403,
    NotEnabled: 404,
    KnobHeld: 409,
    QueueFull: 429,
    GpuBusy: 429,
    StreamLimit: 429,
    DeviceFailure: 500,
    Internal: 500,
    GpuLost: 503,
    LeaseUnrecorded: 503,
    ShuttingDown: 503,
    GpuTimedOut: 504,
}
# Upstream's mapping of NVML codes; any other code is 500. (ours) GPU_IS_LOST is 503:
# that GPU is gone until a reset, the daemon is fine.
NVML_STATUS = {NO_PERMISSION: 403, GPU_IS_LOST: 503, INVALID_ARGUMENT: 400, NOT_SUPPORTED: 400}
HEADERS: dict[type[ZeusdError], dict[str, str]] = {
    Unauthenticated: {"WWW-Authenticate": 'Bearer realm="zeusd"'},
}


def status_of(err: ZeusdError) -> int:
    """The status ``err`` is answered with; several devices' errors: the largest."""
    if isinstance(err, AggregatedError):
        return max(status_of(e) for e in err.errors.values())
    if isinstance(err, NvmlFailure):
        return NVML_STATUS.get(err.code, 500)
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def body_of(err: ZeusdError) -> dict:
    if isinstance(err, AggregatedError):
        return {"errors": {str(k): e.message for k, e in err.errors.items()}}
    return {"error": err.message, **err.extra}


def headers_of(err: ZeusdError) -> dict[str, str]:
    return next((HEADERS[cls] for cls in type(err).__mro__ if cls in HEADERS), {})


def error_answer(err: ZeusdError) -> Answer:
    """The JSON answer to ``err`` (Falcon's handler and the fast lane both send this)."""
    return json_answer(body_of(err), status_of(err), tuple(headers_of(err).items()))


def unexpected_answer(method: str, path: str, ex: Exception) -> Answer:
    """A bug's answer: never a traceback to the client; the type for the operator."""
    log.error("internal error in %s %s: %s: %s", method, path, type(ex).__name__, ex)
    log.debug("traceback", exc_info=ex)
    return json_answer({"error": "Internal server error"}, 500)


def mark_legacy(req: falcon.Request, resource) -> None:
    """Called once the gate let the request through to ``resource``: from here on its
    errors take the resource's shape (the gate's own 401/403/404 stay JSON)."""
    req.context.legacy_errors = getattr(resource, "legacy_errors", False)


def zeusd_error(req, resp, ex: ZeusdError, params) -> None:
    if getattr(req.context, "legacy_errors", False):
        if isinstance(ex, AggregatedError) and len(ex.errors) == 1:
            ex = next(iter(ex.errors.values()))
        send_text(resp, ex.message, status_of(ex))
        return
    error_answer(ex).to_falcon(resp)


def http_error(req, resp, ex: falcon.HTTPError, params) -> None:
    """Falcon's own errors (unknown route 404, 405, ...), in our body shape."""
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)
    send_json(resp, {"error": ex.title}, falcon.http_status_to_code(ex.status))


def unexpected(req, resp, ex: Exception, params) -> None:
    unexpected_answer(req.method, req.path, ex).to_falcon(resp)


def install(app: falcon.App) -> None:
    """Most specific last: Falcon picks the handler of the nearest base class."""
    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(falcon.HTTPError, http_error)
    app.add_error_handler(ZeusdError, zeusd_error)
