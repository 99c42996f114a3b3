"""The first request's latency when socket activation starts zeusd, and what it is made of.

Usage: python bench/cold_start.py [--starts 20] [--phase-starts 5] [--import-starts 3]

systemd-socket-activate binds a Unix socket and starts `zeusd serve` (simulated GPUs)
on the first connection, as systemd does for zeusd.socket. The client connects, sends
GET /gpu/get_power_limit?gpu_ids=0 at once and times it until the answer is read:
that is the first request's latency from a cold process (the page cache is warm, as
for a daemon that exited when idle). Reported:

- p50/min/max of that latency over --starts cold starts (plain `python -m zeusd`);
- its phases over --phase-starts more, through a wrapper that times zeusd's start-up
  functions in the same process (interpreter start, imports, policy load, GPU backend
  init, the rest of the state, server, ready, the first request in the app);
- import time by module group over --import-starts starts under `-X importtime`
  (which inflates imports a little; the groups' shares are what matter).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUEST = b"GET /gpu/get_power_limit?gpu_ids=0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
POLICY = '[defaults]\noperations = ["all"]\nrestore_on_exit = false\n'


def serve_args(tmp: str) -> list[str]:
    policy = Path(tmp) / "policy.toml"
    policy.write_text(POLICY)
    return ["serve", "--gpu-backend", "simulated", "--simulated-gpus", "h200x2",
            "--cpu-backend", "simulated", "--policy", str(policy), "--log-level", "warning"]


def cold_start(python_args: list[str]) -> dict:
    """One start: {"latency_s", "connect_at", "stderr"}; the daemon is stopped after."""
    with tempfile.TemporaryDirectory() as tmp:
        sock_path = f"{tmp}/zeusd.sock"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        command = ["systemd-socket-activate", "-l", sock_path, "-E", "PYTHONPATH", "--",
                   sys.executable, *python_args, *serve_args(tmp)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=tmp)
        try:
            with _connect(sock_path) as client:  # this connection starts the daemon
                connect_at = time.monotonic()
                client.sendall(REQUEST)
                answer = b""
                while chunk := client.recv(65536):
                    answer += chunk
            latency_s = time.monotonic() - connect_at
        finally:
            proc.send_signal(signal.SIGTERM)
            stderr = proc.communicate(timeout=30)[1].decode("utf-8", "replace")
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"the first request failed: {answer[:200]!r}\n{stderr[-2000:]}")
        return {"latency_s": latency_s, "connect_at": connect_at, "stderr": stderr}


def _connect(path: str) -> socket.socket:
    """Connected once systemd-socket-activate listens (it binds, then listens)."""
    deadline = time.monotonic() + 10
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
            return client
        except (FileNotFoundError, ConnectionRefusedError):
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


# -- phases: run in the daemon's process (--child) ------------------------------------------

def _child(marks_path: str, argv: list[str]) -> int:
    """zeusd's main, with its start-up functions timed; marks go to ``marks_path``."""
    marks = open(marks_path, "a", encoding="utf-8")  # noqa: SIM115

    def mark(name: str) -> None:
        marks.write(f"{name} {time.monotonic()}\n")
        marks.flush()

    mark("interpreter")
    import zeusd.cli
    import zeusd.daemon
    mark("imports")
    for module, name in (("zeusd.daemon", "_serve"), ("zeusd.daemon", "build_state"),
                         ("zeusd.daemon", "_open_gpus"), ("zeusd.daemon", "_listeners"),
                         ("zeusd.policy", "PolicyStore"), ("zeusd.audit", "Auditor"),
                         ("zeusd.transport.server", "make_server")):
        _time_calls(module, name, mark)
    _time_first_request(mark)
    _time_ready(mark)
    mark("hooks")  # their imports (app, policy, audit, server) are _serve's otherwise
    return zeusd.cli.main(argv)


def _time_calls(module_name: str, name: str, mark) -> None:
    """Mark the start and end of every call of module.name (absent names are skipped:
    this bench must outlive refactors)."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    original = getattr(module, name, None)
    if original is None:
        return

    def timed(*args, **kwargs):
        mark(f"{name}>")
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{name}<")
    setattr(module, name, timed)


def _time_first_request(mark) -> None:
    try:
        import zeusd.api.app as app_module
        create_app = app_module.create_app
    except (ImportError, AttributeError):
        return  # moved: the phase is left out, the latency is still measured

    def wrapped(*args, **kwargs):
        app = create_app(*args, **kwargs)
        seen = []

        def first_timed(environ, start_response):
            if seen:
                return app(environ, start_response)
            seen.append(1)
            mark("request>")
            try:
                return app(environ, start_response)
            finally:
                mark("request<")
        return first_timed
    app_module.create_app = wrapped


def _time_ready(mark) -> None:
    try:
        import zeusd.transport.sdnotify as sdnotify
        notify = sdnotify.notify
    except (ImportError, AttributeError):
        return

    def wrapped(state, *args, **kwargs):
        if state == "READY=1":
            mark("ready")
        return notify(state, *args, **kwargs)
    sdnotify.notify = wrapped


def phases(connect_at: float, marks: list[tuple[str, float]], done_at: float) -> dict:
    """Durations (s) between the marks, first occurrence of each."""
    at = {}
    for name, when in marks:
        at.setdefault(name, when)
    steps = [("interpreter start", "interpreter"), ("imports (cli, daemon)", "imports"),
             ("imports of api.app, policy, audit, server", "hooks"),
             ("argument parsing", "_serve>"), ("imports in _serve", "Auditor>"),
             ("audit setup", "Auditor<"), ("policy load", "PolicyStore<"),
             ("imports in build_state", "_open_gpus>"), ("GPU backend init", "_open_gpus<"),
             ("rest of the state", "build_state<"), ("listeners", "_listeners<"),
             ("app + server", "make_server<"), ("until ready", "ready"),
             ("until the request reaches the app", "request>"),
             ("the request in the app", "request<")]
    out, last = {}, connect_at
    for label, key in steps:
        if key in at:
            out[label] = at[key] - last
            last = at[key]
    out["answer written and read"] = done_at - last
    return out


def measure_phases(starts: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    for _ in range(starts):
        with tempfile.NamedTemporaryFile("r", suffix=".marks") as marks_file:
            result = cold_start([str(REPO / "bench" / "cold_start.py"), "--child",
                                 marks_file.name])
            marks = [(name, float(when)) for name, when in
                     (line.split() for line in Path(marks_file.name).read_text().splitlines())]
        done_at = result["connect_at"] + result["latency_s"]
        for label, seconds in phases(result["connect_at"], marks, done_at).items():
            found[label].append(seconds)
    return found


# -- imports ---------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def import_groups(stderr: str) -> tuple[dict[str, float], dict[str, float]]:
    """(self µs per group, cumulative µs of each zeusd module) from -X importtime output."""
    groups: dict[str, float] = defaultdict(float)
    zeusd_cumulative: dict[str, float] = {}
    for self_us, cumulative_us, _indent, name in _IMPORT_LINE.findall(stderr):
        top = name.split(".")[0]
        group = name if top == "zeusd" and name.count(".") <= 1 else top
        if top == "zeusd" and name.count(".") > 1:
            group = ".".join(name.split(".")[:2])
        if top not in ("zeusd", "falcon", "waitress", "jwt", "systemd") and \
                top in sys.stdlib_module_names:
            group = "stdlib"
        groups[group] += int(self_us)
        if top == "zeusd":
            zeusd_cumulative[name] = int(cumulative_us)
    return groups, zeusd_cumulative


def measure_imports(starts: int) -> tuple[dict[str, float], dict[str, float]]:
    totals: dict[str, list[float]] = defaultdict(list)
    cumulative: dict[str, list[float]] = defaultdict(list)
    for _ in range(starts):
        groups, zeusd_cumulative = import_groups(cold_start(["-X", "importtime", "-m",
                                                             "zeusd"])["stderr"])
        for name, us in groups.items():
            totals[name].append(us)
        for name, us in zeusd_cumulative.items():
            cumulative[name].append(us)
    return ({k: statistics.median(v) for k, v in totals.items()},
            {k: statistics.median(v) for k, v in cumulative.items()})


def python_start_s(runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - began)
    return statistics.median(times)


# -- report ----------------------------------------------------------------------------------

def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--phase-starts", type=int, default=5)
    parser.add_argument("--import-starts", type=int, default=3)
    args = parser.parse_args()
    latencies = [cold_start(["-m", "zeusd"])["latency_s"] for _ in range(args.starts)]
    print(f"# first request under socket activation, {args.starts} cold starts "
          f"(load {os.getloadavg()[0]:.2f})")
    print(f"p50 {statistics.median(latencies) * 1e3:.1f} ms, min {min(latencies) * 1e3:.1f}, "
          f"max {max(latencies) * 1e3:.1f}; `python -c pass` alone: "
          f"{python_start_s(10) * 1e3:.1f} ms")
    print(f"\n# phases, p50 of {args.phase_starts} starts (ms)")
    for label, values in measure_phases(args.phase_starts).items():
        print(f"{label:38} {statistics.median(values) * 1e3:8.1f}")
    groups, cumulative = measure_imports(args.import_starts)
    print(f"\n# imports by group, self time, p50 of {args.import_starts} starts under "
          f"-X importtime (ms); total {sum(groups.values()) / 1e3:.1f}")
    for name, us in sorted(groups.items(), key=lambda kv: -kv[1])[:20]:
        print(f"{name:38} {us / 1e3:8.1f}")
    print("\n# zeusd modules by cumulative import time (ms)")
    for name, us in sorted(cumulative.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{name:38} {us / 1e3:8.1f}")


if __name__ == "__main__":
    main()
