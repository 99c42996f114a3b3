"""Server-sent power streams: GET /gpu/stream_power and GET /cpu/stream_power.

The wire format is upstream's (one ``data: <compact JSON>`` line and a blank
line per event). Ours on top: ``snapshot=true`` serves the whole-snapshot shape
that zeus 0.14/0.15 parse, and idle streams carry ``: keepalive`` comments so a
dead peer is noticed when the write fails. waitress gives a streaming response
one worker thread for its whole life, so the body is an iterator whose
``close()`` (called by the server whatever happens) releases the subscription.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import falcon

from .. import operations as ops
from ..identity import PEER_CLOSED_KEY
from .params import parse_bool, parse_id_list, parse_query
from .respond import caller_of

if TYPE_CHECKING:
    from ..service.streams import StreamHub

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
KEEPALIVE = b": keepalive\n\n"
DISCONNECT_CHECK_S = 0.5  # how often an idle stream asks waitress whether the peer left


class SseStream:
    """The response body: blocks for events, yields SSE chunks, unsubscribes on close."""

    def __init__(self, hub, kind: str, ids: list[int], sub, snapshot: bool,
                 disconnected=None) -> None:
        self.hub, self.kind, self.ids, self.sub = hub, kind, ids, sub
        self.snapshot = snapshot
        self.values: dict[str, object] = {}
        self.disconnected = disconnected or (lambda: False)
        self.last_write = time.monotonic()
        self.started = False
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if not self.started and not self.ids:
            self.started = True
            return KEEPALIVE  # nothing will ever be published: send the headers now
        self.started = True
        while not self.sub.closed and not self.disconnected():
            now = time.monotonic()
            due = self.last_write + self.hub.keepalive_s
            if now >= due:
                self.last_write = now
                return KEEPALIVE
            events = self.sub.take(min(DISCONNECT_CHECK_S, due - now))
            if events:
                self.last_write = time.monotonic()
                return self._encode(events)
        self.close()
        raise StopIteration

    def _encode(self, events: list[dict]) -> bytes:
        if not self.snapshot:
            return b"".join(b"data: " + _dumps(e).encode() + b"\n\n" for e in events)
        for event in events:
            if self.kind == "gpu":
                self.values[str(event["gpu_id"])] = event["power_mw"]
            else:
                self.values[str(event["cpu_id"])] = {"cpu_mw": event["cpu_mw"],
                                                     "dram_mw": event["dram_mw"]}
        ordered = dict(sorted(self.values.items(), key=lambda kv: int(kv[0])))
        body = {"timestamp_ms": max(e["timestamp_ms"] for e in events), "power_mw": ordered}
        return b"data: " + _dumps(body).encode() + b"\n\n"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.hub.close(self.kind, self.ids, self.sub)


class PowerStream:
    """One stream route; the hub decides which devices the caller may follow."""

    def __init__(self, hub: StreamHub, kind: str) -> None:
        self.hub, self.kind = hub, kind
        self.group = ops.GPU_READ if kind == "gpu" else ops.CPU_READ
        self.id_param = f"{kind}_ids"

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, (self.id_param, "snapshot"), ())
        requested = parse_id_list(params[self.id_param], self.kind) \
            if self.id_param in params else None
        snapshot = parse_bool(params["snapshot"]) if "snapshot" in params else False
        ids, sub = self.hub.start(caller_of(req), self.kind, requested)
        resp.status = falcon.HTTP_200
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.stream = SseStream(self.hub, self.kind, ids, sub, snapshot,
                                req.env.get(PEER_CLOSED_KEY))

    def on_head(self, req, resp) -> None:
        """GET's checks and headers, without a stream: the slot it takes is given back."""
        self.on_get(req, resp)
        resp.stream.close()
        resp.stream = None


def add_routes(app, hub: StreamHub) -> None:
    app.add_route("/gpu/stream_power", PowerStream(hub, "gpu"))
    app.add_route("/cpu/stream_power", PowerStream(hub, "cpu"))
