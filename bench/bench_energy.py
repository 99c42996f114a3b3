"""Energy reads under load: driver calls per GPU, with and without single flight.

Usage: python bench/bench_energy.py [--seconds 3] [--clients 16] [--gpus 8] [--rounds 3]

In one process: simulated H200s with fixture latencies (an energy read sleeps the real
driver's 3 ms, serialised per GPU as the driver does) behind a GpuManager; ``clients``
threads each read the energy of every GPU in a loop, as a monitor polling
/gpu/get_cumulative_energy would. Two ways, interleaved round by round:
- queued: each read is a command in the GPU's queue (how reads ran before single flight);
- single flight: ``read_available`` (beside the queue, concurrent readers share one call).
It counts the driver's energy calls per GPU (``call_counts()``) and prints, per way, reads
of all GPUs per second, calls per GPU per call duration (1.0 = the driver busy all the
time with energy reads) and calls per GPU per read.
The HTTP figure (16 clients through the daemon) is ``bench_api.py --energy``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeusd.devices.base import GpuInfo  # noqa: E402
from zeusd.devices.profiles import H200_LATENCY_US, parse_spec  # noqa: E402
from zeusd.devices.simulated import SimulatedBackend  # noqa: E402
from zeusd.service.gpu_manager import GpuManager  # noqa: E402
from zeusd.service.reads import _energy_mj  # noqa: E402

ENERGY = "nvmlDeviceGetTotalEnergyConsumption"
CALL_S = H200_LATENCY_US[ENERGY] / 1e6


def one_round(gpus: int, clients: int, seconds: float, single_flight: bool) -> dict:
    spec = dataclasses.replace(parse_spec(f"h200x{gpus}"), latency="fixture")
    backend = SimulatedBackend(spec)
    devices = backend.devices()
    infos = [GpuInfo(d.index, "sim", f"GPU-{d.index}", f"0000:{d.index:02x}:00.0", True)
             for d in devices]
    manager = GpuManager(devices, infos, max_inline_calls=2)
    indices = list(range(gpus))
    read = manager.read_available if single_flight else manager.run_available
    reads = [0] * clients
    end = time.monotonic() + seconds

    def client(k: int) -> None:
        while time.monotonic() < end:
            read(indices, _energy_mj, "get_total_energy")
            reads[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = [d.call_counts().get(ENERGY, 0) for d in devices]
    manager.close()
    backend.close()
    total = sum(reads)
    return {"reads_per_s": total / seconds,
            "calls_per_gpu": statistics.mean(calls),
            "calls_per_call_s": max(calls) / (seconds / CALL_S),
            "calls_per_read": statistics.mean(calls) / max(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[dict]] = {"queued": [], "single flight": []}
    for _ in range(args.rounds):
        for way in samples:
            samples[way].append(one_round(args.gpus, args.clients, args.seconds,
                                          way == "single flight"))
    print(f"# {args.clients} threads reading the energy of all {args.gpus} simulated H200s "
          f"(fixture latency: {CALL_S * 1e3:.2f} ms per call, serialised per GPU), "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s, median round")
    print(f"{'way':<14} {'reads/s':>8} {'calls/GPU':>10} {'calls/GPU/call time':>20} "
          f"{'calls/GPU/read':>15}")
    for way, rounds in samples.items():
        m = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(f"{way:<14} {m['reads_per_s']:>8.0f} {m['calls_per_gpu']:>10.0f} "
              f"{m['calls_per_call_s']:>20.2f} {m['calls_per_read']:>15.3f}")


if __name__ == "__main__":
    main()
