"""A request in flight during a reload is decided by exactly one policy.

GpuControl must read ``policy_store.current`` once per request and decide every GPU of
it with that object. The store here hands out an allow-all and a deny-all policy in
turn on every access, so any second read inside one request would split a 4-GPU write
into allowed and denied parts; the real GpuManager runs the changes on simulated GPUs.
"""

from __future__ import annotations

import threading

import pytest

from zeusd import operations as ops
from zeusd.devices.loader import open_backend
from zeusd.errors import PolicyDenied
from zeusd.identity import Caller
from zeusd.operations import GpuChange
from zeusd.policy import Policy
from zeusd.policy.model import OPERATION_NAMES, Grant
from zeusd.service.gpu_control import GpuControl
from zeusd.service.gpu_manager import GpuManager

GPUS = (0, 1, 2, 3)
ALICE = Caller(transport="unix", pid=4242, uid=1001, gid=1001, groups=(1001,))
ALLOW_ALL = Policy(hash="a" * 64, source="allow-all", rules=(),
                   defaults=Grant(operations=frozenset(OPERATION_NAMES)))
DENY_ALL = Policy(hash="d" * 64, source="deny-all", rules=(), defaults=Grant())


class FlippingStore:
    """PolicyStore-like: every read of ``current`` is a reload to the other policy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0

    @property
    def current(self) -> Policy:
        with self._lock:
            self.reads += 1
            return ALLOW_ALL if self.reads % 2 else DENY_ALL


class RecordingAuditor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.changes: list[dict] = []

    def change(self, **record) -> None:
        with self._lock:
            self.changes.append(record)

    def read_denied(self, **record) -> None:  # pragma: no cover - no reads here
        raise AssertionError("no read is made in these tests")

    def event(self, message, **fields) -> None:  # pragma: no cover
        pass


@pytest.fixture
def rig():
    backend = open_backend("simulated", "h200x4")
    devices = backend.devices()
    manager = GpuManager(devices, [d.info() for d in devices], call_timeout_s=10)
    store, auditor = FlippingStore(), RecordingAuditor()
    try:
        yield GpuControl(manager, store, auditor), devices, store, auditor
    finally:
        manager.close()
        backend.close()


def power_changes(mw: int) -> list[GpuChange]:
    return [GpuChange(ops.SET_POWER_LIMIT, i, power_limit_mw=mw) for i in GPUS]


def limits(devices) -> list[int]:
    return [d.get_power_limit_mw() for d in devices]


def wait_idle(control: GpuControl) -> None:
    """Every GPU's queue has drained (a read on each runs behind anything queued)."""
    control.manager.run_all(GPUS, lambda d: d.get_power_limit_mw(), "barrier")


@pytest.mark.parametrize("block", [True, False])
def test_each_request_is_wholly_allowed_or_wholly_denied(rig, block):
    control, devices, store, _auditor = rig
    outcomes = []
    for n in range(40):
        before = limits(devices)
        mw = 300_000 + n * 1_000
        reads = store.reads
        try:
            control.change(ALICE, power_changes(mw), block=block)
            allowed = True
        except PolicyDenied as error:
            allowed = False
            assert error.extra["rule"] == "default"
        assert store.reads == reads + 1, "policy_store.current read more than once"
        wait_idle(control)
        after = limits(devices)
        assert after == ([mw] * 4 if allowed else before), (n, allowed, before, after)
        outcomes.append(allowed)
    assert outcomes == [n % 2 == 0 for n in range(40)]  # the store did flip each time


def test_audit_names_one_policy_per_request(rig):
    control, _devices, _store, auditor = rig
    for n in range(10):
        start = len(auditor.changes)
        try:
            control.change(ALICE, power_changes(400_000 + n), block=True)
        except PolicyDenied:
            pass
        records = auditor.changes[start:]
        hashes = {r["policy_hash"] for r in records}
        decisions = {r["decision"].allowed for r in records}
        assert len(hashes) == 1 and len(decisions) == 1, records
        if decisions == {True}:
            assert hashes == {ALLOW_ALL.hash}
            assert sorted(r["change"].gpu_index for r in records) == list(GPUS)
            assert all(r["outcome"] == "applied" for r in records)
        else:
            assert hashes == {DENY_ALL.hash}
            assert [r["outcome"] for r in records] == ["denied"]  # decided before any ran


def test_concurrent_requests_each_see_one_policy(rig):
    """Many threads, each writing all four GPUs with its own value: a request that was
    allowed changed every GPU (in per-GPU FIFO order), a denied one changed none."""
    control, devices, store, auditor = rig
    results: dict[int, bool] = {}
    lock = threading.Lock()

    def worker(k: int) -> None:
        mw = 250_000 + k * 1_000
        try:
            control.change(ALICE, power_changes(mw), block=True)
            ok = True
        except PolicyDenied:
            ok = False
        with lock:
            results[mw] = ok

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 32 and store.reads == 32
    assert sum(results.values()) == 16
    applied = {}
    for record in auditor.changes:
        if record["outcome"] == "applied":
            applied.setdefault(record["change"].power_limit_mw, set()).add(
                record["change"].gpu_index)
    assert {mw for mw, ok in results.items() if ok} == set(applied)
    assert all(gpus == set(GPUS) for gpus in applied.values()), applied
    # each GPU ends at the value of some allowed request (orders may differ across GPUs)
    assert all(results.get(mw) for mw in limits(devices)), limits(devices)
