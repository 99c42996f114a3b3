"""An answer whose whole body is known leaves in one write: PeerTask hands waitress the header
and the body as one buffer (waitress, whose send_bytes is 1, would send() each apart), and
the bytes on the wire are exactly what stock waitress writes, for every kind of response.

Each case runs the same request and app through waitress's own WSGITask and through
PeerTask, on a channel that records what the task queued for sending."""

from __future__ import annotations

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import ClientDisconnected
from waitress.parser import HTTPRequestParser
from waitress.task import WSGITask

from zeusd.limits import ServeLimits
from zeusd.transport.server import TCP_CALLER, PeerTask

BODY = b'{"0":{"power_limit_mw":300000}}'


class Recording:
    """What a task needs of a channel and its server; keeps every buffer queued to send."""

    limits = ServeLimits()
    zeusd_caller = TCP_CALLER

    def __init__(self, app) -> None:
        self.adj = Adjustments(ident="zeusd", clear_untrusted_proxy_headers=False)
        self.server = self
        self.application = app
        self.effective_port = 0
        self.server_name = "localhost"
        self.addr = ("localhost", 0)
        self.connected = True
        self.writes: list[bytes] = []
        self.triggers = 0

    def write_soon(self, data: bytes) -> int:
        if not self.connected:  # as waitress's channel: the client is gone
            raise ClientDisconnected
        self.writes.append(bytes(data))
        return len(data)

    def pull_trigger(self) -> None:
        self.triggers += 1

    def check_client_disconnected(self) -> bool:
        return False


def request(raw: bytes) -> HTTPRequestParser:
    parser = HTTPRequestParser(Adjustments(clear_untrusted_proxy_headers=False))
    parser.received(raw)
    assert parser.completed
    return parser


def app_answering(status: str, headers: list, chunks: list[bytes]):
    def app(environ, start_response):
        start_response(status, list(headers))
        return list(chunks)
    return app


def serve(task_class, raw: bytes, app) -> tuple[Recording, object]:
    channel = Recording(app)
    task = task_class(channel, request(raw))
    task.start_time = 1_700_000_000  # the same Date header for both
    task.execute()
    task.finish()
    return channel, task


GET = b"GET /gpu/get_power_limit?gpu_ids=0 HTTP/1.1\r\nHost: x\r\n\r\n"
JSON = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]
CASES = {
    "JSON answer": (GET, "200 OK", JSON, [BODY]),
    "error answer": (GET, "403 Forbidden", JSON, [BODY]),
    "empty 200 (a write)": (GET, "200 OK", [("Content-Length", "0")], []),
    "HEAD": (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK",
             [("Content-Length", str(len(BODY)))], [b""]),
    "204 with a body (dropped)": (GET, "204 No Content", [("Content-Length", "4")], [b"oops"]),
    "body longer than its Content-Length": (GET, "200 OK", [("Content-Length", "3")],
                                            [b"abcdef"]),
    "body in two pieces": (GET, "200 OK", [("Content-Length", "6")], [b"abc", b"def"]),
    "streamed (chunked)": (GET, "200 OK", [("Content-Type", "text/event-stream")],
                           [b"data: 1\n\n", b"data: 2\n\n"]),
    "HTTP/1.0 keep-alive": (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "200 OK",
                            JSON, [BODY]),
    "HTTP/1.0 closing": (b"GET / HTTP/1.0\r\n\r\n", "200 OK", JSON, [BODY]),
    "client asks to close": (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "200 OK", JSON,
                             [BODY]),
}


@pytest.mark.parametrize("case", CASES)
def test_same_bytes_as_waitress(case):
    raw, status, headers, chunks = CASES[case]
    stock, stock_task = serve(WSGITask, raw, app_answering(status, headers, chunks))
    ours, our_task = serve(PeerTask, raw, app_answering(status, headers, chunks))
    assert b"".join(ours.writes) == b"".join(stock.writes)
    assert our_task.close_on_finish == stock_task.close_on_finish
    assert our_task.content_bytes_written == stock_task.content_bytes_written


def test_a_whole_body_is_one_write():
    stock, _ = serve(WSGITask, GET, app_answering("200 OK", JSON, [BODY]))
    ours, _ = serve(PeerTask, GET, app_answering("200 OK", JSON, [BODY]))
    assert len(stock.writes) == 2  # what waitress does: header, then body
    assert len(ours.writes) == 1
    head, _, body = ours.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 31\r\n")
    assert body == BODY


def test_a_stream_still_wakes_the_loop_for_each_chunk():
    ours, _ = serve(PeerTask, GET, app_answering("200 OK", [("Content-Type", "text/plain")],
                                                 [b"a", b"b"]))
    assert ours.triggers == 2
    assert b"".join(ours.writes).endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")


@pytest.mark.parametrize("task_class", [WSGITask, PeerTask])
def test_a_client_gone_before_the_answer_is_told_as_waitress_tells_it(task_class):
    channel = Recording(app_answering("200 OK", JSON, [BODY]))
    channel.connected = False
    task = task_class(channel, request(GET))
    with pytest.raises(ClientDisconnected):
        task.execute()
    assert not task.wrote_header  # nothing was queued
    assert channel.writes == []
