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
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Iterable, TypeVar

from ..devices.base import GpuDevice, GpuInfo
from ..errors import AggregatedError, DeviceTimeout, TooManyRequests, ZeusdError, device_error

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[GpuDevice], T]


class GpuWorker:
    """A bounded FIFO of jobs for one GPU and the thread that runs them."""

    def __init__(self, device: GpuDevice, max_queue: int) -> None:
        self.device = device
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._current_started: float | None = None
        self._current_name = ""
        self._thread = threading.Thread(
            target=self._run, name=f"zeusd-gpu{device.index}", daemon=True
        )
        self._thread.start()

    def submit(self, job: Job, name: str) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait((job, name, future))
        except queue.Full:
            raise TooManyRequests(
                f"Too many queued commands for GPU {self.device.index}; retry later."
            ) from None
        return future

    def stuck_for_s(self) -> float:
        """How long the call now running has run (0 when idle)."""
        started = self._current_started
        return 0.0 if started is None else time.monotonic() - started

    @property
    def current_call(self) -> str:
        return self._current_name

    def stop(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the thread is a daemon thread; it dies with the process

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, name, future = item
            if not future.set_running_or_notify_cancel():
                continue
            self._current_name = name
            self._current_started = time.monotonic()
            try:
                result = job(self.device)
            except BaseException as exc:  # noqa: BLE001 - delivered to the waiter
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                self._current_started = None


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
        self._workers = [GpuWorker(d, max_queue_per_gpu) for d in devices]
        self.deferred_failures = 0
        self._lock = threading.Lock()

    @property
    def indices(self) -> list[int]:
        return [info.index for info in self.infos]

    def has(self, index: int) -> bool:
        return 0 <= index < len(self._workers)

    def submit(self, index: int, job: Job, name: str) -> Future:
        return self._workers[index].submit(job, name)

    def wait(self, index: int, future: Future):
        """The job's result; 504 if the GPU's current call overran the limit."""
        worker = self._workers[index]
        while True:
            try:
                return future.result(timeout=self.call_timeout_s)
            except FutureTimeout:
                if worker.stuck_for_s() >= self.call_timeout_s:
                    raise DeviceTimeout(
                        f"NVML call {worker.current_call} on GPU {index} did not return "
                        f"within {self.call_timeout_s:g} s"
                    ) from None
                # Still making progress through earlier queued commands: keep waiting.

    def run_all(self, indices: Iterable[int], job: Job, name: str) -> dict[int, object]:
        """Run ``job`` on every listed GPU concurrently; all results or AggregatedError."""
        futures = {i: self.submit(i, job, name) for i in indices}
        results: dict[int, object] = {}
        errors: dict[int, ZeusdError] = {}
        for i, future in futures.items():
            try:
                results[i] = self.wait(i, future)
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
        for i in indices:
            if self._workers[i]._queue.full():
                raise TooManyRequests(f"Too many queued commands for GPU {i}; retry later.")
        for i in indices:
            future = self.submit(i, job, name)
            future.add_done_callback(lambda f, i=i: self._deferred_done(i, f, on_error))

    def _deferred_done(self, index: int, future: Future, on_error) -> None:
        exc = future.exception()
        if exc is None:
            return
        with self._lock:
            self.deferred_failures += 1
        on_error(index, exc)

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
