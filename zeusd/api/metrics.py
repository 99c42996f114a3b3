"""GET /metrics (Prometheus text format) and the middleware that counts every request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from .. import operations as ops
from ..errors import NotEnabled
from .respond import caller_of

if TYPE_CHECKING:
    from ..service.metrics import MetricsService
    from ..tally import Tally


# The text format every Prometheus since 2.0 reads, named the same whatever prometheus_client's
# newest default is (0.16 says 0.0.4; newer releases say 1.0.0 for the same text).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    group = ops.METRICS

    def __init__(self, service: MetricsService | None) -> None:
        self.service = service

    def on_get(self, req, resp) -> None:
        if self.service is None:  # the Gate answers first unless the group was enabled anyway
            raise NotEnabled(f"API group '{self.group}' is not enabled on this server.")
        body = self.service.scrape(caller_of(req))
        resp.status = falcon.HTTP_200
        resp.content_type = CONTENT_TYPE
        resp.data = body


class CountRequests:
    """Counts each answered request by (method, route template, status code). The template,
    not the path, so a scanner's random paths add one "unmatched" series, not thousands."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        route = getattr(req, "uri_template", None) or "unmatched"
        self.count(req.method, route, falcon.http_status_to_code(resp.status))

    def count(self, method: str, route: str, status: int) -> None:
        """One answered request (the fast lane counts its own here too)."""
        self.tally.add((method, route, str(status)))


def add_routes(app, service: MetricsService | None) -> None:
    app.add_route("/metrics", Metrics(service))
