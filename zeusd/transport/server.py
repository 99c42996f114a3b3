"""waitress, with the caller's identity taken once per accepted connection.

A channel subclass reads SO_PEERCRED when waitress accepts the connection and a
task subclass puts it into every request's WSGI environ under one key. Header
keys in the environ are always HTTP_*, so no request can override it.
"""

from __future__ import annotations

import logging
import socket

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ThreadedTaskDispatcher, WSGITask

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
    """A waitress server on already-listening sockets, any mix of Unix and TCP, using PeerChannel.

    waitress refuses Unix and TCP sockets in one create_server() call ("Internet and
    UNIX sockets may not be mixed"), yet systemd may pass both (a ListenStream= drop-in).
    So each socket gets its own waitress listener, all in one socket map and sharing one
    task dispatcher: one event loop, one pool of ``threads`` workers, as if it were one
    server. waitress 2.1 and 3.x both take the shared dispatcher this way."""
    if not sockets:
        raise ValueError("no listening socket")
    server_map: dict = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    servers = [_listener(app, sock, server_map, dispatcher, threads, adjustments)
               for sock in sockets]
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(server_map, servers[0].adj, listening, dispatcher,
                             servers[0].log_info)


def _listener(app, sock: socket.socket, server_map: dict, dispatcher, threads: int,
              adjustments: dict) -> BaseWSGIServer:
    """One waitress listener on ``sock`` (registered in ``server_map``), using PeerChannel."""
    sock.setblocking(False)
    server = create_server(app, map=server_map, _dispatcher=dispatcher, sockets=[sock],
                           threads=threads, ident="zeusd",
                           clear_untrusted_proxy_headers=True, **adjustments)
    if not isinstance(server, BaseWSGIServer):  # pragma: no cover - one socket, one server
        raise RuntimeError("waitress did not create a single listener")
    server.channel_class = PeerChannel
    return server
