"""Fakes and real processes for the lease tests: a dict-backed knob store, an event
recorder that can wait for an event, and children to pin, SIGKILL and reap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from zeusd.leases import knobs
from zeusd.leases.book import LeaseBook
from zeusd.leases.device import NO_READING
from zeusd.leases.owner import pin_pid
from zeusd.transport.peercred import process_start_ticks

# A child's script: connect to the Unix socket named by argv[1], then wait to be killed.
CONNECT_AND_SLEEP = ("import socket, sys, time; s = socket.socket(socket.AF_UNIX); "
                     "s.connect(sys.argv[1]); time.sleep(600)")
WAIT_S = 30.0  # a bound on waiting for the watcher thread, never a speed claim
POWER, GPU_CLOCKS, MEM_CLOCKS, PERSISTENCE = (knobs.POWER_LIMIT, knobs.GPU_LOCKED_CLOCKS,
                                              knobs.MEM_LOCKED_CLOCKS, knobs.PERSISTENCE_MODE)


class FakeKnobs:
    """Knob values per (GPU, knob). Like NVML, locked clocks can be set but not read.
    ``applied`` lists every write the book made; ``hw`` is the "hardware"."""

    def __init__(self, gpus: int = 2) -> None:
        self.hw = {}
        for gpu in range(gpus):
            self.hw.update({(gpu, POWER): 700_000, (gpu, PERSISTENCE): False,
                            (gpu, GPU_CLOCKS): None, (gpu, MEM_CLOCKS): None})
        self.applied: list[tuple[int, str, object]] = []
        self.fail_apply: Exception | None = None
        self.on_apply = None  # a hook run before each write (to look at the lease files then)

    def read(self, gpu_index: int, knob: str) -> object:
        return NO_READING if knob in knobs.CLOCK_KNOBS else self.hw[(gpu_index, knob)]

    def apply(self, gpu_index: int, knob: str, value: object) -> None:
        if self.on_apply is not None:
            self.on_apply(gpu_index, knob, value)
        if self.fail_apply is not None:
            raise self.fail_apply
        self.applied.append((gpu_index, knob, value))
        self.hw[(gpu_index, knob)] = value


class Events:
    """Collects LeaseEvents; ``wait(kind)`` blocks until one of that kind has arrived."""

    def __init__(self) -> None:
        self.all = []
        self._cond = threading.Condition()

    def __call__(self, event) -> None:
        with self._cond:
            self.all.append(event)
            self._cond.notify_all()

    def kinds(self) -> list[str]:
        with self._cond:
            return [e.kind for e in self.all]

    def wait(self, kind: str, count: int = 1):
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.of(kind)) >= count, WAIT_S)
        assert ok, f"no {kind} event within {WAIT_S} s; got {self.kinds()}"
        return self.of(kind)[count - 1]

    def of(self, kind: str) -> list:
        return [e for e in self.all if e.kind == kind]


class Child:
    """A real process that sleeps until killed."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *argv])
        self.pid = self.proc.pid
        self.start_ticks = _wait_start_ticks(self.pid)
        # Popen returns while execve may still be building the new image (cmdline empty then);
        # a real client has long finished exec by the time it connects.
        wait_until(lambda: b"time.sleep" in _cmdline(self.pid))

    def pin(self):
        return pin_pid(os.getuid(), self.pid, self.start_ticks)

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start_ticks)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _wait_start_ticks(pid: int) -> int:
    ticks = process_start_ticks(pid)
    assert ticks is not None
    return ticks


def new_book(directory, device, events, **kwargs) -> LeaseBook:
    book = LeaseBook(str(directory), device, events, **kwargs)
    book.start()
    return book


def write(book, device, pinned, gpu: int, knob: str, value, **policy):
    """What the GPU write path does: record the lease, write the hardware, commit."""
    with book.change(pinned, gpu, knob, value, **policy):
        device.hw[(gpu, knob)] = value


def wait_until(predicate) -> None:
    """Until ``predicate()`` holds, or fail after WAIT_S (a bound, not a speed claim)."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached within %s s" % WAIT_S
        time.sleep(0.005)
