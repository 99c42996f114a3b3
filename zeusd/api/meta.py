"""Routes about the daemon itself, never needing a token: /discover, /time, /auth/whoami."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..clock import now_ms
from ..errors import NotEnabled
from .respond import caller_of, send_json

if TYPE_CHECKING:
    from ..service.discovery import Discovery


class Discover:
    group = None

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    def on_get(self, req, resp) -> None:
        send_json(resp, self.discovery.describe(caller_of(req)))


class Time:
    group = None

    def on_get(self, req, resp) -> None:
        send_json(resp, {"timestamp_ms": now_ms()})


class Whoami:
    group = None
    needs_token = True

    def on_get(self, req, resp) -> None:
        claims = getattr(req.context, "claims", None)  # set only when tokens are on
        if claims is None:
            raise NotEnabled("Authentication is not enabled on this server.")
        send_json(resp, claims.as_json())


def add_routes(app, discovery: Discovery) -> None:
    app.add_route("/discover", Discover(discovery))
    app.add_route("/time", Time())
    app.add_route("/auth/whoami", Whoami())
