"""Runs GPU commands: one worker thread per GPU, strictly in arrival order.

Why a thread per GPU: NVML calls block, a hung one must not hold up other GPUs
or other requests, and per-GPU FIFO order is what lets a blocking request act
as a barrier behind earlier non-blocking ones (upstream's behaviour).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterable, TypeVar

from ..devices.base import GpuDevice, GpuInfo
from ..errors import AggregatedError, DeviceTimeout, TooManyRequests, ZeusdError, device_error

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[GpuDevice], T]


class Pending:
    """One queued command.

    ``done`` is a plain lock held until the command ran: the cheapest hand-off
    CPython has (a Future + Queue costs twice as much). ``claim`` decides, once
    and atomically, whether the worker runs the command or a waiter that gave
    up cancels it: a command answered 504 before it started never runs later.
    """

    __slots__ = ("job", "name", "done", "claim", "result", "error", "on_error")

    def __init__(self, job: Job, name: str, on_error=None) -> None:
        self.job = job
        self.name = name
        self.done = threading.Lock()
        self.done.acquire()
        self.claim = threading.Lock()
        self.result = None
        self.error: BaseException | None = None
        self.on_error = on_error


class GpuWorker:
    """A bounded FIFO of commands for one GPU and the thread that runs them."""

    def __init__(self, device: GpuDevice, max_queue: int, call_timeout_s: float) -> None:
        self.device = device
        self.max_queue = max_queue
        self.call_timeout_s = call_timeout_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._count_lock = threading.Lock()
        self._queued = 0
        self._current_started: float | None = None
        self._current_name = ""
        self._thread = threading.Thread(
            target=self._run, name=f"zeusd-gpu{device.index}", daemon=True
        )
        self._thread.start()

    def has_room(self) -> bool:
        return self._queued < self.max_queue

    def submit(self, job: Job, name: str, on_error=None) -> Pending:
        self.refuse_if_hung()
        with self._count_lock:
            if self._queued >= self.max_queue:
                raise TooManyRequests(
                    f"Too many queued commands for GPU {self.device.index}; retry later.")
            self._queued += 1
        pending = Pending(job, name, on_error)
        self._queue.put(pending)
        return pending

    def refuse_if_hung(self) -> None:
        """504 at once, queueing nothing, while a call has overrun the limit: waiting
        behind it would only tie up an HTTP worker thread for another timeout."""
        stuck_s = self.stuck_for_s()
        if stuck_s >= self.call_timeout_s:
            raise DeviceTimeout(
                f"GPU {self.device.index} is not responding: NVML call {self._current_name} "
                f"has not returned for {stuck_s:.0f} s; nothing was queued")

    def stuck_for_s(self) -> float:
        """How long the call now running has run (0 when idle)."""
        started = self._current_started
        return 0.0 if started is None else time.monotonic() - started

    @property
    def current_call(self) -> str:
        return self._current_name

    def stop(self) -> None:
        self._queue.put(None)

    def _finished(self) -> None:
        with self._count_lock:
            self._queued -= 1

    def _run(self) -> None:
        while True:
            pending = self._queue.get()
            if pending is None:
                return
            if not pending.claim.acquire(blocking=False):  # its waiter gave up: skip it
                self._finished()
                continue
            self._current_name = pending.name
            self._current_started = time.monotonic()
            try:
                pending.result = pending.job(self.device)
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiter
                pending.error = exc
            finally:
                self._current_started = None
                self._finished()
            pending.done.release()
            if pending.error is not None and pending.on_error is not None:
                pending.on_error(self.device.index, pending.error)


class GpuManager:
    """All GPUs: static info, workers, and waiting with a per-call time limit."""

    def __init__(
        self,
        devices: list[GpuDevice],
        infos: list[GpuInfo],
        *,
        call_timeout_s: float = 10.0,
        max_queue_per_gpu: int = 1024,
    ) -> None:
        self.infos = infos
        self.call_timeout_s = call_timeout_s
        self._workers = [GpuWorker(d, max_queue_per_gpu, call_timeout_s) for d in devices]
        self.deferred_failures = 0
        self._lock = threading.Lock()

    @property
    def indices(self) -> list[int]:
        return [info.index for info in self.infos]

    def has(self, index: int) -> bool:
        return 0 <= index < len(self._workers)

    def submit(self, index: int, job: Job, name: str, on_error=None) -> Pending:
        return self._workers[index].submit(job, name, on_error)

    def wait(self, index: int, pending: Pending):
        """The command's result; 504 if the GPU's current call overran the limit."""
        worker = self._workers[index]
        wait_s = self.call_timeout_s
        while True:
            if pending.done.acquire(timeout=wait_s):
                if pending.error is not None:
                    raise pending.error
                return pending.result
            stuck_s = worker.stuck_for_s()
            if stuck_s < self.call_timeout_s:
                # Still making progress (or the call now running is young): wait until
                # that call would overrun, not a whole new period.
                wait_s = max(self.call_timeout_s - stuck_s, 0.01) if stuck_s else \
                    self.call_timeout_s
                continue
            if pending.claim.acquire(blocking=False):  # not started: it never will be
                raise DeviceTimeout(
                    f"GPU {index} did not answer within {self.call_timeout_s:g} s: NVML call "
                    f"{worker.current_call} has not returned; this command was not run")
            if pending.done.acquire(blocking=False):  # finished just now after all
                pending.done.release()
                continue
            raise DeviceTimeout(f"NVML call {pending.name} on GPU {index} did not return "
                                f"within {self.call_timeout_s:g} s")

    def run_all(self, indices: Iterable[int], job: Job, name: str) -> dict[int, object]:
        """Run ``job`` on every listed GPU concurrently; all results or AggregatedError."""
        indices = list(indices)
        self._check_room(indices)  # a 429 must not leave the GPUs with room changed
        pendings = {i: self.submit(i, job, name) for i in indices}
        results: dict[int, object] = {}
        errors: dict[int, ZeusdError] = {}
        for i, pending in pendings.items():
            try:
                results[i] = self.wait(i, pending)
            except BaseException as exc:  # noqa: BLE001 - mapped per GPU
                errors[i] = device_error(exc)
        if errors:
            raise AggregatedError(errors)
        return results

    def run_one(self, index: int, job: Job, name: str):
        """Run ``job`` on one GPU and return its result; errors raised as ours."""
        try:
            return self.wait(index, self.submit(index, job, name))
        except ZeusdError:
            raise
        except BaseException as exc:  # noqa: BLE001
            raise device_error(exc) from None

    def submit_all(self, indices: Iterable[int], job: Job, name: str, on_error) -> None:
        """Queue ``job`` on every GPU and return at once (block=false).

        All queues are checked for room first so a flood gets 429 before any is queued.
        A later failure is handed to ``on_error(index, exc)`` and counted."""
        indices = list(indices)
        self._check_room(indices)

        def failed(index: int, exc: BaseException) -> None:
            with self._lock:
                self.deferred_failures += 1
            on_error(index, exc)

        for i in indices:
            self.submit(i, job, name, on_error=failed)

    def _check_room(self, indices: list[int]) -> None:
        """504/429 before anything is queued when any listed GPU is hung or full."""
        for i in indices:
            self._workers[i].refuse_if_hung()
            if not self._workers[i].has_room():
                raise TooManyRequests(f"Too many queued commands for GPU {i}; retry later.")

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
