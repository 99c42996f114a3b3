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
