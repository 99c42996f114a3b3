"""Hand-written fake services for the HTTP layer: each records its calls and answers
what the test scripted (a value, or an exception to raise)."""

from __future__ import annotations

from falcon import testing

from zeusd import operations as ops
from zeusd.api.app import create_app
from zeusd.identity import ENVIRON_KEY, Caller

ALICE = Caller(transport="unix", pid=4242, uid=1001, gid=1001, groups=(1001,))
ALL_GROUPS = frozenset({ops.GPU_CONTROL, ops.GPU_READ, ops.CPU_READ})
SIGNING_KEY = b"api-test-signing-key-0123456789ab"


class Scripted:
    """``answers[method]``: what that method returns, or raises if it is an exception."""

    def __init__(self, **answers) -> None:
        self.answers = answers
        self.calls: list[tuple] = []

    def answer(self, method: str, *args):
        # ids and changes come as tuples (a fast-lane plan shares them): recorded as lists
        self.calls.append((method, *(list(a) if isinstance(a, tuple) else a for a in args)))
        value = self.answers.get(method)
        if isinstance(value, BaseException):
            raise value
        return value


class FakeGpuControl(Scripted):
    def change(self, caller, changes, block, pin_owner=None, after_response=None):
        # no transport here: no pin, nothing to run after the response
        return self.answer("change", caller, changes, block)


class FakeGpuReads(Scripted):
    def power(self, caller, gpu_ids):
        return self.answer("power", caller, gpu_ids)

    def cumulative_energy(self, caller, gpu_ids):
        return self.answer("cumulative_energy", caller, gpu_ids)

    def power_limit(self, caller, gpu_ids):
        return self.answer("power_limit", caller, gpu_ids)

    def power_limit_constraints(self, caller, gpu_ids):
        return self.answer("power_limit_constraints", caller, gpu_ids)

    def persistence_mode(self, caller, gpu_ids):
        return self.answer("persistence_mode", caller, gpu_ids)

    def supported_clocks(self, caller, gpu_ids):
        return self.answer("supported_clocks", caller, gpu_ids)


class FakeCpuReads(Scripted):
    def cumulative_energy(self, caller, cpu_ids, cpu, dram):
        return self.answer("cumulative_energy", caller, cpu_ids, cpu, dram)

    def power(self, caller, cpu_ids):
        return self.answer("power", caller, cpu_ids)

    def dram_available(self, caller, cpu_id):
        return self.answer("dram_available", caller, cpu_id)

    def index_energy(self, caller, cpu_id, cpu, dram):
        return self.answer("index_energy", caller, cpu_id, cpu, dram)


class FakeDiscovery(Scripted):
    def describe(self, caller):
        return self.answer("describe", caller)


class FakeSubscription:
    """Hands out its events once, then reports itself closed (the stream ends)."""

    def __init__(self, events: list[dict]) -> None:
        self.events = list(events)
        self.closed = False

    def take(self, timeout_s: float) -> list[dict]:
        if not self.events:
            self.closed = True
            return []
        return [self.events.pop(0)]


class FakeHub(Scripted):
    keepalive_s = 15.0

    def __init__(self, events=(), **answers) -> None:
        super().__init__(**answers)
        self.events = list(events)
        self.closed: list[tuple] = []

    def start(self, caller, kind, requested):
        ids = self.answer("start", caller, kind, requested)
        return ids, FakeSubscription(self.events)

    def close(self, kind, ids, sub) -> None:
        self.closed.append((kind, ids))


class Rig:
    """A TestClient over the real app and fake services, calling as ``caller``.
    ``fast_lane`` (class default set per test by conftest.py: every API test runs both
    ways): serve the hot routes through the fast lane, or every request through Falcon."""

    fast_lane = True

    def __init__(self, groups=ALL_GROUPS, signing_key=None, caller: Caller = ALICE,
                 streams: bool = True) -> None:
        self.control, self.gpu_reads = FakeGpuControl(), FakeGpuReads()
        self.cpu_reads, self.discovery = FakeCpuReads(), FakeDiscovery()
        self.hub = FakeHub() if streams else None
        self.caller = caller
        self.app = create_app(enabled_groups=frozenset(groups), signing_key=signing_key,
                              discovery=self.discovery, gpu_control=self.control,
                              gpu_reads=self.gpu_reads, cpu_reads=self.cpu_reads,
                              streams_hub=self.hub, fast_lane=self.fast_lane)
        self.client = testing.TestClient(self.app)

    def request(self, method: str, path: str, **kwargs) -> testing.Result:
        extras = {ENVIRON_KEY: self.caller}
        return self.client.simulate_request(method, path, extras=extras, **kwargs)

    def get(self, path: str, **kwargs) -> testing.Result:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> testing.Result:
        return self.request("POST", path, **kwargs)


def is_json_error(result: testing.Result, status: int, message: str, **extra) -> bool:
    return (result.status_code == status
            and result.headers["content-type"] == "application/json"
            and result.json == {"error": message, **extra})


def is_text_error(result: testing.Result, status: int, message: str) -> bool:
    return (result.status_code == status
            and result.headers["content-type"] == "text/plain; charset=utf-8"
            and result.text == message)
