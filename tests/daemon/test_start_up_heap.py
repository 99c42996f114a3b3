"""What start-up built is left out of later garbage collections: the oldest generation's
collection then walks only what serving created, not every module, rule and device object
(a pause of about 10 ms per collection on the daemon otherwise, README Performance)."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import time

import pytest

from tests.support.daemon import env_with_repo, wait_serving, write_policy
from zeusd import daemon


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_start_up_objects_leave_the_collected_generations(unfrozen):
    built_at_start_up = [{"rule": i} for i in range(1000)]  # containers the GC tracks
    assert gc.get_freeze_count() == 0
    daemon.freeze_start_up_objects()
    frozen = gc.get_freeze_count()
    assert frozen >= len(built_at_start_up)
    made_while_serving = [[i] for i in range(10)]
    assert gc.get_freeze_count() == frozen  # later objects are collected as usual
    del made_while_serving


# The real daemon, run by its own entry point; SIGUSR2 (which zeusd leaves alone) makes the
# process write how many objects are frozen and how many the collected generations hold.
OBSERVED_DAEMON = """
import gc, signal, sys
from zeusd.cli import main

def report(signum, frame):
    with open(sys.argv[1], "w") as out:
        out.write(f"{gc.get_freeze_count()} {sum(gc.get_count())}")

signal.signal(signal.SIGUSR2, report)
sys.exit(main(sys.argv[2:]))
"""


def test_the_serving_daemon_has_frozen_what_start_up_built(tmp_path):
    socket_path = str(tmp_path / "zeusd.sock")
    report = tmp_path / "gc.txt"
    policy = write_policy(tmp_path / "policy.toml", '[defaults]\noperations = ["gpu-read"]\n')
    proc = subprocess.Popen(
        [sys.executable, "-c", OBSERVED_DAEMON, str(report), "serve", "--gpu-backend",
         "simulated", "--simulated-gpus", "h200x2", "--socket-path", socket_path,
         "--policy", str(policy)],
        env=env_with_repo(), stderr=subprocess.DEVNULL)
    try:
        wait_serving(socket_path, proc)  # answered: the event loop runs
        proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not report.exists() or not report.read_text():
            assert time.monotonic() < deadline, "the daemon did not report"
            time.sleep(0.05)
        frozen, _ = map(int, report.read_text().split())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Modules, the policy, the devices and the app: tens of thousands of objects, not a few.
    assert frozen > 10_000
