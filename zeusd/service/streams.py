"""Demand-driven power pollers and the subscriptions of the SSE streams.

One poller thread per device (upstream: one task per device, independent of the
GPU command queue). It sleeps while nobody subscribes, ticks at the configured
rate while someone does, and pauses within one period after the last subscriber
leaves. Each subscription keeps only the latest event per device, so a slow
reader skips values instead of queueing them (upstream's ``watch`` channel is
lossy too).

A GPU poller reads through the GPU manager (``GpuManager.poll``): beside the
GPU's command queue, not behind it, so a backlog of writes never stalls a
stream, but with the queue's protection: a lost or hung GPU is not called, and
a poll that hangs marks the GPU hung for requests and /discover too.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..clock import now_ms
from ..errors import Internal, StreamLimit, UnknownDevice, ZeusdError
from ..identity import Caller

log = logging.getLogger(__name__)


class Subscription:
    """What one stream reads: the latest unread event of each device it follows."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[int, dict] = {}
        self.closed = False

    def offer(self, device_index: int, event: dict) -> None:
        with self._cond:
            self._pending[device_index] = event
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, timeout_s: float) -> list[dict]:
        """Events that arrived (waiting up to ``timeout_s``); [] on timeout or once closed."""
        with self._cond:
            if not self._pending and not self.closed:
                self._cond.wait(timeout_s)
            events = list(self._pending.values())
            self._pending.clear()
            return events


class ManagedGpuPower:
    """One GPU's power as its poller reads it: through the GPU manager."""

    def __init__(self, manager, index: int) -> None:
        self.manager = manager
        self.index = index

    def get_power_mw(self) -> int:
        return self.manager.poll(self.index, _read_power_mw, "get_power (stream)")


def _read_power_mw(device) -> int:
    return device.get_power_mw()


class GpuPowerStep:
    """Upstream's GPU poll step: instantaneous power, published only when it changed."""

    def __init__(self, device) -> None:
        self.device = device
        self.index = device.index
        self.last_mw: int | None = None

    def reset(self) -> None:
        self.last_mw = None

    def tick(self) -> dict | None:
        try:
            power_mw = int(self.device.get_power_mw())
        except ZeusdError as exc:
            if not exc.gpu_unavailable:  # lost or hung: said once elsewhere, not every tick
                log.warning("GPU %d: power poll failed: %s", self.index, exc.message)
            return None
        except Exception as exc:  # noqa: BLE001 - NvmlError or worse: warn and skip
            log.warning("GPU %d: power poll failed: %s", self.index, exc)
            return None
        if power_mw == self.last_mw:
            return None
        self.last_mw = power_mw
        return {"timestamp_ms": now_ms(), "gpu_id": self.index, "power_mw": power_mw}


class CpuPowerStep:
    """Upstream's CPU poll step: energy deltas over the NOMINAL period.

    The first tick only takes the baseline (upstream skips the interval's
    immediate first tick); a failed read reuses the previous power.
    """

    def __init__(self, cpu, period_s: float) -> None:
        self.cpu = cpu
        self.index = cpu.index
        self.period_us = max(int(period_s * 1e6), 1)
        self.reset()

    def reset(self) -> None:
        self.base: tuple[int | None, int | None] | None = None
        self.power: tuple[int, int | None] | None = None
        self.published = False

    def _read(self):
        return self.cpu.read_energy_uj(True, self.cpu.dram_available)

    def tick(self) -> dict | None:
        try:
            reading = self._read()
        except Exception as exc:  # noqa: BLE001 - RaplError or OSError from sysfs
            log.warning("CPU %d: energy poll failed: %s", self.index, exc)
            reading = None
        if self.base is None:
            self.base = reading
            return None
        if reading is not None:
            power = (self._mw(self.base[0], reading[0]), self._mw(self.base[1], reading[1]))
            self.base = reading
        elif self.power is None:
            return None
        else:
            power = self.power
        if self.published and power == self.power:
            return None
        self.power, self.published = power, True
        return {"timestamp_ms": now_ms(), "cpu_id": self.index,
                "cpu_mw": power[0], "dram_mw": power[1]}

    def _mw(self, before: int | None, after: int | None) -> int | None:
        if before is None or after is None:
            return None
        return max(after - before, 0) * 1000 // self.period_us


class MonotonicClock:
    """The poller's time: ``now()`` in seconds, and a wait that a stop cuts short.
    Tests pass a clock they advance by hand instead of sleeping."""

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @staticmethod
    def wait(stop: threading.Event, delay_s: float) -> None:
        stop.wait(delay_s)


class Poller:
    """One device's poller thread; ``step`` is a GpuPowerStep or CpuPowerStep."""

    def __init__(self, step, hz: float, name: str, clock=MonotonicClock) -> None:
        self.step = step
        self.index = step.index
        self.period_s = 1.0 / max(hz, 1.0)
        self.clock = clock
        self._cond = threading.Condition()
        self._subscribers: set[Subscription] = set()
        self._latest: dict | None = None
        self._running = False
        self._stop = threading.Event()
        self.ticks = 0  # polls made so far; tests observe laziness through it
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def subscribe(self, sub: Subscription) -> None:
        with self._cond:
            self._subscribers.add(sub)
            if self._running and self._latest is not None:
                sub.offer(self.index, self._latest)  # (ours) the current value at once
            self._cond.notify_all()

    def unsubscribe(self, sub: Subscription) -> None:
        with self._cond:
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        with self._cond:
            return len(self._subscribers)

    @property
    def running(self) -> bool:
        """Polling now (False: parked until someone subscribes)."""
        with self._cond:
            return self._running

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while self._wait_for_subscribers():
            self._poll_while_subscribed()

    def _wait_for_subscribers(self) -> bool:
        with self._cond:
            while not self._subscribers and not self._stop.is_set():
                self._cond.wait()
            if self._stop.is_set():
                return False
            self._running = True
            return True

    def _poll_while_subscribed(self) -> None:
        self.step.reset()
        next_tick = self.clock.now()
        while not self._stop.is_set():
            with self._cond:
                if not self._subscribers:
                    self._running, self._latest = False, None
                    return
            self.ticks += 1
            event = self.step.tick()
            if event is not None:
                self._publish(event)
            next_tick += self.period_s
            delay = next_tick - self.clock.now()
            if delay < 0:  # fell behind: no burst of missed ticks
                next_tick, delay = self.clock.now(), 0.0
            self.clock.wait(self._stop, delay)

    def _publish(self, event: dict) -> None:
        with self._cond:
            self._latest = event
            for sub in self._subscribers:
                sub.offer(self.index, event)


class StreamHub:
    """The pollers of one device kind plus the daemon-wide cap on open streams."""

    def __init__(self, gpu_pollers: dict[int, Poller], cpu_pollers: dict[int, Poller],
                 max_streams: int, keepalive_s: float = 15.0,
                 max_per_caller: int | None = None, gates: dict | None = None) -> None:
        self.pollers = {"gpu": gpu_pollers, "cpu": cpu_pollers}
        self.gates = gates or {}  # kind -> reads.ReadGate; a kind without one is refused
        self.max_streams = max_streams
        self.max_per_caller = max_per_caller or max_streams
        self.keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._open: dict[Subscription, str | None] = {}  # -> the caller key that holds it
        self._closing = False

    def check_ids(self, kind: str, ids: list[int] | None) -> list[int]:
        """The requested ids (all polled ones when None); unknown ones are 400."""
        available = sorted(self.pollers[kind])
        if ids is None:
            return available
        unknown = [i for i in ids if i not in self.pollers[kind]]
        if unknown:
            raise UnknownDevice(f"Unknown {kind.upper()} indices: {unknown}. Available: {available}")
        return ids

    def start(self, caller: Caller, kind: str, requested: list[int] | None
              ) -> tuple[list[int], Subscription]:
        """A stream for ``caller``: the devices it follows (explicit ids must all exist and
        be readable; none: every readable one) and its subscription. Close it after."""
        ids = self.check_ids(kind, requested)
        if ids:
            gate = self.gates.get(kind)
            if gate is None:  # fail closed: no stream without a read-permission check
                raise Internal(f"no read permission check for {kind} streams")
            ids = gate.allowed(caller, requested, ids, gpu_scoped=kind == "gpu")
        return ids, self.open(kind, ids, _holder(caller))

    def open(self, kind: str, ids: list[int], holder: str | None = None) -> Subscription:
        """Subscribe to ``ids``; StreamLimit past the cap, or past the per-caller cap for ``holder``
        (None: exempt, i.e. root), so one reader cannot hold every slot. Close it after."""
        sub = Subscription()
        with self._lock:
            if self._closing:
                sub.closed = True
                return sub
            if len(self._open) >= self.max_streams:
                raise StreamLimit(f"Too many open power streams ({self.max_streams}); "
                                      "close one or retry later.")
            held = sum(1 for h in self._open.values() if h == holder) if holder else 0
            if held >= self.max_per_caller:
                raise StreamLimit(f"Too many open power streams for {holder} ({held}, the "
                                      "limit per caller); close one or retry later.")
            self._open[sub] = holder
        for index in ids:
            self.pollers[kind][index].subscribe(sub)
        return sub

    def close(self, kind: str, ids: list[int], sub: Subscription) -> None:
        for index in ids:
            self.pollers[kind][index].unsubscribe(sub)
        sub.close()
        with self._lock:
            self._open.pop(sub, None)

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def shutdown(self) -> None:
        """End every open stream and stop the pollers; safe from a signal handler."""
        with self._lock:
            self._closing = True
            subs = list(self._open)
        for sub in subs:
            sub.close()
        for pollers in self.pollers.values():
            for poller in pollers.values():
                poller.stop()


def _holder(caller: Caller) -> str | None:
    """Who a stream slot counts against: the uid (not the process), or the token's subject.
    Root is exempt."""
    if caller.is_root:
        return None
    if caller.transport == "unix":
        return f"uid {caller.uid}"
    return caller.describe()


def build_hub(gpu_devices: list, cpus: list, gpu_hz: float, cpu_hz: float, num_workers: int,
              keepalive_s: float = 15.0, per_caller: int = 0,
              poller_factory: Callable[..., Poller] = Poller,
              gates: dict | None = None) -> StreamHub:
    """Pollers for every device and the stream caps: leave two HTTP workers for other
    requests; one caller gets ``per_caller`` slots (0: a third of them, at least 2)."""
    gpu = {d.index: poller_factory(GpuPowerStep(d), gpu_hz, f"zeusd-gpu{d.index}-power")
           for d in gpu_devices}
    cpu_period_s = 1.0 / max(cpu_hz, 1.0)
    cpu = {c.index: poller_factory(CpuPowerStep(c, cpu_period_s), cpu_hz,
                                   f"zeusd-cpu{c.index}-power") for c in cpus}
    max_streams = max(1, num_workers - 2)
    return StreamHub(gpu, cpu, max_streams, keepalive_s,
                     per_caller or max(2, max_streams // 3), gates)
