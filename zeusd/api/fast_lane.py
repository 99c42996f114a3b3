"""The fast lane: the query-style routes a training job calls in a loop, served without
building Falcon's request and response objects, with each distinct query parsed once.

A resource that can be served this way has ``prepare(query_string)``: it parses and checks
the query exactly as its Falcon responder does (the responder calls it too) and returns a
call ``(caller, environ) -> Answer``. The fast lane keeps that call per (method, path,
query), so a repeated request skips routing, middleware and parsing, and runs the same
service call with the same caller as Falcon would, answering with the same ``Answer``.

Anything else goes to Falcon unchanged: another method (HEAD, OPTIONS), a path with
parameters (the legacy routes), a route whose API group is off, a query that does not parse
(Falcon answers the 400 with its usual handler), and every request when tokens are on (the
gate must read the Authorization header). Errors the service raises are answered with the
error table's ``error_answer``, the same answer Falcon's handler sends. ``/metrics`` counts
fast-lane requests under the same (method, route, status) as Falcon's middleware.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ZeusdError
from .errors import error_answer, unexpected_answer
from .respond import caller_in, status_line

MAX_PLANS = 1024  # distinct queries kept; past it, new ones are parsed on every request
MAX_KEPT_QUERY_CHARS = 256  # a longer query is served but not kept (memory stays bounded)


class FastLane:
    def __init__(self, app, routes: dict[tuple[str, str], object],
                 count: Callable[[str, str, int], None] | None = None) -> None:
        """``app``: the Falcon app for everything else. ``routes``: (method, path) ->
        resource with ``prepare``, only routes whose group is on. ``count``: /metrics."""
        self.app = app
        self.routes = routes
        self.count = count
        self.plans: dict[tuple[str, str, str], Callable] = {}

    def __call__(self, environ, start_response):
        key = (environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
               environ.get("QUERY_STRING", ""))
        plan = self.plans.get(key) or self._plan(key)
        if plan is None:
            return self.app(environ, start_response)
        try:
            answer = plan(caller_in(environ), environ)
        except ZeusdError as exc:
            answer = error_answer(exc)
        except Exception as exc:  # noqa: BLE001 - a bug: 500, never a traceback
            answer = unexpected_answer(key[0], key[1], exc)
        if self.count is not None:
            self.count(key[0], key[1], answer.status)
        start_response(status_line(answer.status), answer.wsgi_headers())
        return [answer.body]

    def _plan(self, key: tuple[str, str, str]):
        resource = self.routes.get(key[:2])
        if resource is None:
            return None
        try:
            plan = resource.prepare(key[2])
        except Exception:  # noqa: BLE001 - Falcon parses it again and answers the error
            return None
        if len(self.plans) < MAX_PLANS and len(key[2]) <= MAX_KEPT_QUERY_CHARS:
            self.plans[key] = plan
        return plan
