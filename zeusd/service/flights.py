"""Measurement reads of one GPU, beside its command queue, one driver call at a time per kind.

Why beside the queue: power and energy are measurements, not settings; a queue of writes
must not delay them (a monitor sampling power every 100 ms would otherwise see gaps).
Why single flight: the driver serialises some reads (``nvmlDeviceGetTotalEnergyConsumption``
takes ~4 ms on an H200 and a second caller waits for the first), so two requests that ask
for the same reading while one call is running get that call's answer instead of queueing
a second call: the answer is at most one call's duration old, which is also what the second
call would have waited.

A flight is run by one thread (the request that started it, for a read of one GPU within
the inline budget, or else the GPU's reader thread); everyone else waits on it with a
bounded wait, so a hung read ties up at most that one thread and every waiter gets its 504
when the call limit passes. The request running a hung read itself is answered when the
call returns, as a command run inline (see ``gpu_manager``).
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from typing import Callable

_LAST_READER_JOB = None  # puts the reader thread to rest (GpuManager.close)


class Flight:
    """One driver read in progress, and its answer once ``done`` is set."""

    __slots__ = ("name", "done", "result", "error", "created", "started", "joined")

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.created = time.monotonic()
        self.started: float | None = None
        self.joined = 0  # readers that share it besides the one that started it

    def answer(self):
        """The result, or a copy of the error (the same exception object must not be raised
        in several threads at once: each raise rewrites its traceback)."""
        if self.error is not None:
            raise copy.copy(self.error)
        return self.result


class ReadFlights:
    """The reads in flight on one GPU, at most one per name, and the thread that runs
    the flights no request runs itself (reads of several GPUs at once)."""

    def __init__(self, device, on_done: Callable[[float], None]) -> None:
        self.device = device
        self._on_done = on_done  # (seconds the call took): the GPU's slowness record
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self._reader: queue.SimpleQueue | None = None

    def join_or_lead(self, name: str) -> tuple[Flight, bool]:
        """The flight of ``name`` in progress, or a new one the caller must run (True)."""
        with self._lock:
            flight = self._flights.get(name)
            if flight is not None:
                flight.joined += 1
                return flight, False
            flight = self._flights[name] = Flight(name)
            return flight, True

    def current(self, name: str) -> Flight | None:
        """The flight of ``name`` in progress, if any."""
        with self._lock:
            return self._flights.get(name)

    def fly(self, flight: Flight, job) -> None:
        """Run the flight's call on this thread and answer everyone waiting on it."""
        flight.started = time.monotonic()
        try:
            flight.result = job(self.device)
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiter
            flight.error = exc
        finally:
            with self._lock:
                if self._flights.get(flight.name) is flight:
                    del self._flights[flight.name]
            self._on_done(time.monotonic() - flight.started)
            flight.done.set()

    def send(self, flight: Flight, job) -> None:
        """Have the GPU's reader thread run the flight (started on first use)."""
        with self._lock:
            if self._reader is None:
                self._reader = queue.SimpleQueue()
                threading.Thread(target=self._read, args=(self._reader,), daemon=True,
                                 name=f"zeusd-gpu{self.device.index}-reads").start()
        self._reader.put((flight, job))

    def _read(self, jobs: queue.SimpleQueue) -> None:
        while True:
            item = jobs.get()
            if item is _LAST_READER_JOB:
                return
            self.fly(*item)

    def longest(self) -> tuple[str, float]:
        """The read running for the longest, with how long (0 when none runs)."""
        if not self._flights:  # the common case, on every request: no lock, no list
            return "", 0.0
        now = time.monotonic()
        with self._lock:
            running = [(now - f.started, f.name) for f in self._flights.values()
                       if f.started is not None]
        if not running:
            return "", 0.0
        seconds, name = max(running)
        return name, seconds

    def close(self) -> None:
        if self._reader is not None:
            self._reader.put(_LAST_READER_JOB)
