"""Small response helpers shared by every resource."""

from __future__ import annotations

import json

import falcon

from ..identity import AFTER_RESPONSE_KEY, ENVIRON_KEY, PIN_OWNER_KEY, UNKNOWN_UNIX, Caller

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def send_json(resp: falcon.Response, body: object, status: int = 200) -> None:
    resp.status = status if isinstance(status, str) else falcon.code_to_http_status(status)
    resp.content_type = "application/json"
    resp.data = _dumps(body).encode("utf-8")


def send_empty(resp: falcon.Response) -> None:
    resp.status = falcon.HTTP_200
    resp.data = b""


def send_text(resp: falcon.Response, text: str, status: int) -> None:
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = "text/plain; charset=utf-8"
    resp.data = text.encode("utf-8")


def caller_of(req: falcon.Request) -> Caller:
    """The caller as the transport (and auth) recorded it; unknown -> fail closed."""
    caller = getattr(req.context, "caller", None)
    if caller is None:
        caller = req.env.get(ENVIRON_KEY, UNKNOWN_UNIX)
    return caller



def pin_owner_of(req: falcon.Request):
    """The transport's callable that pins the calling process (None: TCP, or no transport)."""
    return req.env.get(PIN_OWNER_KEY)


def after_response_of(req: falcon.Request):
    """The transport's callable that runs a function after the response is sent (None: no
    transport that offers it, e.g. a test client; the work is then queued as usual)."""
    return req.env.get(AFTER_RESPONSE_KEY)
