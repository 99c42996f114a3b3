"""Peak memory, threads and file descriptors of zeusd under load, for the unit's limits.

Usage: python bench/measure_resources.py [--gpus h200x8] [--workers 10] [--clients 64]
                                         [--seconds 20] [--streams 8]

Starts `zeusd serve` on simulated GPUs, then runs --clients client processes (each
alternating reads of all GPUs, set_power_limit and discover over its own keep-alive
connection) plus --streams open power streams, and more connections than workers so
waitress queues them. It samples /proc/PID/status (VmRSS, VmHWM, Threads) and
/proc/PID/fd every 50 ms and prints the peaks. The unit's MemoryMax=, TasksMax= and
LimitNOFILE= are set from these numbers with headroom (see zeusd.service).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.client import Client  # noqa: E402
from tests.support.daemon import wait_serving  # noqa: E402

POLICY = '[defaults]\noperations = ["all"]\nrestore_on_exit = false\n'


def _client(address: str, seconds: float, n: int) -> None:
    client = Client(address, timeout=60)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        if i % 3 == 0:
            client.post(f"/gpu/set_power_limit?gpu_ids={n % 8}&power_limit_mw="
                        f"{300000 + (i % 50) * 1000}&block=true")
        elif i % 3 == 1:
            client.get("/gpu/get_power_limit")
        else:
            client.get("/discover")


def _stream(address: str, seconds: float) -> None:
    import http.client
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.connect(address[5:])
    conn = http.client.HTTPConnection("localhost")
    conn.sock = sock
    conn.request("GET", "/gpu/stream_power")
    resp = conn.getresponse()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        resp.fp.readline()


def _status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", default="h200x8")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zeusd-res-"))
    sock = tmp / "zeusd.sock"
    (tmp / "policy.toml").write_text(POLICY)
    os.chmod(tmp / "policy.toml", 0o644)
    proc = subprocess.Popen([sys.executable, "-m", "zeusd", "serve", "--gpu-backend", "simulated",
                             "--simulated-gpus", args.gpus, "--num-workers", str(args.workers),
                             "--policy", str(tmp / "policy.toml"), "--socket-path", str(sock),
                             "--log-level", "warning"], cwd=str(REPO))
    wait_serving(str(sock), proc)
    idle = _status(proc.pid)
    peak = dict(idle)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for key, value in _status(proc.pid).items():
                peak[key] = max(peak[key], value)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    address = f"unix:{sock}"
    procs = [mp.Process(target=_stream, args=(address, args.seconds)) for _ in range(args.streams)]
    procs += [mp.Process(target=_client, args=(address, args.seconds, n)) for n in range(args.clients)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    done.set()
    sampler.join()
    proc.terminate()
    proc.wait(30)
    print(f"gpus={args.gpus} workers={args.workers} clients={args.clients} "
          f"streams={args.streams} seconds={args.seconds}")
    print(f"idle: rss={idle['VmRSS'] / 1024:.1f} MiB threads={idle['Threads']} fds={idle['fds']}")
    print(f"peak: rss={peak['VmRSS'] / 1024:.1f} MiB hwm={peak['VmHWM'] / 1024:.1f} MiB "
          f"threads={peak['Threads']} fds={peak['fds']}")


if __name__ == "__main__":
    main()
