#!/usr/bin/python3
"""Requests to zeusd over its Unix socket, all from this one process.

Runs inside the test container: client.py METHOD PATH [METHOD PATH ...]
prints one JSON line per request: {"status": N, "body": ...} or, when the
socket cannot be reached, {"error": "EACCES"|...} and exits 3.
One process for several requests matters: zeusd undoes a caller's changes
when the calling process exits, so "set, then read back" must share a pid.
With --hold-stdin it waits for a line on stdin before exiting.
"""

import errno
import http.client
import json
import socket
import sys

SOCKET = "/run/zeusd/zeusd.sock"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def request(method: str, path: str) -> dict:
    conn = UnixConnection(SOCKET)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        return {"error": errno.errorcode.get(exc.errno or 0, str(exc)), "message": str(exc)}
    finally:
        conn.close()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw
    return {"status": resp.status, "body": body}


def main(argv: list[str]) -> int:
    hold = "--hold-stdin" in argv
    args = [a for a in argv if a != "--hold-stdin"]
    if not args or len(args) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    rc = 0
    for method, path in zip(args[::2], args[1::2]):
        out = request(method, path)
        print(json.dumps(out), flush=True)
        if "error" in out:
            rc = 3
    if hold:
        sys.stdin.readline()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
