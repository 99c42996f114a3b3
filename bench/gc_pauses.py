"""Garbage-collection pauses inside the serving daemon, with and without freezing what
start-up built (``zeusd.daemon.freeze_start_up_objects``).

Usage: python bench/gc_pauses.py [--requests 20000] [--case get|set]

The real daemon (4 simulated H200s) runs through its own entry point in a child process
whose ``gc.callbacks`` time every collection; one client (as `nobody` when run as root)
sends keep-alive requests, then SIGUSR2 makes the daemon write what it counted. "without"
is the same daemon with the freeze replaced by a no-op. Printed per generation: how many
collections ran while the requests were served, the longest one, and the total per request.
A collection stops every thread of the daemon, so its longest pause is a delay some request
waited through.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_api import GET_PATH, SET_PATH, SMALL_POLICY, _drop_privileges  # noqa: E402
from tests.support.client import Client  # noqa: E402
from tests.support.daemon import env_with_repo, wait_serving, write_policy  # noqa: E402

OBSERVED_DAEMON = """
import gc, json, signal, sys, time
import zeusd.daemon
from zeusd.cli import main

counts, longest, total = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
started = [0.0]

def timed(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
        return
    took = time.perf_counter() - started[0]
    generation = info["generation"]
    counts[generation] += 1
    total[generation] += took
    longest[generation] = max(longest[generation], took)

def report(signum, frame):
    with open(sys.argv[1], "w") as out:
        json.dump({"counts": counts, "longest_s": longest, "total_s": total}, out)
    counts[:] = [0, 0, 0]; longest[:] = [0.0, 0.0, 0.0]; total[:] = [0.0, 0.0, 0.0]

if sys.argv[2] == "without":
    zeusd.daemon.freeze_start_up_objects = lambda: None
gc.callbacks.append(timed)
signal.signal(signal.SIGUSR2, report)
sys.exit(main(sys.argv[3:]))
"""


def measure(tmp: Path, way: str, method: str, path: str, requests: int) -> dict:
    socket_path = str(tmp / f"{way}.sock")
    report = tmp / f"{way}.json"
    policy = write_policy(tmp / "policy.toml", SMALL_POLICY)
    proc = subprocess.Popen(
        [sys.executable, "-c", OBSERVED_DAEMON, str(report), way, "serve", "--gpu-backend",
         "simulated", "--simulated-gpus", "h200x4", "--socket-path", socket_path,
         "--policy", str(policy), "--enable", "gpu-control,gpu-read", "--log-level",
         "warning"], env=env_with_repo(), stderr=subprocess.DEVNULL)
    try:
        wait_serving(socket_path, proc)
        read_report(proc, report)  # start counting from here
        child = os.fork()
        if child == 0:  # pragma: no cover - the client process
            _drop_privileges()
            client = Client("unix:" + socket_path)
            for i in range(requests):
                if client.request(method, path.format(v=300000 + 10000 * (i % 2))).status \
                        != 200:
                    os._exit(1)
            os._exit(0)
        if os.waitpid(child, 0)[1]:
            raise SystemExit("a request failed")
        return read_report(proc, report)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def read_report(proc: subprocess.Popen, report: Path) -> dict:
    report.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while True:
        try:
            return json.loads(report.read_text())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not report") from None
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--case", choices=("get", "set"), default="set")
    args = parser.parse_args()
    method, path = ("GET", GET_PATH) if args.case == "get" else ("POST", SET_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        print(f"# {args.requests} keep-alive requests {method} {path.split('?')[0]} from one "
              "client; collections while they were served")
        print(f"{'start-up objects':<17} {'gen':>3} {'collections':>11} {'longest ms':>10} "
              f"{'µs per request':>14}")
        for way in ("frozen", "without"):
            found = measure(Path(tmp), way, method, path, args.requests)
            for gen in range(3):
                print(f"{way:<17} {gen:>3} {found['counts'][gen]:>11} "
                      f"{found['longest_s'][gen] * 1e3:>10.2f} "
                      f"{found['total_s'][gen] / args.requests * 1e6:>14.2f}")


if __name__ == "__main__":
    main()
