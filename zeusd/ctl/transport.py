"""Talking to zeusd: HTTP over its Unix socket (http.client on AF_UNIX) or over TCP.

Errors come back as two exception types so the commands need not know about
sockets: ``CannotConnect`` (nothing answers) and ``DaemonError`` (the daemon
answered with a non-2xx status; ``message`` is its own text, verbatim).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterator

DEFAULT_SOCKET_PATH = "/run/zeusd/zeusd.sock"
DEFAULT_TCP_PORT = 4938
# The environment the Zeus Python client reads, so one `export` serves both.
BAD_ANSWER = 502  # what a gateway says for an answer it cannot use; zeusctl exits 6
TOKEN_ENV, SOCKET_ENV, HOST_PORT_ENV = "ZEUSD_TOKEN", "ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT"


def resolve_address(socket_path: str | None, url: str | None,
                    environ=os.environ) -> tuple[str | None, str | None]:
    """(socket path, url): the flags win; then $ZEUSD_SOCK_PATH, then $ZEUSD_HOST_PORT
    (``host`` or ``host:port``, port 4938 by default), as the Zeus client does."""
    if socket_path or url:
        return socket_path, url
    if environ.get(SOCKET_ENV):
        return environ[SOCKET_ENV], None
    host_port = environ.get(HOST_PORT_ENV)
    if host_port:
        if ":" not in host_port:
            host_port = f"{host_port}:{DEFAULT_TCP_PORT}"
        return None, f"http://{host_port}"
    return DEFAULT_SOCKET_PATH, None


class CannotConnect(Exception):
    """No daemon answers at the address (or the connection broke)."""


@dataclass
class DaemonError(Exception):
    """A non-2xx reply. ``message``: the daemon's error text; ``gpus``: per-GPU messages of a
    multi-GPU failure (``{"errors": {...}}``)."""

    status: int
    message: str
    gpus: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _parse_error(status: int, content_type: str, body: bytes) -> DaemonError:
    text = body.decode("utf-8", "replace").strip()
    if "json" in content_type:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("errors"), dict):
            gpus = {str(k): str(v) for k, v in data["errors"].items()}
            return DaemonError(status, "; ".join(f"GPU {k}: {v}" for k, v in gpus.items()), gpus)
        if isinstance(data, dict) and "error" in data:
            return DaemonError(status, str(data["error"]))
    return DaemonError(status, text or f"HTTP {status}")


class Daemon:
    """One keep-alive connection to zeusd at ``socket_path`` or ``url`` (``http://host:port``)."""

    def __init__(self, socket_path: str | None = None, url: str | None = None,
                 token: str | None = None, timeout_s: float | None = 30.0) -> None:
        self.timeout_s = timeout_s
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"invalid --url '{url}' (e.g. http://127.0.0.1:4938)")
            self.where = url
            self._new = lambda: (http.client.HTTPSConnection if parts.scheme == "https"
                                 else http.client.HTTPConnection)(
                parts.hostname, parts.port, timeout=self.timeout_s)
        else:
            path = socket_path or DEFAULT_SOCKET_PATH
            self.where = path
            self._new = lambda: _UnixConnection(path, self.timeout_s)
        self._conn: http.client.HTTPConnection | None = None

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _send(self, method: str, path: str) -> http.client.HTTPResponse:
        if self._conn is None:
            self._conn = self._new()
        try:
            self._conn.request(method, path, headers=self._headers())
            return self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CannotConnect(f"cannot reach zeusd at {self.where}: {reason}") from None

    def call(self, method: str, route: str, params: dict | None = None) -> object:
        """The reply's JSON (None for an empty 200 body); DaemonError otherwise."""
        resp = self._send(method, _path(route, params))
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise CannotConnect(f"zeusd at {self.where} broke the connection: {exc}") from None
        if not 200 <= resp.status < 300:
            raise _parse_error(resp.status, resp.getheader("Content-Type", ""), body)
        try:
            return json.loads(body) if body.strip() else None
        except ValueError:  # not zeusd, or a proxy's page: a failure on the far side
            raise DaemonError(BAD_ANSWER, f"{self.where} answered {route} with something that "
                                          "is not JSON (is it zeusd?)") from None

    def get(self, route: str, params: dict | None = None) -> object:
        return self.call("GET", route, params)

    def post(self, route: str, params: dict | None = None) -> object:
        return self.call("POST", route, params)

    def events(self, route: str, params: dict | None = None) -> Iterator[dict]:
        """Server-sent events of a stream route, one parsed ``data:`` JSON each; comment lines
        (keepalives) are skipped. Ends when the daemon ends the stream."""
        resp = self._send("GET", _path(route, params))
        if resp.status != 200:
            raise _parse_error(resp.status, resp.getheader("Content-Type", ""), resp.read())
        while True:
            line = resp.readline()
            if not line:
                return
            if line.startswith(b"data:"):
                try:
                    yield json.loads(line[5:])
                except ValueError:
                    raise DaemonError(BAD_ANSWER, f"{self.where} sent a stream event that is "
                                                  "not JSON") from None

    def set_read_timeout(self, timeout_s: float) -> None:
        """Limit how long the next read from an open stream may wait."""
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(max(timeout_s, 0.001))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _path(route: str, params: dict | None) -> str:
    if not params:
        return route
    # Commas stay literal: the API splits gpu_ids on them.
    return route + "?" + urllib.parse.urlencode(params, safe=",")
