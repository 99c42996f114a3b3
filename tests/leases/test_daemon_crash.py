"""A real crash: the book lives in another process that is SIGKILLed mid-flight; a new book
in this process, on the same directory and the same (file-backed) knobs, takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from zeusd.leases import events as ev

from .support import POWER, Events, new_book

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The "daemon": a book whose knobs are a JSON file; it leases power_limit of GPU 0 for the
# given owner, writes 300 W, says "ready" and waits to be killed. No stop() ever runs.
_DAEMON = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from zeusd.leases import LeaseBook
from zeusd.leases.owner import pin_pid
from tests.leases.test_daemon_crash import FileKnobs
knobs = FileKnobs(sys.argv[3])
book = LeaseBook(sys.argv[2], knobs, lambda event: None)
book.start()
pid, ticks = int(sys.argv[4]), int(sys.argv[5])
with book.change(pin_pid(os.getuid(), pid, ticks), 0, "power_limit", 300000):
    knobs.apply(0, "power_limit", 300000)
print("ready", flush=True)
time.sleep(600)
"""


class FileKnobs:
    """The power limit of GPU 0 in a JSON file, so two processes see one "hardware"."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def read(self, gpu_index: int, knob: str) -> object:
        with open(self.path) as f:
            return json.load(f)[f"{gpu_index}/{knob}"]

    def apply(self, gpu_index: int, knob: str, value: object) -> None:
        with open(self.path) as f:
            data = json.load(f)
        data[f"{gpu_index}/{knob}"] = value
        with open(self.path, "w") as f:
            json.dump(data, f)


@pytest.fixture
def crashed(tmp_path, lease_dir, children):
    """(owner, knobs) after a daemon process holding the owner's lease was SIGKILLed."""
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps({f"0/{POWER}": 700_000}))
    owner = children()
    daemon = subprocess.Popen([sys.executable, "-c", _DAEMON, REPO, str(lease_dir), str(hw),
                               str(owner.pid), str(owner.start_ticks)],
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout.readline() == "ready\n"
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    daemon.stdout.close()
    knobs = FileKnobs(hw)
    assert knobs.read(0, POWER) == 300_000
    return owner, knobs


def test_living_owner_is_adopted_and_its_exit_restores(crashed, lease_dir):
    owner, knobs = crashed
    events = Events()
    book = new_book(lease_dir, knobs, events)
    try:
        assert events.kinds() == [ev.ADOPTED] and events.all[0].holder.pid == owner.pid
        owner.kill()
        events.wait(ev.RESTORED)
        assert knobs.read(0, POWER) == 700_000 and os.listdir(lease_dir) == []
    finally:
        book.stop(keep_leases=True)


def test_owner_dead_while_down_is_restored_at_start(crashed, lease_dir):
    owner, knobs = crashed
    owner.kill()
    events = Events()
    book = new_book(lease_dir, knobs, events)
    try:
        assert events.kinds() == [ev.RESTORED_AT_START]
        assert knobs.read(0, POWER) == 700_000 and not book.has_leases()
    finally:
        book.stop(keep_leases=True)
