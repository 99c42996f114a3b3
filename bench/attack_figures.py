"""Figures of the scripted attacks on a real zeusd (simulated GPUs), by a real unprivileged user.

Usage (root: it creates a throw-away user):
    python bench/attack_figures.py [--connections 500] [--body-mib 1024] [--rounds 20]
        [--skip-unlimited]

Prints, each next to the same attack on a daemon run with the limits lifted (the behaviour
before admission, body caps and bounded waits; --skip-unlimited leaves those runs out):
- connections: how many of the attacker's connections the daemon kept open, and root's
  control latency (new connection + POST set_power_limit block=true) while they are held;
- body: the daemon's peak RSS (VmHWM) before and after a client sends a body of
  --body-mib MiB to a legacy route, the answer, and how much was sent before it came;
- slow/hung GPU: root's control latency for GPU 0 while the attacker floods reads of GPU 1,
  which answers in 2 s (slow) or never (hung).
Latencies are the median and the maximum over --rounds requests.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.client import Client  # noqa: E402
from tests.support.harness import Zeusd  # noqa: E402
from tests.support.hostile import Attacker, status_of  # noqa: E402
from tests.support.sim import SimGpus  # noqa: E402
from tests.support.users import Accounts  # noqa: E402

UNLIMITED = ("--max-connections", "100000", "--reserved-connections", "0",
             "--max-connections-per-peer", "100000", "--request-read-timeout-s", "100000",
             "--idle-timeout-s", "100000", "--request-timeout-s", "100000",
             "--max-waiting-per-gpu", "100000", "--max-body-bytes", str(2 ** 31))
CONTROL = "/gpu/set_power_limit?gpu_ids=0&power_limit_mw={v}&block=true"


def control_latency_ms(zd: Zeusd, rounds: int) -> tuple[float, float, list[int]]:
    """Root: a new connection per request, as a fresh client process would."""
    times, statuses = [], []
    for i in range(rounds):
        started = time.perf_counter()
        try:
            reply = Client(zd.address, timeout=120).post(CONTROL.format(v=300_000 + i * 1000))
            statuses.append(reply.status)
        except OSError as exc:
            statuses.append(repr(exc))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), sorted(set(statuses), key=str)


def peak_rss_mib(zd: Zeusd) -> float:
    status = Path(f"/proc/{zd.daemon.proc.pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def start(tmp: Path, name: str, args=(), faults=None) -> Zeusd:
    directory = tmp / name
    directory.mkdir()
    return Zeusd(directory, gpus=SimGpus(directory, faults=faults), args=tuple(args))


def connections(tmp, account, n, rounds, extra):
    zd = start(tmp, "conn" + str(len(extra)), extra)
    attacker = Attacker(account, zd.socket_path)
    try:
        attacker.call("open", name="hold", n=n)
        replies = attacker.call("replies", name="hold", wait_s=2)["replies"]
        held = sum(1 for r in replies if not r["eof"])
        median, worst, statuses = control_latency_ms(zd, rounds)
    finally:
        attacker.close()
        zd.stop()
    return f"attacker tried {n}, held {held}; root control {median:.1f} ms median, " \
           f"{worst:.1f} ms max, statuses {statuses}"


def body(tmp, mib, extra):
    zd = start(tmp, "body" + str(len(extra)), extra)
    try:
        before = peak_rss_mib(zd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(zd.socket_path)
        size = mib * 2 ** 20
        head = ("POST /gpu/0/set_power_limit HTTP/1.1\r\nHost: x\r\nContent-Type: "
                f"application/json\r\nContent-Length: {size}\r\n\r\n").encode()
        started = time.perf_counter()
        sock.sendall(head)
        prefix = b'{"power_limit_mw": 300000, "block": true, "pad": "'
        chunk = b"x" * 2 ** 20
        sent = 0
        try:
            sock.sendall(prefix)
            sent = len(prefix)
            while sent < size:
                piece = chunk[:min(len(chunk), size - sent - 2)] if size - sent > 2 else b'"}'
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass  # the daemon answered and closed: nothing more is read
        sock.settimeout(120)
        try:
            answer = sock.recv(4096).decode("latin-1")
        except OSError as exc:
            answer = repr(exc)
        elapsed = time.perf_counter() - started
        sock.close()
        time.sleep(0.5)
        after = peak_rss_mib(zd)
    finally:
        zd.stop()
    return (f"{mib} MiB body: answer {status_of(answer)}, {sent / 2 ** 20:.1f} MiB sent before "
            f"it, {elapsed:.2f} s; daemon peak RSS {before:.0f} MiB before, {after:.0f} MiB after")


def slow_gpu(tmp, account, rounds, fault, extra):
    zd = start(tmp, "gpu" + str(len(extra)) + next(iter(fault)), extra,
               faults=[{"gpu": 1, "call": "nvmlDeviceGetPowerManagementLimit", **fault}])
    attacker = Attacker(account, zd.socket_path, timeout_s=600)
    stop = threading.Event()
    outcome: dict = {}

    def flood():
        while not stop.is_set():
            out = attacker.call("parallel", requests=[["GET", "/gpu/get_power_limit?gpu_ids=1"]]
                                * 12, timeout_s=300)
            for r in out["results"]:
                key = r.get("status", "exception")
                outcome[key] = outcome.get(key, 0) + 1
    thread = threading.Thread(target=flood)
    try:
        thread.start()
        time.sleep(1.0)
        median, worst, statuses = control_latency_ms(zd, rounds)
        stop.set()
        zd.stop()  # ends the hung calls' waiters too
        thread.join(600)
    finally:
        attacker.close()
        zd.stop()
    return (f"root control of GPU 0: {median:.1f} ms median, {worst:.1f} ms max, statuses "
            f"{statuses}; attacker's GPU 1 reads: {dict(sorted(outcome.items(), key=str))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--body-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--skip-unlimited", action="store_true")
    args = parser.parse_args()
    variants = [("limits", ())] + ([] if args.skip_unlimited else [("unlimited", UNLIMITED)])
    tmp = Path(tempfile.mkdtemp(prefix="zeusd-attack-"))
    with Accounts() as accounts:
        mallory = accounts.user("atk")
        for label, extra in variants:
            print(f"[{label}] connections: "
                  f"{connections(tmp, mallory, args.connections, args.rounds, extra)}", flush=True)
            print(f"[{label}] body: {body(tmp, args.body_mib, extra)}", flush=True)
            for fault in ({"delay_s": 2}, {"hang": True}):
                print(f"[{label}] GPU 1 {json.dumps(fault)}: "
                      f"{slow_gpu(tmp, mallory, args.rounds, fault, extra)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
