"""zeusctl's transport against a real HTTP server on a real Unix socket that is *not* zeusd:
answers it cannot use are a daemon failure (exit 6) with a message, never a traceback."""

from __future__ import annotations

import http.server
import socketserver
import threading

import pytest

from tests.support.harness import short_dir
from zeusd.ctl.cli import main


class _NotZeusd(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def not_zeusd():
    path = str(short_dir() / "other.sock")
    server = _UnixHTTPServer(path, _NotZeusd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_json_is_a_failure(not_zeusd, capsys):
    assert main(["--socket", not_zeusd, "whoami"]) == 6
    err = capsys.readouterr().err
    assert err == (f"zeusctl: error: {not_zeusd} answered /discover with something that is not "
                   "JSON (is it zeusd?)\n")
