"""One real zeusd process per test module, on a short socket path other users can reach.

``Zeusd`` starts ``python -m zeusd serve`` through ``Daemon`` with the simulated
backend, a fake RAPL tree and a missing policy file (the built-in policy)
unless told otherwise, and hands out clients that fail any test whose reply
carries a Python traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .client import Client, Reply
from .daemon import Daemon
from .rapl import FakeRapl
from .sim import SimGpus

_TCP_LINE = re.compile(r"serving on tcp:([0-9.]+):(\d+)")


class CheckedClient(Client):
    """A Client that refuses any reply that leaks a Python traceback."""

    def request(self, method: str, path: str, body=None, headers=None) -> Reply:
        reply = super().request(method, path, body=body, headers=headers)
        assert b"Traceback" not in reply.body, reply.text
        assert b'File "' not in reply.body, reply.text
        return reply


def short_dir(prefix: str = "zd-") -> Path:
    """A directory under /tmp (short socket paths) that every user may traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


class Zeusd:
    """A running daemon: ``.address``, ``.client()``, ``.gpus`` (journal), ``.rapl``, ``.log()``."""

    def __init__(self, tmp: Path, *, tcp: bool = False, gpus: SimGpus | None = None,
                 rapl: FakeRapl | None = None, enable: str | None = None,
                 policy_text: str | None = None, args: tuple[str, ...] = (),
                 env: dict | None = None) -> None:
        self.tmp = tmp
        self.sock_dir = short_dir()
        self.socket_path = str(self.sock_dir / "zeusd.sock")
        self.gpus = gpus if gpus is not None else SimGpus(tmp)
        self.rapl = rapl
        self.policy_path = tmp / "policy.toml"  # absent unless policy_text is given
        if policy_text is not None:
            self.policy_path.write_text(policy_text)
            os.chmod(self.policy_path, 0o644)
        argv = ["serve", "--gpu-backend", "simulated", "--simulated-gpus",
                str(self.gpus.spec_path), "--policy", str(self.policy_path)]
        if rapl is not None:
            argv += ["--rapl-root", str(rapl.root)]
        if enable is None and rapl is None:
            enable = "gpu-control,gpu-read"
        if enable is not None:
            argv += ["--enable", enable]
        if tcp:
            argv += ["--mode", "tcp", "--tcp-bind-address", "127.0.0.1:0"]
        else:
            argv += ["--socket-path", self.socket_path]
        self.argv = argv + list(args)
        self.daemon = Daemon(tmp, self.argv, env=env)
        try:
            self.address = self._wait_tcp() if tcp else self._wait_unix()
        except BaseException:
            self.stop()
            raise
        self._clients: list[Client] = []
        self.http = self.client()

    def _wait_unix(self) -> str:
        self.daemon.wait_for_socket(self.socket_path)
        return "unix:" + self.socket_path

    def _wait_tcp(self, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.daemon.proc.poll() is not None:
                raise RuntimeError(f"zeusd exited with {self.daemon.proc.returncode}:\n"
                                   f"{self.daemon.log()}")
            match = _TCP_LINE.search(self.daemon.log())
            if match:
                return f"{match.group(1)}:{match.group(2)}"
            time.sleep(0.05)
        raise RuntimeError(f"zeusd did not listen on TCP:\n{self.daemon.log()}")

    def client(self, timeout: float = 30.0) -> CheckedClient:
        client = CheckedClient(self.address, timeout=timeout)
        self._clients.append(client)
        return client

    def get(self, path: str, **kw) -> Reply:
        return self.http.get(path, **kw)

    def post(self, path: str, body=None, **kw) -> Reply:
        return self.http.post(path, body=body, **kw)

    def log(self) -> str:
        return self.daemon.log()

    def wait_for_log(self, text: str, timeout_s: float = 10.0) -> str:
        """The log once it contains ``text`` (log lines are written after the reply)."""
        deadline = time.monotonic() + timeout_s
        while True:
            log = self.log()
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def stop(self) -> int:
        for client in getattr(self, "_clients", []):
            client.close()
        code = self.daemon.stop()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        return code
