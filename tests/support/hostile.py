"""An attacker process: a real unprivileged user driving raw sockets at the daemon.

``Attacker(account, socket_path)`` runs a small Python program as that user (setpriv) and
sends it one JSON command per line: open/hold/trickle connections, read what the daemon
answered on them, or send many requests at once. The daemon sees that user's uid on every
connection (SO_PEERCRED), exactly as with a real local user.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

from .daemon import REPO
from .users import Account, user_python

_PROGRAM = r"""
import json, select, socket, sys, threading, time
sys.dont_write_bytecode = True
sys.path.insert(0, {repo!r})
from tests.support.client import Client

PATH = {path!r}
groups = {{}}

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(PATH)
    return s

def op_open(name, n, send=""):
    socks, errors = groups.setdefault(name, []), []
    for _ in range(n):
        try:
            s = connect()
            if send:
                s.sendall(send.encode("latin-1"))
            socks.append(s)
        except OSError as exc:
            errors.append(repr(exc))
    return {{"opened": n - len(errors), "errors": errors}}

def op_send(name, data):
    sent = 0
    for s in groups.get(name, []):
        try:
            s.sendall(data.encode("latin-1"))
            sent += 1
        except OSError:
            pass
    return {{"sent": sent}}

def op_replies(name, wait_s):
    # What the daemon sent on each connection within wait_s, and whether it closed it.
    out = [{{"data": "", "eof": False}} for _ in groups.get(name, [])]
    deadline = time.monotonic() + wait_s
    pending = dict(enumerate(groups.get(name, [])))
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending.values()), [], [], 0.05)
        for i, s in list(pending.items()):
            if s not in ready:
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data:
                out[i]["data"] += data.decode("latin-1")
            else:
                out[i]["eof"] = True
                del pending[i]
    return {{"replies": out}}

def op_close(name):
    for s in groups.pop(name, []):
        s.close()
    return {{}}

def op_parallel(requests, timeout_s=60):
    # Each request on its own connection, all at once; (status, body) or the exception.
    results = [None] * len(requests)
    def one(i, method, path):
        started = time.monotonic()
        try:
            r = Client("unix:" + PATH, timeout=timeout_s).request(method, path)
            results[i] = {{"status": r.status, "body": r.text,
                          "headers": dict(r.headers), "s": time.monotonic() - started}}
        except Exception as exc:
            results[i] = {{"exception": repr(exc)}}
    threads = [threading.Thread(target=one, args=(i, m, p)) for i, (m, p) in enumerate(requests)]
    for t in threads: t.start()
    for t in threads: t.join()
    return {{"results": results}}

def op_request(method, path, body=None, headers=None):
    r = Client("unix:" + PATH, timeout=60).request(method, path, body=body, headers=headers)
    return {{"status": r.status, "body": r.text, "headers": dict(r.headers)}}

print(json.dumps({{"uid": __import__("os").getuid()}}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    op = globals()["op_" + cmd.pop("op")]
    try:
        out = op(**cmd)
    except Exception as exc:
        out = {{"exception": repr(exc)}}
    print(json.dumps(out), flush=True)
"""


class Attacker:
    """A process running as ``account``; ``call(op, **args)`` returns its JSON answer."""

    def __init__(self, account: Account, socket_path: str, timeout_s: float = 120.0) -> None:
        self.account = account
        self.timeout_s = timeout_s
        script = _PROGRAM.format(repo=str(REPO), path=socket_path)
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid", str(account.uid), "--regid", str(account.gid),
             "--init-groups", user_python(), "-I", "-c", script],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.uid = self._read()["uid"]

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"attacker exited: {self.proc.stderr.read()}")
                return json.loads(line)
        raise TimeoutError("attacker did not answer")

    def call(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "exception" in out:
            raise RuntimeError(f"attacker {op}: {out['exception']}")
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def status_of(raw: str) -> int | None:
    """The status code of a raw HTTP response text, None if there is none."""
    if not raw.startswith("HTTP/1.1 "):
        return None
    return int(raw.split(" ", 2)[1])


def body_of(raw: str) -> dict:
    return json.loads(raw.split("\r\n\r\n", 1)[1])
