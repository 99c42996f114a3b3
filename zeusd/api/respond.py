"""Small response helpers shared by every resource, and the one shape of an answer.

An ``Answer`` is what a resource answers, whoever sends it: Falcon (``to_falcon``) or the
fast lane (``status_line``/``wsgi_headers``, see fast_lane.py). Both send the same status,
content type, headers and body.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import falcon

from ..identity import AFTER_RESPONSE_KEY, ENVIRON_KEY, PIN_OWNER_KEY, UNKNOWN_UNIX, Caller

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
JSON = "application/json"


class Answer(NamedTuple):
    body: bytes
    status: int = 200
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    def to_falcon(self, resp: falcon.Response) -> None:
        resp.status = status_line(self.status)
        resp.content_type = self.content_type
        resp.data = self.body
        for name, value in self.headers:
            resp.set_header(name, value)

    def wsgi_headers(self) -> list[tuple[str, str]]:
        """The headers Falcon sends for this answer (waitress sorts and capitalizes them)."""
        return [("content-type", self.content_type), *self.headers,
                ("content-length", str(len(self.body)))]


EMPTY = Answer(b"")  # a write's 200: no body; Falcon's default type, application/json


@functools.lru_cache(maxsize=64)
def status_line(code: int) -> str:
    return falcon.code_to_http_status(code)


def json_answer(body: object, status: int = 200,
                headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(_dumps(body).encode("utf-8"), status, JSON, headers)


def send_json(resp: falcon.Response, body: object, status: int = 200) -> None:
    json_answer(body, status).to_falcon(resp)


def send_empty(resp: falcon.Response) -> None:
    EMPTY.to_falcon(resp)


def send_text(resp: falcon.Response, text: str, status: int) -> None:
    Answer(text.encode("utf-8"), status, "text/plain; charset=utf-8").to_falcon(resp)


def caller_of(req: falcon.Request) -> Caller:
    """The caller as the transport (and auth) recorded it; unknown -> fail closed."""
    caller = getattr(req.context, "caller", None)
    if caller is None:
        caller = caller_in(req.env)
    return caller


def caller_in(environ: dict) -> Caller:
    """The caller the transport put in the WSGI environ; none there -> unknown (denied)."""
    return environ.get(ENVIRON_KEY, UNKNOWN_UNIX)


def pin_owner_in(environ: dict):
    """The transport's callable that pins the calling process (None: TCP, or no transport)."""
    return environ.get(PIN_OWNER_KEY)


def after_response_in(environ: dict):
    """The transport's callable that runs a function after the response is sent (None: no
    transport that offers it, e.g. a test client; the work is then queued as usual)."""
    return environ.get(AFTER_RESPONSE_KEY)
