"""waitress, with the caller's identity taken once per accepted connection.

A channel subclass reads SO_PEERCRED when waitress accepts the connection and a
task subclass puts it into every request's WSGI environ under one key. Header
keys in the environ are always HTTP_*, so no request can override it.
"""

from __future__ import annotations

import functools
import json
import logging
import select
import socket
import threading
import time

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

from ..identity import AFTER_RESPONSE_KEY, ENVIRON_KEY, PEER_CLOSED_KEY, PIN_OWNER_KEY, Caller
from ..service import deadline
from ..service.idle import ACTIVITY
from ..limits import ServeLimits
from .admission import Admission, peer_key, refusal_bytes
from .parser import PeerRequestParser
from .peercred import unix_peer

log = logging.getLogger(__name__)
TCP_CALLER = Caller(transport="tcp")
SWEEP_INTERVAL_S = 1  # how often the read and idle deadlines are checked (waitress wants an int)
_HUNG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL
# What the request this worker thread just served asked to run after its response: handed
# from PeerTask.service to PeerChannel.service, both on this thread, one inside the other.
_AFTER_RESPONSE = threading.local()


class PeerTask(WSGITask):
    _waiting_since: float | None = None  # when _stalled() first saw output waiting
    _after: list | None = None  # what the app asked to run once the response is sent

    def service(self):
        try:
            super().service()  # the response is now in the channel's buffer
        finally:
            after, self._after = self._after, None
            if after:
                self._send_now()
                _AFTER_RESPONSE.runs = after  # run by PeerChannel.service, next

    def _send_now(self) -> None:
        """Hand the buffered response to the socket from this thread (as waitress does with
        output past ``send_bytes``) rather than at the event loop's next turn, so the client
        has its answer while the work it asked for runs."""
        channel = self.channel
        if channel.connected and channel.total_outbufs_len:
            with channel.outbuf_lock:
                channel._flush_exception(channel._flush_some, do_close=False)

    def _after_response(self, run) -> None:
        if self._after is None:
            self._after = []
        self._after.append(run)

    def execute(self):
        # The request's whole stay is bounded from when its last byte arrived, so the
        # time it waited for this worker counts too (the GPU layer reads the deadline).
        received = getattr(self.request, "zeusd_received_at", None) or time.monotonic()
        deadline.start(received + self.channel.limits.request_timeout_s)
        ACTIVITY.begin()  # idle exit waits for no request in flight and none for a while
        try:
            super().execute()
        finally:
            ACTIVITY.end()
            deadline.clear()

    def get_environment(self):
        environ = super().get_environment()
        environ[ENVIRON_KEY] = self.channel.zeusd_caller
        environ[PEER_CLOSED_KEY] = self._peer_closed
        environ[AFTER_RESPONSE_KEY] = self._after_response
        caller = self.channel.zeusd_caller
        if caller.transport == "unix" and caller.known:  # a process to own leases (TCP: none)
            environ[PIN_OWNER_KEY] = self._pin_owner
        return environ

    def _pin_owner(self):
        """A pidfd on the connected process (leases), checked against the accept-time start."""
        from ..leases.owner import pin_unix_peer

        caller = self.channel.zeusd_caller
        return pin_unix_peer(self.channel.socket, caller.uid, caller.pid, caller.start_time_ticks)

    def _peer_closed(self) -> bool:
        """Is the client gone? Asked between the events of a long response (a stream).

        Gone: waitress closed the connection (a write failed), the peer closed it (poll()
        reports POLLHUP/POLLERR: at once on a Unix socket; on TCP once a write met the RST,
        which the stream's keepalive forces within its interval), or the client has taken
        no byte for ``idle_timeout_s`` while output waits for it (it stopped reading).
        Not gone: a client that only shut its write side (shutdown(SHUT_WR)), with or without
        bytes after its request: it may still read, and HTTP lets it half-close."""
        channel = self.channel
        sock = channel.socket
        if sock is None or not channel.connected:
            return True
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            events = poller.poll(0)
        except (OSError, ValueError):  # closed under us (fileno -1)
            return True
        if any(mask & _HUNG_UP for _, mask in events):
            return True
        return self._stalled()

    def _stalled(self) -> bool:
        """Output has waited for the client, with no byte taken, longer than the idle timeout.
        waitress stamps ``last_activity`` when a send moves bytes; the wait is counted from
        the later of that and when this task first saw output waiting, so output written
        after a quiet spell (a keepalive 15 s after the last event) does not look stale."""
        channel = self.channel
        if not channel.total_outbufs_len:
            self._waiting_since = None
            return False
        now = time.time()
        if self._waiting_since is None:
            self._waiting_since = now
        return now - max(channel.last_activity, self._waiting_since) > \
            channel.limits.idle_timeout_s

    def write(self, data):
        if data and not self.wrote_header and self.complete and self.has_body \
                and self.content_length == len(data):
            # The whole body in one piece (every JSON answer): waitress would queue the
            # header and the body apart, and with its send_bytes of 1 each is its own
            # send(); as one buffer they leave in one send() and reach the client together.
            self.channel.write_soon(self.build_response_header() + data)
            self.wrote_header = True  # once queued, as waitress marks its header
            self.content_bytes_written += len(data)
            return
        super().write(data)
        if data and self.content_length is None:
            # A streamed body (power streams): waitress would send a small chunk only at its
            # next loop turn (up to a second later) or past send_bytes; wake the loop now.
            self.channel.server.pull_trigger()


class PeerErrorTask(ErrorTask):
    """waitress's own refusals (malformed requests, oversized headers or bodies), in JSON like
    every other zeusd error; a body over the cap gets an answer saying the cap."""

    def execute(self):
        error = self.request.error
        if getattr(error, "code", None) == 413:
            cap = self.channel.adj.max_request_body_size - 1
            why = f"zeusd accepts at most {cap} bytes"
        else:
            why = error.body.rstrip(".")  # waitress's sentences; ours continues
        # A 500 here is waitress reporting the app's failure: that request did run.
        unserved = "; the request was not processed." if error.code != 500 else ""
        body = json.dumps({"error": f"{_REFUSALS.get(error.code, error.reason)}: {why}"
                                    f"{unserved}"}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("Connection", "close")])
        self.close_on_finish = True
        self.content_length = len(body)
        self.write(body)


_REFUSALS = {413: "Request body too large", 400: "Malformed request"}


def identify(sock: socket.socket) -> Caller:
    return unix_peer(sock) if sock.family == socket.AF_UNIX else TCP_CALLER


class PeerChannel(HTTPChannel):
    """A connection with its caller, and deadlines waitress does not have: a request must
    arrive whole within ``request_read_timeout_s`` of its first byte (a trickle of header
    bytes does not renew it), and a connection serving nothing closes after
    ``idle_timeout_s`` (blank lines between requests do not renew that either)."""

    task_class = PeerTask
    error_task_class = PeerErrorTask
    parser_class = PeerRequestParser
    limits = ServeLimits()
    zeusd_slot = None  # (Admission, peer key, member) when admission counted this connection

    def __init__(self, server, sock, addr, adj, map=None, caller: Caller | None = None):
        self.zeusd_caller = caller if caller is not None else identify(sock)
        self._reading_since: float | None = None
        self._idle_since = time.monotonic()
        super().__init__(server, sock, addr, adj, map)

    def received(self, data):
        now = time.monotonic()
        before = len(self.requests)
        if self.request is None and data:
            self._reading_since = now
        result = super().received(data)
        if len(self.requests) > before:  # a whole request arrived: the connection is in use
            self._idle_since = now
            for request in self.requests[before:]:
                request.zeusd_received_at = now
        if self.request is None:
            self._reading_since = None
        return result

    def check_deadlines(self, now: float) -> None:
        """Enforce the read and idle deadlines; called from the event loop by the listener's
        sweep (``_sweep``, once a second) rather than on every turn of the loop, where it
        would cost every connection a clock read per request served on any of them."""
        if self.requests:  # a request is being served: not idle, not reading
            self._idle_since = now
        elif self._reading_since is not None:
            if now - self._reading_since > self.limits.request_read_timeout_s:
                self._give_up(408, "Request Timeout", "the request did not arrive within "
                              f"{self.limits.request_read_timeout_s:g} s")
        elif now - self._idle_since > self.limits.idle_timeout_s:
            self.will_close = True  # an idle keep-alive connection: close it quietly

    def service(self):
        """Serve one request, then run what it asked to run after its response: by then
        waitress has finished with the request, so the connection's next request is read
        and served (by another worker) while this thread does that work."""
        try:
            super().service()
        finally:
            self._idle_since = time.monotonic()  # idle from the end of its last request
            runs = getattr(_AFTER_RESPONSE, "runs", None)
            if runs:
                _AFTER_RESPONSE.runs = None
                for run in runs:
                    try:
                        run()
                    except Exception as exc:  # noqa: BLE001 - the answer is sent: log it
                        log.error("work run after a response failed: %r", exc)

    def _give_up(self, status: int, reason: str, why: str) -> None:
        """Answer ``status`` and close, from the event loop (no worker involved)."""
        body = json.dumps({"error": f"{reason}: {why}; closing the connection."}).encode()
        payload = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        with self.outbuf_lock:
            self.outbufs[-1].append(payload)
            self.current_outbuf_count += len(payload)
            self.total_outbufs_len += len(payload)
        self.request = None
        self._reading_since = None
        self.close_when_flushed = True

    def send_continue(self):
        """Only a body worth waiting for gets "100 Continue": waitress marks the request
        incomplete until a body arrives, so a bodiless one (or one already refused, e.g.
        over the size cap) would otherwise hang until the client gives up."""
        request = self.request
        if request.error is not None or not (request.chunked or request.content_length):
            request.expect_continue = False
            return
        super().send_continue()

    def del_channel(self, map=None):
        slot, self.zeusd_slot = self.zeusd_slot, None
        if slot is not None:
            admission, key, member = slot
            admission.release(key, member)
        super().del_channel(map)


def admit_channel(admission: Admission, limits: ServeLimits, server, sock, addr, adj,
                  map=None):
    """waitress's channel_class: admit the connection (a PeerChannel) or refuse it at once."""
    caller = identify(sock)
    key = peer_key(caller, addr)
    verdict = admission.admit(caller, key)
    if not verdict.admitted:
        admission.log_refusal(key, verdict)
        try:
            sock.send(refusal_bytes(verdict), socket.MSG_DONTWAIT)
        except OSError:
            pass  # the peer is gone or not reading; closing is all that matters
        sock.close()
        return None
    try:
        channel = PeerChannel(server, sock, addr, adj, map, caller=caller)
    except BaseException:
        admission.release(key, verdict.member)
        raise
    channel.limits = limits
    channel.zeusd_slot = (admission, key, verdict.member)
    return channel


def install_admission(server, admission: Admission, limits: ServeLimits) -> None:
    """Route every accepted connection of ``server`` through ``admission``."""
    server_map = getattr(server, "map", None) or getattr(server, "_map", {})
    for dispatcher in list(server_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = functools.partial(admit_channel, admission, limits)


def waitress_adjustments(limits: ServeLimits, max_body_bytes: int) -> dict:
    """waitress settings that back the limits: its own connection cap sits above ours (so it
    never stops accepting before we can answer), bodies over the cap are refused from the
    Content-Length header alone (chunked ones as they arrive), poll() handles >1024 fds."""
    return {"connection_limit": limits.max_connections + 16,
            "max_request_body_size": max_body_bytes + 1,  # waitress refuses at >= this
            "max_request_header_size": 32 * 1024,
            "channel_timeout": max(int(limits.idle_timeout_s) + 1, 1),
            "cleanup_interval": SWEEP_INTERVAL_S,
            "asyncore_use_poll": True}


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
    # clear_untrusted_proxy_headers=False: no proxy is trusted and zeusd reads no forwarded
    # header (who calls comes from the socket, never from a header), so waitress's middleware
    # that deletes them would only cost every request its pass over the environ.
    server = create_server(app, map=server_map, _dispatcher=dispatcher, sockets=[sock],
                           threads=threads, ident="zeusd",
                           clear_untrusted_proxy_headers=False, **adjustments)
    if not isinstance(server, BaseWSGIServer):  # pragma: no cover - one socket, one server
        raise RuntimeError("waitress did not create a single listener")
    server.channel_class = PeerChannel
    server.maintenance = functools.partial(_sweep, server, server.maintenance)
    return server


def _sweep(server, waitress_maintenance, now: float) -> None:
    """waitress calls its listener's maintenance every ``cleanup_interval`` seconds from the
    event loop; ours also enforces each connection's read and idle deadlines."""
    waitress_maintenance(now)
    monotonic_now = time.monotonic()
    for channel in list(server.active_channels.values()):
        check = getattr(channel, "check_deadlines", None)
        if check is not None:
            check(monotonic_now)
