"""A real zeusd with leases on (``--lease-dir``), real users in a group the policy lets change
GPUs, and client processes that make their requests and then live until they are killed."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

from tests.support.client import Client
from tests.support.daemon import Daemon, env_with_repo, zeusd_command
from tests.support.policy_daemon import PolicyDaemon
from tests.support.users import Account, user_python

WAIT_S = 30.0  # a bound on waiting for a restore, never a speed claim
POLICY = """\
version = 1

[defaults]
operations = ["gpu-read"]

[[rule]]
name = "jobs"
groups = ["{group}"]
operations = ["gpu-read", "set_power_limit", "set_gpu_locked_clocks", "reset_gpu_locked_clocks",
              "set_mem_locked_clocks", "reset_mem_locked_clocks", "set_persistence_mode"]
{extra}
"""

# A client process (zeus 0.16's pattern: a new connection per request, closed after it):
# argv[1] the socket, argv[2] JSON [[method, path, body-or-null], ...]. It prints one JSON
# line of [status, body] per request, then lives until killed.
JOB = r"""
import http.client, json, socket, sys, time
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
out = []
for method, path, body in json.loads(sys.argv[2]):
    conn = Conn("localhost", timeout=60)
    data = None if body is None else json.dumps(body)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out.append([resp.status, resp.read().decode()])
    conn.close()
print(json.dumps(out), flush=True)
time.sleep(3600)
"""


class Job:
    """A process running as ``account`` that makes ``requests`` and waits to be killed."""

    def __init__(self, account: Account, socket_path: str, requests: list) -> None:
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid", str(account.uid), "--regid", str(account.gid),
             "--init-groups", user_python(), "-I", "-c", JOB, socket_path, json.dumps(requests)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        self.pid = self.proc.pid  # setpriv execs Python
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.kill()
            raise RuntimeError(f"job did not answer: {self.proc.stderr.read()}")
        self.replies = [(status, body) for status, body in json.loads(line)]

    def kill(self) -> float:
        """SIGKILL it; returns the time of the kill (time.monotonic)."""
        at = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        return at


def set_power(gpu: int, watts: int) -> list:
    return ["POST", f"/gpu/set_power_limit?gpu_ids={gpu}&power_limit_mw={watts * 1000}"
                    "&block=true", None]


def set_gpu_clocks(gpu: int, low: int, high: int) -> list:
    return ["POST", f"/gpu/set_gpu_locked_clocks?gpu_ids={gpu}&min_clock_mhz={low}"
                    f"&max_clock_mhz={high}&block=true", None]


class LeaseDaemon(PolicyDaemon):
    """PolicyDaemon with a lease directory; ``kill()`` SIGKILLs it, ``restart()`` starts a new
    process on the same socket, GPUs (their journal) and lease directory."""

    def __init__(self, policy_text: str, gpus: int = 2, extra_args: tuple[str, ...] = ()) -> None:
        self.lease_dir = os.path.join(tempfile.mkdtemp(prefix="zdl-"), "leases")
        super().__init__(policy_text, gpus=gpus,
                         extra_args=("--lease-dir", self.lease_dir, *extra_args))

    def stop(self) -> int:
        try:
            return super().stop()
        finally:
            shutil.rmtree(os.path.dirname(self.lease_dir), ignore_errors=True)

    def start_again(self) -> None:
        self.final_log = None
        self.daemon = Daemon(self.dir, self.argv)
        self.daemon.wait_for_socket(self.socket_path)

    def kill(self) -> None:
        self.daemon.proc.kill()
        self.daemon.proc.wait()
        self.daemon.log_file.close()
        self.logs_before = getattr(self, "logs_before", "") + self.daemon.log()

    def terminate(self) -> int:
        self.daemon.proc.terminate()
        code = self.daemon.proc.wait(WAIT_S)
        self.daemon.log_file.close()
        self.logs_before = getattr(self, "logs_before", "") + self.daemon.log()
        return code

    def power_limit_mw(self, gpu: int) -> int:
        return Client(self.address).get(f"/gpu/get_power_limit?gpu_ids={gpu}").json()[
            str(gpu)]["power_limit_mw"]

    def wait_power(self, gpu: int, mw: int) -> float:
        """Wait until GPU ``gpu``'s power limit reads ``mw``; returns when (time.monotonic)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            entries = [e for e in self.gpus.entries() if e["gpu"] == gpu
                       and e["call"] == "nvmlDeviceSetPowerManagementLimit"]
            if entries and entries[-1]["args"] == [mw]:
                return time.monotonic()
            assert time.monotonic() < deadline, f"GPU {gpu} power limit never became {mw}"
            time.sleep(0.002)

    def run_admin(self, *args: str) -> subprocess.CompletedProcess:
        """`zeusd ARGS --lease-dir <this daemon's>` as root."""
        return subprocess.run(zeusd_command(*args, "--lease-dir", self.lease_dir),
                              capture_output=True, text=True, env=env_with_repo(), timeout=60)

    def power_limit_mw_offline(self, gpu: int) -> int:
        """GPU ``gpu``'s power limit as the simulated GPUs' journal left it (no daemon needed)."""
        values = [e["args"][0] for e in self.gpus.entries() if e["gpu"] == gpu
                  and e["call"] == "nvmlDeviceSetPowerManagementLimit"]
        return values[-1] if values else None

    def leases(self) -> list[dict]:
        return Client(self.address).get("/leases").json()["leases"]
