"""How soon a lease is restored after its owner is SIGKILLed.

Usage: python bench/bench_leases.py [--kills 100] [--knobs 2]

For each round: a real child process, pinned by a pidfd, opens leases on a
simulated H200 (power limit, then locked clocks); the child is SIGKILLed; the
delay is from just before kill(2) to the last "restored" event (the watcher
thread woke on the pidfd, read the knob, wrote the capture back, removed the
lease file with an fsync). Prints p50/p90/max in milliseconds. The lease
directory is a temporary directory (the file system's fsync cost is included).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeusd.devices.simulated import SimulatedBackend  # noqa: E402
from zeusd.leases import LeaseBook, knobs  # noqa: E402
from zeusd.leases.device import GpuKnobs  # noqa: E402
from zeusd.leases.owner import pin_pid  # noqa: E402
from zeusd.transport.peercred import process_start_ticks  # noqa: E402

CHANGES = ((knobs.POWER_LIMIT, 300_000), (knobs.GPU_LOCKED_CLOCKS, (990, 1980)),
           (knobs.MEM_LOCKED_CLOCKS, (3201, 3201)), (knobs.PERSISTENCE_MODE, True))


class Restores:
    def __init__(self) -> None:
        self.count = 0
        self.last_s = 0.0
        self.cond = threading.Condition()

    def __call__(self, event) -> None:
        if event.kind == "restored":
            with self.cond:
                self.count += 1
                self.last_s = time.monotonic()
                self.cond.notify_all()


def one_round(book, gpu_knobs, restores, changes) -> float:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        for knob, value in changes:
            with book.change(pin_pid(os.getuid(), child.pid, process_start_ticks(child.pid)),
                             0, knob, value):
                gpu_knobs.apply(0, knob, value)
        with restores.cond:
            target = restores.count + len(changes)
            killed_s = time.monotonic()
            os.kill(child.pid, signal.SIGKILL)
            if not restores.cond.wait_for(lambda: restores.count >= target, 30):
                raise SystemExit("no restore within 30 s")
            return restores.last_s - killed_s
    finally:
        child.kill()
        child.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--knobs", type=int, default=2, choices=range(1, 5))
    args = parser.parse_args(argv)
    gpus = SimulatedBackend.from_spec("h200").devices()
    before = gpus[0].state()
    gpu_knobs, restores = GpuKnobs(gpus), Restores()
    with tempfile.TemporaryDirectory() as tmp:
        book = LeaseBook(os.path.join(tmp, "leases"), gpu_knobs, restores)
        book.start()
        delays_ms = [1000 * one_round(book, gpu_knobs, restores, CHANGES[: args.knobs])
                     for _ in range(args.kills)]
        book.stop(keep_leases=False)
    assert gpus[0].state() == before, "a restore was not exact"
    q = statistics.quantiles(delays_ms, n=10)
    print(f"{args.kills} SIGKILLs, {args.knobs} knob(s) each, on {os.uname().release}: "
          f"kill -> last restore p50 {statistics.median(delays_ms):.2f} ms, "
          f"p90 {q[8]:.2f} ms, max {max(delays_ms):.2f} ms; every value exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
