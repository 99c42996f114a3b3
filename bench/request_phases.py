"""Where one request's time goes inside the daemon: zeusd's app against the bare Falcon app,
both behind zeusd's own transport (waitress with PeerChannel/PeerTask).

Usage: python bench/request_phases.py [--requests 3000] [--rounds 3]

The daemon runs in this process's child with timers wrapped around its phases (the same
code, nothing stubbed): "wait" from the request's last byte to a worker picking it up,
"app" the WSGI app's call, "task" the rest of waitress's work on the worker (environ,
headers, writing). One client process (as `nobody` when run as root) sends keep-alive
GET /gpu/get_power_limit, then blocking and non-blocking set_power_limit; medians in µs of
the middle round. "app (bare)" is the bare app's call behind the same transport: the
difference is what zeusd's own code (parsing, policy, the GPU path, audit, JSON) costs
per request in a running daemon, which is several times its cost in a hot loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_api import GET_PATH, SET_LATER_PATH, SET_PATH, SMALL_POLICY, \
    _drop_privileges  # noqa: E402
from tests.support.client import Client  # noqa: E402
from tests.support.daemon import wait_serving  # noqa: E402

CASES = (("get_power_limit", "GET", GET_PATH), ("set_power_limit", "POST", SET_PATH),
         ("set_power_limit nb", "POST", SET_LATER_PATH))


def serve(socket_path: str, policy: str, bare: bool, report_fd: int, command_fd: int) -> None:
    """The daemon (child process), its phases timed; answers "dump" on ``command_fd``."""
    import threading

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the audit lines (no journal here)

    import zeusd.daemon as daemon
    import zeusd.transport.server as transport
    from zeusd.cli import main

    phases: dict[str, list[float]] = {"wait": [], "app": [], "task": []}
    real_create_app = daemon.Services.create_app

    def create_app(self, groups):
        if bare:
            import falcon

            sys.path.insert(0, str(REPO / "bench"))
            from bare_app import Ok
            app = falcon.App()
            app.add_sink(Ok().on_get, "/")
        else:
            app = real_create_app(self, groups)

        def timed(environ, start_response):
            started = time.perf_counter()
            try:
                return app(environ, start_response)
            finally:
                phases["app"].append(time.perf_counter() - started)
        return timed

    real_execute = transport.PeerTask.execute

    def execute(self):
        received = getattr(self.request, "zeusd_received_at", None)
        started = time.perf_counter()
        if received is not None:
            phases["wait"].append(time.monotonic() - received)
        apps = len(phases["app"])
        real_execute(self)
        app_s = phases["app"][-1] if len(phases["app"]) > apps else 0.0
        phases["task"].append(time.perf_counter() - started - app_s)

    def answer() -> None:
        while os.read(command_fd, 1):
            line = " ".join(f"{k}={statistics.median(v) * 1e6:.1f}" for k, v in phases.items()
                            if v)
            for v in phases.values():
                v.clear()
            os.write(report_fd, (line + "\n").encode())

    daemon.Services.create_app = create_app
    transport.PeerTask.execute = execute
    threading.Thread(target=answer, daemon=True).start()
    sys.exit(main(["serve", "--gpu-backend", "simulated", "--simulated-gpus", "h200x4",
                   "--socket-path", socket_path, "--policy", policy, "--num-workers", "8",
                   "--enable", "gpu-control,gpu-read", "--log-level", "warning"]))


def client_burst(address: str, method: str, path: str, requests: int) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the client process
        _drop_privileges()
        client = Client(address)
        for i in range(requests):
            if client.request(method, path.format(v=300000 + 10000 * (i % 2))).status != 200:
                os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        raise SystemExit(f"a request failed: {method} {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        policy = Path(tmp) / "policy.toml"
        policy.write_text(SMALL_POLICY)
        os.chmod(policy, 0o644)
        servers = {}
        for label, bare in (("bare", True), ("zeusd", False)):
            socket_path = f"{tmp}/{label}.sock"
            report_r, report_w = os.pipe()
            command_r, command_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the daemon process
                os.environ["PYTHONPATH"] = str(REPO)
                serve(socket_path, str(policy), bare, report_w, command_r)
            servers[label] = (socket_path, pid, os.fdopen(report_r), command_w)
        try:
            for socket_path, pid, _, _ in servers.values():
                wait_serving(socket_path, _Pid(pid))
            rounds: dict = {}
            for _ in range(args.rounds):
                for name, method, path in CASES:
                    for label, (socket_path, _, report, command) in servers.items():
                        if label == "bare" and method == "POST":
                            continue
                        os.write(command, b"d")  # clear what earlier requests left
                        report.readline()
                        client_burst("unix:" + socket_path, method, path, args.requests)
                        os.write(command, b"d")
                        found = dict(p.split("=") for p in report.readline().split())
                        rounds.setdefault((label, name), []).append(
                            {k: float(v) for k, v in found.items()})
            print(f"# µs per request, median request of the middle of {args.rounds} rounds "
                  f"of {args.requests}; one client; zeusd's transport for both")
            print(f"{'server':<7} {'case':<20} {'wait':>6} {'app':>6} {'task':>6}")
            for (label, name), found in rounds.items():
                middle = sorted(found, key=lambda f: f.get("app", 0))[len(found) // 2]
                print(f"{label:<7} {name:<20} {middle.get('wait', 0):>6.0f} "
                      f"{middle.get('app', 0):>6.0f} {middle.get('task', 0):>6.0f}")
        finally:
            for _, pid, _, _ in servers.values():
                os.kill(pid, 15)
                os.waitpid(pid, 0)


class _Pid:
    """What wait_serving needs of a process: poll() and returncode."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self):
        done, status = os.waitpid(self.pid, os.WNOHANG)
        if done:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


if __name__ == "__main__":
    main()
