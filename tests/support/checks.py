"""Assertions on replies, in the API's exact shapes."""

from __future__ import annotations

from urllib.parse import quote

from .client import Reply


def query(path: str, **params) -> str:
    """``path?k=v&...`` in the given order; booleans as true/false, values %-encoded."""
    if not params:
        return path
    parts = []
    for key, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{key}={quote(str(value), safe=',')}")
    return f"{path}?{'&'.join(parts)}"


def assert_ok_empty(reply: Reply) -> None:
    assert (reply.status, reply.body) == (200, b""), reply.text


def assert_json(reply: Reply, status: int) -> object:
    assert reply.status == status, reply.text
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    return reply.json()


def assert_error(reply: Reply, status: int, message: str) -> dict:
    """A JSON ``{"error": message}`` answer (extra keys allowed, e.g. ``rule``)."""
    body = assert_json(reply, status)
    assert body["error"] == message, body
    return body


def assert_error_startswith(reply: Reply, status: int, prefix: str) -> str:
    body = assert_json(reply, status)
    assert set(body) == {"error"}, body
    assert body["error"].startswith(prefix), body
    return body["error"]


def assert_text_error(reply: Reply, status: int) -> str:
    """A legacy route's text/plain error; returns the text."""
    assert reply.status == status, reply.text
    assert reply.headers.get("content-type", "").startswith("text/plain"), reply.headers
    return reply.text


def group_disabled(group: str) -> dict:
    return {"error": f"API group '{group}' is not enabled on this server."}


def gpu_snapshot(zd) -> tuple:
    """Every GPU's readable settings. The reads queue behind earlier commands, so
    taking a snapshot also waits for every queued non-blocking command."""
    limits = assert_json(zd.get("/gpu/get_power_limit"), 200)
    persistence = assert_json(zd.get("/gpu/get_persistence_mode"), 200)
    return limits, persistence


class Unchanged:
    """``with Unchanged(zd):`` asserts no GPU setting changed inside the block."""

    def __init__(self, zd) -> None:
        self.zd = zd

    def __enter__(self):
        self.before = gpu_snapshot(self.zd)
        self.mark = self.zd.gpus.mark()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert gpu_snapshot(self.zd) == self.before
            assert self.zd.gpus.since(self.mark) == []
