"""Runs GPU commands: per GPU one at a time, strictly in arrival order.

Why a thread per GPU: NVML calls block, a hung one must not hold up other GPUs
or other requests, and per-GPU FIFO order is what lets a blocking request act
as a barrier behind earlier non-blocking ones (upstream's behaviour).

The inline path: handing a command to the GPU's thread and back costs two thread
wake-ups (tens of µs, more than the daemon's own work per request), so a blocking
request for ONE GPU whose queue is empty, and that no other request waits for, runs its
command on its own thread (under load the GPU's thread runs the backlog). Order is
kept by one run lock per GPU that the GPU's thread also takes for each command, taken
inline only while nothing is queued or running. The trade, decided: a request whose
own inline call hangs cannot be answered 504 (a thread inside a driver call cannot be
cancelled or made to answer), so its client waits until the call returns and then gets
the call's real outcome. Right because a hung driver call leaves that GPU unusable
whatever we answer, while the hand-off cost every request on every GPU. Everything
else is kept: a command queued behind it that waits
past the call limit is answered 504 and never runs later; once the call has overrun the
limit every request for the GPU is answered 504 at once; a GPU that was slow
(``SLOW_CALL_S``) or is busy gets no inline calls; a request for several GPUs (a read of
all GPUs must skip a hung one) never runs inline; and at most ``max_inline_calls`` HTTP
threads are inside driver calls at once, so a driver hanging on every GPU can take no
more workers than that from the server. A non-blocking write to one idle GPU takes the
GPU the same way when it is accepted and runs on the request's thread just after the
answer is sent (the transport's ``after_response``); otherwise it is queued.

Measurement reads (power, energy) do not queue at all: see ``flights``.
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
from .flights import Flight, ReadFlights

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


class InlineBudget:
    """How many HTTP threads may be inside driver calls at once (inline commands and
    reads), across all GPUs: what a driver hanging everywhere can take from the server."""

    def __init__(self, calls: int) -> None:
        self._left = calls
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give(self) -> None:
        with self._lock:
            self._left += 1


class GpuWorker:
    """A bounded FIFO of commands for one GPU and the thread that runs them."""

    def __init__(self, device: GpuDevice, max_queue: int, call_timeout_s: float,
                 max_waiting: int, budget: InlineBudget | None = None) -> None:
        self.device = device if isinstance(device, GuardedDevice) else GuardedDevice(device)
        self.max_queue = max_queue
        self.call_timeout_s = call_timeout_s
        self.max_waiting = max_waiting
        self.budget = budget or InlineBudget(0)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._count_lock = threading.Lock()
        self._run_lock = threading.Lock()  # held by whoever runs a command: thread or inline
        self._next: Pending | None = None  # taken off the queue, waiting for the run lock
        self._queued = 0  # queued or running, inline ones included
        self._waiting = 0  # HTTP worker threads waiting on this GPU right now
        self.last_call_s = 0.0  # how long the last command took
        self.stopping = False
        self._current_started: float | None = None
        self._current_name = ""
        self.flights = ReadFlights(self.device, self._read_took)
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
        """The call in flight on this GPU for the longest: the queue's command or a read
        beside it, with how long it has run (0 when idle)."""
        read_name, read_s = self.flights.longest()
        command_s = self.stuck_for_s()
        return (read_name, read_s) if read_s > command_s else (self._current_name, command_s)

    def _read_took(self, seconds: float) -> None:
        """A read beside the queue counts for slowness like a command."""
        self.last_call_s = seconds

    def poll(self, job: Job, name: str):
        """Run a stream's read on the calling thread (the poller's own), beside the queue,
        never behind it (a long queue of writes must not stall the streams). It gets the
        same protection as a request's read: a lost, hung or stopping GPU is not called, an
        NVML error is noted in the GPU's shared health record, and a poll that overruns the
        call limit makes the GPU hung for every request and /discover."""
        self.refuse_if_unavailable()
        flight, lead = self.flights.join_or_lead(name)
        if lead:
            self.flights.fly(flight, job)
        return self.wait_flight(flight)

    def wait_flight(self, flight: Flight):
        """A read's answer; GpuTimedOut once it has run (or waited to start) past the call
        limit, or when the request's own deadline passes first."""
        while not flight.done.is_set():
            left_s = deadline.remaining_s()
            base = flight.started or flight.created
            limit_s = base + self.call_timeout_s - time.monotonic()
            step_s = limit_s if left_s is None else min(limit_s, left_s)
            if step_s > 0 and flight.done.wait(step_s):
                break
            if left_s is not None and left_s <= step_s:
                raise GpuTimedOut(f"NVML call {flight.name} on GPU {self.device.index} was "
                                  "still running when the request time limit ran out")
            if flight.started is None and limit_s <= 0:
                name, _ = self.longest_call()
                raise GpuTimedOut(
                    f"GPU {self.device.index} did not answer within {self.call_timeout_s:g} s: "
                    f"NVML call {name} has not returned; this read did not start")
            if flight.started is not None and time.monotonic() - flight.started \
                    >= self.call_timeout_s:
                raise GpuTimedOut(f"NVML call {flight.name} on GPU {self.device.index} did "
                                  f"not return within {self.call_timeout_s:g} s")
        return flight.answer()

    def try_inline(self, waiting_self: int = 1) -> bool:
        """Take the GPU for a command run on the caller's thread: only while nothing is
        queued or running, no other request waits for the GPU (under load the GPU's thread
        runs a backlog back to back, cheaper than threads taking turns), the GPU was not
        slow, and the inline budget allows. ``waiting_self``: 1 when the caller is itself
        counted as waiting (``start_waiting``). On True the caller must ``run_inline``
        (which gives everything back)."""
        with self._count_lock:
            if self._queued or self._waiting > waiting_self or self.stopping \
                    or self.is_slow() or not self._run_lock.acquire(blocking=False):
                return False
            if not self.budget.take():
                self._run_lock.release()
                return False
            self._queued += 1
        return True

    def take_idle(self) -> bool:
        """``try_inline`` for a request not yet counted as waiting, in one pass: True only
        when the GPU is healthy and idle (not stopping, lost, hung or slow; nothing queued,
        running or waiting). Otherwise False, and the general path decides and words any
        refusal. On True the caller must ``run_inline``."""
        if self.stopping or self.device.lost is not None:
            return False
        if self.flights.longest()[1] >= self.call_timeout_s:
            return False  # a read beside the queue hangs: the general path answers 504
        return self.try_inline(waiting_self=0)

    def run_inline(self, job: Job, name: str):
        """Run a command taken with ``try_inline`` on this thread; its error is raised."""
        self._current_name = name
        self._current_started = time.monotonic()
        try:
            return job(self.device)
        finally:
            self._end_call()
            self.budget.give()

    def stuck_for_s(self) -> float:
        """How long the call now running has run (0 when idle)."""
        started = self._current_started
        return 0.0 if started is None else time.monotonic() - started

    @property
    def current_call(self) -> str:
        return self._current_name

    def stop(self) -> None:
        self._queue.put(None)
        self.flights.close()

    def drain(self, until: float) -> list[Pending]:
        """Stop taking commands, let the queue run until ``until`` (monotonic), then take
        every command that has not started out of it; returns them (they never run)."""
        self.stopping = True
        # A hung call will not return for the rest: waiting on it would only delay the stop.
        while self._queued and time.monotonic() < until \
                and self.stuck_for_s() < self.call_timeout_s:
            time.sleep(0.02)
        left = []
        waiting_to_run = self._next  # behind a call that will not return in time
        if waiting_to_run is not None and waiting_to_run.claim.acquire(blocking=False):
            left.append(waiting_to_run)  # the thread counts it off when it gets the lock
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

    def _end_call(self) -> None:
        """After a command (queued or inline): note its time, give the GPU back."""
        self.last_call_s = time.monotonic() - self._current_started
        self._current_started = None
        self._finished()
        self._run_lock.release()

    def _run(self) -> None:
        while True:
            pending = self._queue.get()
            if pending is None:
                return
            # The run lock before the claim: while an inline call runs, a waiter that
            # gives up can still cancel this command, so a 504 never runs later.
            self._next = pending
            self._run_lock.acquire()
            self._next = None
            if not pending.claim.acquire(blocking=False):  # its waiter gave up: skip it
                self._finished()
                self._run_lock.release()
                pending.free_slot()
                continue
            self._current_name = pending.name
            self._current_started = time.monotonic()
            try:
                pending.result = pending.job(self.device)
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiter
                pending.error = exc
            finally:
                self._end_call()
                pending.free_slot()
            pending.done.release()
            if pending.error is not None and pending.on_error is not None:
                pending.on_error(self.device.index, pending.error)


def _run_taken(worker: GpuWorker, job: Job, name: str, on_error) -> None:
    """A non-blocking command whose GPU was taken (``take_idle``) when it was accepted."""
    try:
        worker.run_inline(job, name)
    except BaseException as exc:  # noqa: BLE001 - nobody waits for it: report, as queued
        if on_error is not None:
            on_error(worker.device.index, exc)


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
        max_inline_calls: int = 2,
    ) -> None:
        self.infos = infos
        self.call_timeout_s = call_timeout_s
        budget = InlineBudget(max_inline_calls)
        self._workers = [GpuWorker(d, max_queue_per_gpu, call_timeout_s, max_waiting_per_gpu,
                                   budget) for d in devices]

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

    def read_all(self, indices: Iterable[int], job: Job, name: str) -> dict[int, object]:
        """A measurement read of every listed GPU, beside the queues and single flight:
        ``name`` identifies the reading, so ``job`` must be the same for the same name."""
        results, errors = self._run(list(indices), job, name, skip_unavailable=False,
                                    beside=True)
        if errors:
            raise AggregatedError(errors)
        return results

    def read_available(self, indices: Iterable[int], job: Job, name: str
                       ) -> tuple[dict[int, object], dict[int, ZeusdError]]:
        """``read_all`` that leaves out the GPUs that cannot answer now, as
        ``run_available`` does."""
        results, errors = self._run(list(indices), job, name, skip_unavailable=True,
                                    beside=True)
        if not results or not all(e.gpu_unavailable for e in errors.values()):
            if errors:
                raise AggregatedError(errors)
        return results, errors

    def _run(self, indices: list[int], job: Job, name: str, skip_unavailable: bool,
             beside: bool = False):
        """Check, count as waiting, run: a command inline or queued, a read in a flight.
        Without ``skip_unavailable`` a GPU that cannot take it fails the whole request
        before anything is queued."""
        if len(indices) == 1 and not beside and self._may_inline():
            worker = self._workers[indices[0]]
            if worker.take_idle():  # the common case, in the fewest steps
                try:
                    return {indices[0]: worker.run_inline(job, name)}, {}
                except BaseException as exc:  # noqa: BLE001 - mapped per GPU
                    return {}, {indices[0]: device_error(exc)}
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
            if beside:
                return self._fly_and_wait(waiting, job, name, errors), errors
            if len(waiting) == 1 and len(indices) == 1 and self._may_inline():
                results = self._inline(waiting[0], job, name, errors)
                if results is not None:
                    return results, errors
            return self._queue_and_wait(waiting, job, name, errors), errors
        finally:
            for i in waiting:  # slots not handed to a queued command
                self._workers[i].stop_waiting()

    @staticmethod
    def _may_inline() -> bool:
        """A request past its deadline goes the queued way, which refuses it properly."""
        left_s = deadline.remaining_s()
        return left_s is None or left_s > 0

    def _inline(self, index: int, job: Job, name: str, errors: dict[int, ZeusdError]
                ) -> dict[int, object] | None:
        """The command run on this thread, or None when the GPU cannot be taken now."""
        worker = self._workers[index]
        if not worker.try_inline():
            return None
        try:
            return {index: worker.run_inline(job, name)}
        except BaseException as exc:  # noqa: BLE001 - mapped per GPU as a queued one is
            errors[index] = device_error(exc)
            return {}

    def _fly_and_wait(self, waiting: list[int], job: Job, name: str,
                      errors: dict[int, ZeusdError]) -> dict[int, object]:
        """Join each GPU's flight of ``name`` or start one: run on this thread for a
        one-GPU read within the inline budget, else by the GPU's reader thread (a read of
        several GPUs runs them in parallel, and a hung one must not stop the others)."""
        flights = {}
        for i in waiting:
            worker = self._workers[i]
            flight, lead = worker.flights.join_or_lead(name)
            flights[i] = flight
            if not lead:
                continue
            if len(waiting) == 1 and worker.budget.take():
                try:
                    worker.flights.fly(flight, job)
                finally:
                    worker.budget.give()
            else:
                worker.flights.send(flight, job)
        results: dict[int, object] = {}
        for i, flight in flights.items():
            try:
                results[i] = self._workers[i].wait_flight(flight)
            except BaseException as exc:  # noqa: BLE001 - mapped per GPU
                errors[i] = device_error(exc)
        return results

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
                   on_drop=None, after_response=None) -> None:
        """Queue ``job`` on every GPU and return at once (block=false).

        All queues are checked for room first so a flood gets QueueFull before any is queued.
        A later failure is handed to ``on_error(index, exc)``.

        With ``after_response`` (the transport's), a write to ONE idle GPU is not handed to
        the GPU's thread: the GPU is taken now, as for an inline command (so anything that
        arrives later queues behind it: FIFO), and the job is given to ``after_response``,
        which runs it on the request's own thread right after the answer is on its way."""
        indices = list(indices)
        self._check_room(indices)
        if after_response is not None and len(indices) == 1:
            worker = self._workers[indices[0]]
            if worker.take_idle():
                after_response(lambda: _run_taken(worker, job, name, on_error))
                return
        for i in indices:
            self.submit(i, job, name, on_error=on_error, on_drop=on_drop)

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
