"""A stream's client that shut only its write side still gets the stream; one that is gone
(closed, or taking no bytes for the idle timeout) frees its stream slot. Over a Unix socket
and TCP (where a closed peer is seen once a write meets its reset: within the next events).

One daemon with one stream slot (--num-workers 3), so whether a slot is free is visible: a
new stream is answered 200 only once the earlier one has ended.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.daemon.conftest import start_zeusd  # noqa: F401 - the shared fixture
from tests.support.sim import SimGpus

STREAM = b"GET /gpu/stream_power HTTP/1.1\r\nHost: x\r\n\r\n"
# Bytes after the request (here a body longer than its Content-Length): they sit unread
# ahead of the client's EOF, where a peek for EOF cannot see past them.
STREAM_WITH_TRAILING_BYTES = (b"GET /gpu/stream_power HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              b"\r\n" + b"[" * 100_000)


@pytest.fixture(scope="module", params=["unix", "tcp"])
def zd(start_zeusd, request):
    if request.param == "tcp":  # anonymous callers, who may read
        return start_zeusd(tcp=True, enable="gpu-read", args=("--num-workers", "3"))
    return start_zeusd(args=("--num-workers", "3"))


def connect(zd) -> socket.socket:
    if zd.address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(zd.socket_path)
        return sock
    host, port = zd.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def open_stream(zd, request: bytes, deadline_s: float = 30) -> tuple[socket.socket, bytes]:
    """A stream whose client has sent ``request`` and shut its write side, and its first bytes.
    Retried while the slot is still held (a stream closed just before frees it within moments)."""
    deadline = time.monotonic() + deadline_s
    while True:
        sock = connect(zd)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        try:
            first = sock.recv(65536)
        except ConnectionResetError:  # refused, and closed with our trailing bytes unread
            first = b""
        if first.startswith(b"HTTP/1.1 200 OK\r\n") or time.monotonic() > deadline:
            return sock, first
        sock.close()
        time.sleep(0.2)


def read_events(sock: socket.socket, count: int, deadline_s: float = 30) -> bytes:
    """What the stream sent until ``count`` events arrived, or it ended, or the deadline."""
    out = b""
    deadline = time.monotonic() + deadline_s
    while out.count(b"data: ") < count and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def new_stream_status(zd, deadline_s: float = 30) -> int:
    """The status of a fresh stream request, asked until it is not 429 (slot still held)."""
    deadline = time.monotonic() + deadline_s
    while True:
        with connect(zd) as sock:
            sock.sendall(STREAM)
            head = sock.recv(65536)
        status = int(head.split(b" ", 2)[1])
        if status != 429 or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


@pytest.mark.parametrize("request_bytes", [STREAM, STREAM_WITH_TRAILING_BYTES],
                         ids=["bare", "trailing-bytes"])
def test_a_half_closed_client_that_reads_keeps_its_stream(zd, request_bytes):
    sock, first = open_stream(zd, request_bytes)
    with sock:
        received = first + read_events(sock, 20)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:300]
        assert received.count(b"data: ") >= 20, received[-300:]  # it did not end
        assert b"\r\n0\r\n\r\n" not in received
    assert new_stream_status(zd) == 200  # and closing it frees the slot


@pytest.mark.parametrize("request_bytes", [STREAM, STREAM_WITH_TRAILING_BYTES],
                         ids=["bare", "trailing-bytes"])
def test_a_closed_client_frees_the_stream_slot(zd, request_bytes):
    sock, first = open_stream(zd, request_bytes)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n"), first
    assert new_stream_status(zd, deadline_s=0) == 429  # the only slot is taken
    sock.close()
    assert new_stream_status(zd) == 200


def test_a_client_that_stops_reading_is_dropped_after_the_idle_timeout(start_zeusd, tmp_path):
    # 64 GPUs at 20 Hz fill the socket's buffers within seconds; after that no byte moves.
    busy = start_zeusd(gpus=SimGpus(tmp_path, count=64),
                       args=("--num-workers", "3", "--idle-timeout-s", "1"))
    stalled, first = open_stream(busy, STREAM)
    with stalled:
        assert first.startswith(b"HTTP/1.1 200 OK\r\n"), first
        assert new_stream_status(busy, deadline_s=0) == 429  # it holds the only slot
        assert new_stream_status(busy, deadline_s=60) == 200  # until it was dropped
        stalled.settimeout(30)
        while stalled.recv(1 << 20):  # what was buffered, then the end
            pass
