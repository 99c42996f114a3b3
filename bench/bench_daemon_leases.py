"""How soon the real daemon restores a SIGKILLed client's changes (daemon level).

Usage (as root, for the unprivileged client): python bench/bench_daemon_leases.py [--kills 100]

A real `zeusd serve` on a simulated H200 with a lease directory and a policy that lets group
members change GPU 0. Each round, a client process running as a fresh unprivileged user in that
group sets the power limit and locked GPU clocks over the Unix socket (a new connection per
request, as zeus 0.16 does), then is SIGKILLed. The delay is from just before kill(2) to the
simulated GPU's journal entry of the last restore (the journal stamps each applied setting with
time.time()): the pidfd wakes the watcher thread, which reads the knob through the GPU's queue,
writes the capture back and removes the fsync'd lease file. Prints p50/p90/max in ms and checks
every value came back exactly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.leases.daemon_world import (POLICY, Job, LeaseDaemon, set_gpu_clocks,  # noqa: E402
                                       set_power)
from tests.support.sim import RESET_GPU_CLOCKS, SET_POWER  # noqa: E402
from tests.support.users import Accounts  # noqa: E402

DEFAULT_MW = 700_000
WAIT_S = 30.0


def restored_at(zd: LeaseDaemon, mark: int) -> float:
    """time.time() of the later of the two restores journalled after ``mark``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        entries = zd.gpus.entries()[mark:]
        power = [e for e in entries if e["call"] == SET_POWER and e["args"] == [DEFAULT_MW]]
        clocks = [e for e in entries if e["call"] == RESET_GPU_CLOCKS]
        if power and clocks:
            return max(power[0]["t"], clocks[0]["t"])
        if time.monotonic() > deadline:
            raise SystemExit(f"not restored within {WAIT_S} s: {entries}")
        time.sleep(0.005)


def one_round(zd: LeaseDaemon, user) -> float:
    job = Job(user, zd.socket_path, [set_power(0, 300), set_gpu_clocks(0, 900, 1500)])
    if [status for status, _ in job.replies] != [200, 200]:
        raise SystemExit(f"the client's changes were refused: {job.replies}")
    mark = zd.gpus.mark()
    killed_at = time.time()
    job.kill()
    delay_s = restored_at(zd, mark) - killed_at
    if zd.power_limit_mw(0) != DEFAULT_MW or zd.leases():
        raise SystemExit("a value did not come back exactly")
    return delay_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the client runs as a fresh unprivileged user")
    with Accounts() as made:
        group = made.group("bench")
        user = made.user("u", supplementary=(group,))
        zd = LeaseDaemon(POLICY.format(group=group.name, extra=""), gpus=1)
        try:
            delays_ms = sorted(one_round(zd, user) * 1000 for _ in range(args.kills))
        finally:
            zd.stop()
    p90 = delays_ms[int(0.9 * (len(delays_ms) - 1))]
    print(f"daemon-level restore after SIGKILL, {args.kills} kills (power limit + GPU clocks, "
          f"simulated H200): p50 {statistics.median(delays_ms):.1f} ms, p90 {p90:.1f} ms, "
          f"max {delays_ms[-1]:.1f} ms, min {delays_ms[0]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
