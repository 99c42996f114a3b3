"""What one Prometheus scrape of GET /metrics costs the daemon, with N simulated GPUs.

Usage: python bench/bench_metrics.py [--gpus 8] [--scrapes 200]

Two measures:
- in-process: ``MetricsService.scrape`` (policy decision, one queued read of 4 NVML calls
  per GPU, rendering), wall time and the process's CPU time per scrape — what a scrape
  takes from the daemon;
- over HTTP: a real ``zeusd serve`` on a Unix socket, ``GET /metrics`` on one keep-alive
  connection, wall time per request as Prometheus would see it.
The simulated GPUs answer in microseconds; on real GPUs each NVML read costs what
``zeusd_gpu_last_call_seconds`` shows, and the GPUs are read in parallel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.client import Client  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from zeusd.audit import Auditor  # noqa: E402
from zeusd.devices.simulated import SimulatedBackend  # noqa: E402
from zeusd.identity import Caller  # noqa: E402
from zeusd.policy.load import builtin_policy  # noqa: E402
from zeusd.service.gpu_manager import GpuManager  # noqa: E402
from zeusd.service.metrics import MetricsService  # noqa: E402

ROOT = Caller(transport="unix", uid=0, gid=0, pid=1, groups=(0,))


class FixedPolicy:
    current = builtin_policy()


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return (f"{label}: p50 {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms, "
            f"min {ms[0]:.2f} ms, max {ms[-1]:.2f} ms")


def in_process(gpus: int, scrapes: int) -> None:
    backend = SimulatedBackend.from_spec(f"h200x{gpus}")
    devices = backend.devices()
    manager = GpuManager(devices, [d.info() for d in devices], call_timeout_s=5.0,
                         max_queue_per_gpu=64, max_waiting_per_gpu=8)
    service = MetricsService(manager=manager, policy_store=FixedPolicy(), auditor=Auditor(),
                             backend_kind="simulated")
    try:
        size = len(service.scrape(ROOT))
        for _ in range(20):
            service.scrape(ROOT)
        walls, cpus = [], []
        for _ in range(scrapes):
            wall, cpu = time.perf_counter(), time.process_time()
            service.scrape(ROOT)
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
        print(f"in-process, {gpus} GPUs, {size} bytes per scrape, {scrapes} scrapes")
        print("  " + summary("wall", walls))
        print(f"  CPU (all threads): mean {statistics.mean(cpus) * 1000:.2f} ms")
    finally:
        manager.close()
        backend.close()


def over_http(gpus: int, scrapes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="zbm-", dir="/tmp") as tmp:
        socket_path = f"{tmp}/zeusd.sock"
        daemon = Daemon(Path(tmp), ["serve", "--gpu-backend", "simulated", "--simulated-gpus",
                                    f"h200x{gpus}", "--policy", f"{tmp}/missing.toml",
                                    "--enable", "gpu-read,metrics", "--socket-path",
                                    socket_path], wait_path=socket_path)
        try:
            client = Client("unix:" + socket_path)
            for _ in range(20):
                assert client.get("/metrics").status == 200
            walls = []
            for _ in range(scrapes):
                start = time.perf_counter()
                reply = client.get("/metrics")
                walls.append(time.perf_counter() - start)
                assert reply.status == 200, reply.body
            client.close()
            print(f"over HTTP (Unix socket, keep-alive), {gpus} GPUs, {scrapes} scrapes")
            print("  " + summary("wall", walls))
        finally:
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    in_process(args.gpus, args.scrapes)
    over_http(args.gpus, args.scrapes)


if __name__ == "__main__":
    main()
