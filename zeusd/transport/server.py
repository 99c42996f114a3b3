"""waitress, with the caller's identity taken once per accepted connection.

A channel subclass reads SO_PEERCRED when waitress accepts the connection and a
task subclass puts it into every request's WSGI environ under one key. Header
keys in the environ are always HTTP_*, so no request can override it.
"""

from __future__ import annotations

import logging
import socket

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import WSGITask

from ..identity import ENVIRON_KEY, PEER_CLOSED_KEY, Caller
from .peercred import unix_peer

log = logging.getLogger(__name__)
TCP_CALLER = Caller(transport="tcp")


class PeerTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        environ[ENVIRON_KEY] = self.channel.zeusd_caller
        environ[PEER_CLOSED_KEY] = self._peer_closed
        return environ

    def _peer_closed(self) -> bool:
        """Has the client hung up? A non-consuming peek, for long responses (streams).

        waitress does not read a connection while its request runs (no request
        lookahead, which would cost every request), so the peek sees the EOF."""
        sock = self.channel.socket
        if sock is None:  # waitress already closed the channel (a write failed)
            return True
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def write(self, data):
        super().write(data)
        if data and self.content_length is None:
            # A streamed body (power streams): waitress would send a small chunk only at its
            # next loop turn (up to a second later) or past send_bytes; wake the loop now.
            self.channel.server.pull_trigger()


class PeerChannel(HTTPChannel):
    task_class = PeerTask

    def __init__(self, server, sock, addr, adj, map=None):
        if sock.family == socket.AF_UNIX:
            self.zeusd_caller = unix_peer(sock)
        else:
            self.zeusd_caller = TCP_CALLER
        super().__init__(server, sock, addr, adj, map)


def make_server(app, sockets: list[socket.socket], threads: int, **adjustments):
    """A waitress server on already-listening sockets, using PeerChannel."""
    server_map: dict = {}
    for sock in sockets:
        sock.setblocking(False)
    server = create_server(app, map=server_map, sockets=sockets, threads=threads,
                           ident="zeusd", clear_untrusted_proxy_headers=True,
                           **adjustments)
    dispatchers = [d for d in server_map.values() if isinstance(d, BaseWSGIServer)]
    if not dispatchers:  # pragma: no cover - waitress always registers its servers
        raise RuntimeError("waitress created no server")
    for dispatcher in dispatchers:
        dispatcher.channel_class = PeerChannel
    return server
