"""Pollers, subscriptions and the SSE body, with hand-written fake devices."""

from __future__ import annotations

import json
import threading
import time

import pytest

from zeusd.api.streams import KEEPALIVE, SseStream
from zeusd.errors import Internal, PolicyDenied, StreamLimit, UnknownDevice
from zeusd.identity import Caller
from zeusd.service.streams import (CpuPowerStep, GpuPowerStep, Poller, StreamHub,
                                   Subscription, build_hub)


class DummyGpu:
    def __init__(self, index: int = 0, powers=None) -> None:
        self.index = index
        self.powers = list(powers or [])
        self.calls = 0
        self.lock = threading.Lock()

    def get_power_mw(self) -> int:
        with self.lock:
            self.calls += 1
            if self.powers:
                value = self.powers.pop(0)
                if isinstance(value, Exception):
                    raise value
                return value
            return 75_000


class DummyCpu:
    def __init__(self, readings, index: int = 0, dram: bool = True) -> None:
        self.index = index
        self.readings = list(readings)
        self.dram_available = dram

    def read_energy_uj(self, cpu: bool, dram: bool):
        value = self.readings.pop(0)
        if isinstance(value, Exception):
            raise value
        return value


def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_gpu_step_publishes_only_changes_and_skips_errors():
    step = GpuPowerStep(DummyGpu(powers=[100, 100, RuntimeError("gone"), 120]))
    assert step.tick()["power_mw"] == 100
    assert step.tick() is None  # flat
    assert step.tick() is None  # error: warn and skip
    event = step.tick()
    assert (event["gpu_id"], event["power_mw"]) == (0, 120)
    step.reset()
    step.device.powers = [120]
    assert step.tick()["power_mw"] == 120  # last resets when the poller pauses


def test_cpu_step_uses_the_nominal_period():
    cpu = DummyCpu([(1_000, 500), (11_000, 1_500), (11_000, 1_500), OSError("io"),
                    (21_000, 2_500)])
    step = CpuPowerStep(cpu, period_s=0.1)  # 100_000 us
    assert step.tick() is None  # baseline: the first tick is skipped
    first = step.tick()
    assert (first["cpu_mw"], first["dram_mw"]) == (100, 10)  # 10_000 uJ * 1000 / 100_000 us
    assert step.tick()["cpu_mw"] == 0
    assert step.tick() is None  # read error reuses the previous power: unchanged
    assert step.tick()["cpu_mw"] == 100


def test_cpu_step_without_dram_and_with_a_failing_baseline():
    cpu = DummyCpu([OSError("x"), (0, None), (5_000, None)], dram=False)
    step = CpuPowerStep(cpu, period_s=0.1)
    assert step.tick() is None and step.base is None  # retried next period
    assert step.tick() is None
    event = step.tick()
    assert (event["cpu_mw"], event["dram_mw"]) == (50, None)


class ManualClock:
    """The poller's clock, advanced by the test instead of slept through."""

    def __init__(self) -> None:
        self._now = 0.0
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._now

    def wait(self, stop: threading.Event, delay_s: float) -> None:
        with self._cond:
            until = self._now + delay_s
            while self._now < until and not stop.is_set():
                self._cond.wait(0.01)  # real time only to notice stop()

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()


def test_poller_is_lazy_and_pauses_after_the_last_subscriber():
    gpu, clock = DummyGpu(), ManualClock()
    poller = Poller(GpuPowerStep(gpu), hz=100, name="test-poller", clock=clock)
    try:
        clock.advance(10.0)
        assert gpu.calls == 0 and not poller.running  # nobody subscribed: hardware untouched
        sub = Subscription()
        poller.subscribe(sub)
        assert sub.take(2.0)[0]["power_mw"] == 75_000  # the first tick comes at once
        wait_until(lambda: clock.advance(poller.period_s) or gpu.calls >= 5)
        poller.unsubscribe(sub)
        clock.advance(poller.period_s)
        wait_until(lambda: not poller.running)  # paused within one period
        calls = gpu.calls
        for _ in range(10):
            clock.advance(1.0)
        assert gpu.calls == calls
    finally:
        poller.stop()
        poller.join(1.0)


def test_poller_ticks_once_per_period_of_its_clock():
    gpu, clock = DummyGpu(), ManualClock()
    poller = Poller(GpuPowerStep(gpu), hz=4, name="test-poller", clock=clock)  # 0.25 s
    try:
        poller.subscribe(Subscription())
        wait_until(lambda: gpu.calls == 1)
        clock.advance(0.125)  # (binary fractions: exact sums)
        clock.advance(0.0625)
        time.sleep(0.05)  # room for a wrong early tick to show (none may come)
        assert gpu.calls == 1
        clock.advance(0.0625)  # one whole period
        wait_until(lambda: gpu.calls == 2)
    finally:
        poller.stop()
        poller.join(1.0)


def test_late_subscriber_gets_the_current_value_at_once():
    gpu, clock = DummyGpu(), ManualClock()  # flat power: upstream would send nothing more
    poller = Poller(GpuPowerStep(gpu), hz=100, name="test-poller", clock=clock)
    try:
        first = Subscription()
        poller.subscribe(first)
        assert first.take(2.0)
        wait_until(lambda: clock.advance(poller.period_s) or gpu.calls >= 3)
        second = Subscription()
        poller.subscribe(second)
        assert second.take(0.0)[0]["power_mw"] == 75_000
    finally:
        poller.stop()
        poller.join(1.0)


def hub_with(gpus: int = 2, max_streams: int = 1, keepalive_s: float = 15.0) -> StreamHub:
    return build_hub([DummyGpu(i) for i in range(gpus)], [], 100, 10,
                     num_workers=max_streams + 2, keepalive_s=keepalive_s)


def test_hub_checks_ids_and_caps_streams():
    hub = hub_with()
    try:
        assert hub.check_ids("gpu", None) == [0, 1]
        with pytest.raises(UnknownDevice,
                           match=r"^Unknown GPU indices: \[4\]. Available: \[0, 1\]$"):
            hub.check_ids("gpu", [0, 4])
        sub = hub.open("gpu", [0])
        with pytest.raises(StreamLimit, match=r"Too many open power streams \(1\)"):
            hub.open("gpu", [1])
        hub.close("gpu", [0], sub)
        assert hub.open_count == 0
        hub.close("gpu", [1], hub.open("gpu", [1]))
    finally:
        hub.shutdown()


def test_cap_never_takes_every_worker():
    assert build_hub([], [], 20, 10, num_workers=8).max_streams == 6
    assert build_hub([], [], 20, 10, num_workers=1).max_streams == 1


def test_one_caller_holds_at_most_its_share_of_streams():
    hub = hub_with(max_streams=6)  # a third of 6: 2 per caller
    try:
        assert hub.max_per_caller == 2
        mine = [hub.open("gpu", [0], "uid 1001") for _ in range(2)]
        with pytest.raises(StreamLimit, match=r"^Too many open power streams for uid 1001 "
                                                  r"\(2, the limit per caller\)"):
            hub.open("gpu", [0], "uid 1001")
        others = [hub.open("gpu", [0], "uid 1002"), hub.open("gpu", [0], None)]  # None: root
        hub.close("gpu", [0], mine.pop())
        mine.append(hub.open("gpu", [0], "uid 1001"))  # a closed stream gives its slot back
        assert hub.open_count == 4
        for sub in mine + others:
            hub.close("gpu", [0], sub)
    finally:
        hub.shutdown()


def test_sse_body_events_snapshot_and_close():
    hub = hub_with(max_streams=2)
    try:
        body = SseStream(hub, "gpu", [0, 1], hub.open("gpu", [0, 1]), snapshot=False)
        chunk = next(body)
        assert chunk.startswith(b"data: {") and chunk.endswith(b"}\n\n")
        assert json.loads(chunk.split(b"\n")[0][6:])["power_mw"] == 75_000
        snap = SseStream(hub, "gpu", [0, 1], hub.open("gpu", [0, 1]), snapshot=True)
        values: dict = {}
        while set(values) != {"0", "1"}:
            values = json.loads(next(snap)[6:])["power_mw"]
        assert values == {"0": 75_000, "1": 75_000}
        body.close()
        body.close()  # idempotent
        snap.close()
        assert hub.open_count == 0
        assert hub.pollers["gpu"][0].subscriber_count == 0
    finally:
        hub.shutdown()


def test_sse_body_keepalive_disconnect_and_shutdown():
    hub = hub_with(keepalive_s=0.05)
    try:
        body = SseStream(hub, "gpu", [0], hub.open("gpu", [0]), snapshot=False)
        assert next(body).startswith(b"data: ")
        assert next(body) == KEEPALIVE  # flat power: only comments
        gone = threading.Event()
        body.disconnected = gone.is_set
        gone.set()
        with pytest.raises(StopIteration):
            next(body)
        assert hub.open_count == 0  # the peer left: slot and subscription released
        other = SseStream(hub, "gpu", [0], hub.open("gpu", [0]), snapshot=False)
        hub.shutdown()
        with pytest.raises(StopIteration):
            while True:
                next(other)
    finally:
        hub.shutdown()


def test_empty_id_set_sends_headers_at_once():
    hub = hub_with(gpus=0)
    try:
        body = SseStream(hub, "gpu", [], hub.open("gpu", []), snapshot=False)
        assert next(body) == KEEPALIVE
        body.close()
    finally:
        hub.shutdown()


class RecordingGate:
    def __init__(self, granted=None, error=None) -> None:
        self.granted, self.error = granted, error
        self.calls: list[tuple] = []

    def allowed(self, caller, requested, existing, gpu_scoped):
        self.calls.append((caller, requested, existing, gpu_scoped))
        if self.error is not None:
            raise self.error
        return self.granted if self.granted is not None else existing


def test_start_asks_the_kinds_read_gate_and_counts_the_callers_uid():
    alice = Caller(transport="unix", pid=7, uid=1001, gid=1001)
    gpu_gate, cpu_gate = RecordingGate(granted=[1]), RecordingGate()
    hub = build_hub([DummyGpu(i) for i in range(2)], [], 100, 10, num_workers=8,
                    per_caller=1, gates={"gpu": gpu_gate, "cpu": cpu_gate})
    try:
        ids, sub = hub.start(alice, "gpu", None)
        assert ids == [1] and gpu_gate.calls == [(alice, None, [0, 1], True)]
        with pytest.raises(StreamLimit, match=r"^Too many open power streams for uid 1001 "):
            hub.start(alice, "gpu", [0])
        hub.close("gpu", ids, sub)
        gpu_gate.error = PolicyDenied("no")
        with pytest.raises(PolicyDenied):
            hub.start(alice, "gpu", [0])
        assert hub.open_count == 0
        with pytest.raises(UnknownDevice):  # existence before permission, as upstream
            hub.start(alice, "gpu", [5])
        assert len(gpu_gate.calls) == 3
    finally:
        hub.shutdown()


def test_start_without_a_gate_is_refused():
    hub = hub_with()
    try:
        with pytest.raises(Internal, match="no read permission check for gpu streams"):
            hub.start(Caller(transport="unix", pid=1, uid=5, gid=5), "gpu", None)
        assert hub.open_count == 0
    finally:
        hub.shutdown()
