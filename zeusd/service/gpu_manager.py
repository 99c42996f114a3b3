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
from ..devices.guarded import GuardedDevice
from ..errors import (AggregatedError, GpuBusy, GpuLost, GpuTimedOut, QueueFull, ShuttingDown,
                      ZeusdError, device_error)
from . import deadline

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[GpuDevice], T]


class Pending:
    """One queued command.

    ``done`` is a plain lock held until the command ran: the cheapest hand-off
    CPython has (a Future + Queue costs twice as much). ``claim`` decides, once
    and atomically, whether the worker runs the command or a waiter that gave
    up cancels it: a command that timed out before it started never runs later.
    """

    __slots__ = ("job", "name", "done", "claim", "result", "error", "on_error", "on_drop",
                 "waiting_on", "_freed")

    def __init__(self, job: Job, name: str, on_error=None, on_drop=None) -> None:
        self.job = job
        self.name = name
        self.done = threading.Lock()
        self.done.acquire()
        self.claim = threading.Lock()
        self.result = None
        self.error: BaseException | None = None
        self.on_error = on_error
        self.on_drop = on_drop  # (index, reason): an acknowledged write that will never run
        self.waiting_on: GpuWorker | None = None  # holds a waiting slot there until done
        self._freed = threading.Lock()

    def free_slot(self) -> None:
        """Give the waiting slot back once: when the command finished (the HTTP thread may
        still be collecting other GPUs' answers) or when its waiter gave up."""
        if self.waiting_on is not None and self._freed.acquire(blocking=False):
            self.waiting_on.stop_waiting()


# A GPU whose commands take this long is slow: its waiting requests are capped. NVML
# reads and writes normally return within a few milliseconds.
SLOW_CALL_S = 0.25
EVICT_CHECK_S = 0.1  # how often a waiter checks whether it should make way


class GpuWorker:
    """A bounded FIFO of commands for one GPU and the thread that runs them."""

    def __init__(self, device: GpuDevice, max_queue: int, call_timeout_s: float,
                 max_waiting: int) -> None:
        self.device = device if isinstance(device, GuardedDevice) else GuardedDevice(device)
        self.max_queue = max_queue
        self.call_timeout_s = call_timeout_s
        self.max_waiting = max_waiting
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._count_lock = threading.Lock()
        self._queued = 0
        self._waiting = 0  # HTTP worker threads waiting on this GPU right now
        self.last_call_s = 0.0  # how long the last command took
        self.stopping = False
        self._current_started: float | None = None
        self._current_name = ""
        self._poll_started: float | None = None  # the stream poll now running, if any
        self._poll_name = ""
        self._thread = threading.Thread(
            target=self._run, name=f"zeusd-gpu{device.index}", daemon=True
        )
        self._thread.start()

    def has_room(self) -> bool:
        return self._queued < self.max_queue

    def submit(self, job: Job, name: str, on_error=None, on_drop=None) -> Pending:
        self.refuse_if_unavailable()
        with self._count_lock:
            if self._queued >= self.max_queue:
                raise QueueFull(
                    f"Too many queued commands for GPU {self.device.index}; retry later.")
            self._queued += 1
        pending = Pending(job, name, on_error, on_drop)
        self._queue.put(pending)
        return pending

    def refuse_if_unavailable(self) -> None:
        """GpuLost, ShuttingDown or (hung) GpuTimedOut at once, queueing nothing."""
        if self.stopping:
            raise ShuttingDown("zeusd is shutting down; nothing was queued")
        lost = self.device.lost
        if lost is not None:
            raise GpuLost(f"GPU {self.device.index} is lost ({lost.text} in "
                              f"{lost.function}): it needs a reset or a reboot; the other "
                              "GPUs keep working")
        self.refuse_if_hung()

    def is_slow(self) -> bool:
        """Its last call, or the one running now, took SLOW_CALL_S or more."""
        return max(self.last_call_s, self.stuck_for_s()) >= SLOW_CALL_S

    def start_waiting(self) -> None:
        """Count an HTTP thread that will wait on this GPU; GpuBusy at the cap while the GPU is
        slow, so a slow GPU holds at most ``max_waiting`` of the workers and the others stay
        free. A fast GPU is not capped: its waiters are gone within microseconds, and many
        clients polling one GPU at once must not be refused. A burst that came in before
        the GPU was seen to be slow is thinned by ``evict_if_backed_up``."""
        with self._count_lock:
            if self._waiting >= self.max_waiting and self.is_slow():
                raise self._backed_up(self._waiting)
            self._waiting += 1

    def _backed_up(self, waiting: int) -> GpuBusy:
        return GpuBusy(f"GPU {self.device.index} is backed up: {waiting} requests are "
                               "already waiting for it; retry later.")

    def evict_if_backed_up(self, pending: Pending) -> None:
        """Called by a waiter every EVICT_CHECK_S: over the cap on a slow GPU, a command that
        has not started is cancelled and its request refused (GpuBusy), freeing its worker."""
        with self._count_lock:
            over = self._waiting > self.max_waiting and self.is_slow()
            waiting = self._waiting - 1
        if over and pending.claim.acquire(blocking=False):
            raise self._backed_up(waiting)

    def stop_waiting(self) -> None:
        with self._count_lock:
            self._waiting -= 1

    def backlog(self) -> int:
        return self._queued

    def refuse_if_hung(self) -> None:
        """GpuTimedOut at once, queueing nothing, while a call (a command's or a stream poll's) has
        overrun the limit: waiting behind it would only tie up a thread for another timeout."""
        name, stuck_s = self.longest_call()
        if stuck_s >= self.call_timeout_s:
            raise GpuTimedOut(
                f"GPU {self.device.index} is not responding: NVML call {name} "
                f"has not returned for {stuck_s:.0f} s; nothing was queued")

    def longest_call(self) -> tuple[str, float]:
        """The call in flight on this GPU for the longest: the queue's command or the
        stream poll beside it, with how long it has run (0 when idle)."""
        started = self._poll_started
        poll_s = 0.0 if started is None else time.monotonic() - started
        command_s = self.stuck_for_s()
        return (self._poll_name, poll_s) if poll_s > command_s else (self._current_name,
                                                                      command_s)

    def poll(self, job: Job, name: str):
        """Run a stream's read on the calling thread, beside the queue, never behind it
        (a long queue of writes must not stall the streams). It gets the same protection
        as a queued command: a lost, hung or stopping GPU is not called, an NVML error is
        noted in the GPU's shared health record, and a poll that overruns the call limit
        makes the GPU hung for every request and /discover."""
        self.refuse_if_unavailable()
        self._poll_name = name
        self._poll_started = time.monotonic()
        try:
            return job(self.device)
        finally:
            self._poll_started = None

    def stuck_for_s(self) -> float:
        """How long the call now running has run (0 when idle)."""
        started = self._current_started
        return 0.0 if started is None else time.monotonic() - started

    @property
    def current_call(self) -> str:
        return self._current_name

    def stop(self) -> None:
        self._queue.put(None)

    def drain(self, until: float) -> list[Pending]:
        """Stop taking commands, let the queue run until ``until`` (monotonic), then take
        every command that has not started out of it; returns them (they never run)."""
        self.stopping = True
        # A hung call will not return for the rest: waiting on it would only delay the stop.
        while self._queued and time.monotonic() < until \
                and self.stuck_for_s() < self.call_timeout_s:
            time.sleep(0.02)
        left = []
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return left
            if pending is not None and pending.claim.acquire(blocking=False):
                self._finished()
                left.append(pending)

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
                pending.free_slot()
                continue
            self._current_name = pending.name
            self._current_started = time.monotonic()
            try:
                pending.result = pending.job(self.device)
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiter
                pending.error = exc
            finally:
                self.last_call_s = time.monotonic() - self._current_started
                self._current_started = None
                self._finished()
                pending.free_slot()
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
        max_waiting_per_gpu: int = 1024,
    ) -> None:
        self.infos = infos
        self.call_timeout_s = call_timeout_s
        self._workers = [GpuWorker(d, max_queue_per_gpu, call_timeout_s, max_waiting_per_gpu)
                         for d in devices]
        self.deferred_failures = 0
        self._lock = threading.Lock()

    @property
    def indices(self) -> list[int]:
        return [info.index for info in self.infos]

    def has(self, index: int) -> bool:
        return 0 <= index < len(self._workers)

    def submit(self, index: int, job: Job, name: str, on_error=None, on_drop=None) -> Pending:
        return self._workers[index].submit(job, name, on_error, on_drop)

    def poll(self, index: int, job: Job, name: str):
        """A stream poller's read of one GPU: beside its queue, same health record and
        hang detection (see ``GpuWorker.poll``)."""
        return self._workers[index].poll(job, name)

    def health(self) -> dict[int, dict]:
        """Per GPU: {"state": "ok" | "lost" | "reset_required" | "hung", "error"?: text}."""
        out = {}
        for info, worker in zip(self.infos, self._workers):
            state = worker.device.health()
            name, stuck_s = worker.longest_call()
            if state["state"] == "ok" and stuck_s >= self.call_timeout_s:
                state = {"state": "hung", "error": f"NVML call {name} has not "
                                                   f"returned for {stuck_s:.0f} s"}
            out[info.index] = state
        return out

    def queue_stats(self) -> dict[int, tuple[int, float]]:
        """Per GPU: (commands queued, seconds its last command took), for /metrics."""
        return {info.index: (worker.backlog(), worker.last_call_s)
                for info, worker in zip(self.infos, self._workers)}

    def wait(self, index: int, pending: Pending):
        """The command's result; GpuTimedOut if the GPU's current call overran the limit, or the
        request's own deadline passed first."""
        worker = self._workers[index]
        check_at = time.monotonic() + self.call_timeout_s
        while True:
            left_s = deadline.remaining_s()
            if left_s is not None and left_s <= 0:
                return self._past_deadline(index, pending)
            step_s = min(check_at - time.monotonic(), EVICT_CHECK_S,
                         left_s if left_s is not None else EVICT_CHECK_S)
            if pending.done.acquire(timeout=max(step_s, 0.0)):
                if pending.error is not None:
                    raise pending.error
                return pending.result
            worker.evict_if_backed_up(pending)
            if time.monotonic() < check_at:
                continue  # the deadline or the eviction check woke us, not the call limit
            stuck_s = worker.stuck_for_s()
            if stuck_s < self.call_timeout_s:
                # Still making progress (or the call now running is young): wait until
                # that call would overrun, not a whole new period.
                check_at = time.monotonic() + (max(self.call_timeout_s - stuck_s, 0.01)
                                               if stuck_s else self.call_timeout_s)
                continue
            if pending.claim.acquire(blocking=False):  # not started: it never will be
                raise GpuTimedOut(
                    f"GPU {index} did not answer within {self.call_timeout_s:g} s: NVML call "
                    f"{worker.current_call} has not returned; this command was not run")
            if pending.done.acquire(blocking=False):  # finished just now after all
                pending.done.release()
                continue
            raise GpuTimedOut(f"NVML call {pending.name} on GPU {index} did not return "
                                f"within {self.call_timeout_s:g} s")

    def _past_deadline(self, index: int, pending: Pending):
        if pending.claim.acquire(blocking=False):  # not started: it never will be
            raise GpuTimedOut(
                f"GPU {index} did not get to this command within the request time limit "
                f"({self._workers[index].backlog()} commands queued, running "
                f"{self._workers[index].current_call or 'nothing'}); it was not run")
        if pending.done.acquire(blocking=False):
            pending.done.release()
            if pending.error is not None:
                raise pending.error
            return pending.result
        raise GpuTimedOut(f"NVML call {pending.name} on GPU {index} was still running when "
                            "the request time limit ran out")

    def run_all(self, indices: Iterable[int], job: Job, name: str) -> dict[int, object]:
        """Run ``job`` on every listed GPU concurrently; all results or AggregatedError."""
        results, errors = self._run(list(indices), job, name, skip_unavailable=False)
        if errors:
            raise AggregatedError(errors)
        return results

    def run_available(self, indices: Iterable[int], job: Job, name: str
                      ) -> tuple[dict[int, object], dict[int, ZeusdError]]:
        """For reads of all GPUs: the results of the GPUs that answered, and the GPUs left
        out because they cannot answer now (lost, hung, backed up). Any other failure, or
        no GPU answering at all, is an AggregatedError as in ``run_all``."""
        results, errors = self._run(list(indices), job, name, skip_unavailable=True)
        if not results or not all(e.gpu_unavailable for e in errors.values()):
            if errors:
                raise AggregatedError(errors)
        return results, errors

    def _run(self, indices: list[int], job: Job, name: str, skip_unavailable: bool):
        """Check, count as waiting, queue, wait. Without ``skip_unavailable`` a GPU that
        cannot take the command fails the whole request before anything is queued."""
        errors: dict[int, ZeusdError] = {}
        waiting: list[int] = []
        try:
            for i in indices:
                try:
                    self._workers[i].refuse_if_unavailable()
                    if not self._workers[i].has_room():
                        raise QueueFull(
                            f"Too many queued commands for GPU {i}; retry later.")
                    self._workers[i].start_waiting()
                    waiting.append(i)
                except ZeusdError as exc:
                    if not skip_unavailable:
                        raise
                    errors[i] = exc
            return self._queue_and_wait(waiting, job, name, errors), errors
        finally:
            for i in waiting:  # slots not handed to a queued command
                self._workers[i].stop_waiting()

    def _queue_and_wait(self, waiting: list[int], job: Job, name: str,
                        errors: dict[int, ZeusdError]) -> dict[int, object]:
        """Queue on every GPU of ``waiting``, then wait for each in turn. Each queued command
        takes over its GPU's waiting slot and frees it when it finishes, so a request that
        also waits on a slow GPU does not count against the healthy ones meanwhile."""
        pendings = {}
        for i in list(waiting):
            try:
                pending = pendings[i] = self.submit(i, job, name)
            except ZeusdError as exc:  # became unavailable since the check
                errors[i] = exc
                continue
            pending.waiting_on = self._workers[i]
            waiting.remove(i)
        results: dict[int, object] = {}
        for i, pending in pendings.items():
            try:
                results[i] = self.wait(i, pending)
            except BaseException as exc:  # noqa: BLE001 - mapped per GPU
                errors[i] = device_error(exc)
            finally:
                pending.free_slot()  # given up on (timed out): no longer waiting
        return results

    def run_one(self, index: int, job: Job, name: str):
        """Run ``job`` on one GPU and return its result; errors raised as ours."""
        try:
            return self.run_all([index], job, name)[index]
        except AggregatedError as exc:
            raise exc.errors[index] from None

    def submit_all(self, indices: Iterable[int], job: Job, name: str, on_error,
                   on_drop=None) -> None:
        """Queue ``job`` on every GPU and return at once (block=false).

        All queues are checked for room first so a flood gets QueueFull before any is queued.
        A later failure is handed to ``on_error(index, exc)`` and counted."""
        indices = list(indices)
        self._check_room(indices)

        def failed(index: int, exc: BaseException) -> None:
            with self._lock:
                self.deferred_failures += 1
            on_error(index, exc)

        for i in indices:
            self.submit(i, job, name, on_error=failed, on_drop=on_drop)

    def _check_room(self, indices: list[int]) -> None:
        """Refuse before anything is queued when any listed GPU is lost, hung or full."""
        for i in indices:
            self._workers[i].refuse_if_unavailable()
            if not self._workers[i].has_room():
                raise QueueFull(f"Too many queued commands for GPU {i}; retry later.")

    def drain(self, timeout_s: float) -> int:
        """At shutdown: refuse new commands, give queued ones ``timeout_s`` to run, and hand
        each that could not to its ``on_drop`` (the audit). Returns how many were dropped."""
        until = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.stopping = True
        dropped = 0
        for worker in self._workers:
            for pending in worker.drain(until):
                dropped += 1
                pending.error = ShuttingDown("zeusd stopped before this command ran")
                pending.done.release()  # a request still waiting on it gets that answer
                if pending.on_drop is not None:
                    pending.on_drop(worker.device.index, f"zeusd stopped after {timeout_s:g} s "
                                    "of draining, before this command ran")
            if worker.stuck_for_s() > 0:
                log.error("GPU %d: NVML call %s was still running at shutdown; whether it took "
                          "effect is unknown", worker.device.index, worker.current_call)
        if dropped:
            log.error("%d queued command(s) were dropped at shutdown (audited)", dropped)
        return dropped

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
