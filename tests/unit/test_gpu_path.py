"""The GPU path: commands run inline when their GPU is idle, in per-GPU FIFO order with the
queued ones, a command answered 504 never runs later, and measurement reads go beside the
queue with one driver call shared by concurrent readers. Real simulated GPUs; driver calls
are counted with ``call_counts()``, never timed."""

from __future__ import annotations

import threading
import time

import pytest

from zeusd.devices.base import GpuInfo
from zeusd.devices.simulated import SimulatedBackend
from zeusd.errors import AggregatedError, GpuTimedOut, NvmlFailure
from zeusd.service import gpu_manager as gm
from zeusd.service.gpu_manager import GpuManager
from zeusd.service.reads import _energy_mj, _power_mw

ENERGY = "nvmlDeviceGetTotalEnergyConsumption"
SET_LIMIT = "nvmlDeviceSetPowerManagementLimit"
GET_LIMIT = "nvmlDeviceGetPowerManagementLimit"
NOT_RUN = ("GPU 0 did not answer within 0.3 s: NVML call {} has not returned; this command "
           "was not run")


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


class Rig:
    """Simulated H200s behind a GpuManager; every command records the thread it ran on."""

    def __init__(self, count: int = 1, call_timeout_s: float = 10.0, inline: int = 2) -> None:
        self.backend = SimulatedBackend.from_spec(f"h200x{count}")
        self.gpus = self.backend.devices()
        infos = [GpuInfo(g.index, "sim", f"GPU-{g.index}", f"0000:0{g.index}:00.0", True)
                 for g in self.gpus]
        self.manager = GpuManager(self.gpus, infos, call_timeout_s=call_timeout_s,
                                  max_inline_calls=inline)
        self.ran: list[tuple[str, str]] = []  # (command, thread name), in the order run

    def job(self, label: str, power_limit_mw: int = 300_000):
        def run(device):
            device.set_power_limit_mw(power_limit_mw)
            self.ran.append((label, threading.current_thread().name))
            return label
        return run

    def in_thread(self, fn, *args) -> dict:
        out: dict = {}

        def go() -> None:
            try:
                out["result"] = fn(*args)
            except Exception as exc:  # noqa: BLE001 - inspected by the test
                out["error"] = exc
        out["thread"] = threading.Thread(target=go, daemon=True)
        out["thread"].start()
        return out

    def hang_next(self, call: str, gpu: int = 0) -> None:
        self.gpus[gpu].inject_fault(call, hang=True, times=1)

    def calls(self, call: str, gpu: int = 0) -> int:
        return self.gpus[gpu].call_counts().get(call, 0)

    def close(self) -> None:
        self.backend.close()
        self.manager.close()


@pytest.fixture
def rig():
    made = []

    def make(**kwargs) -> Rig:
        made.append(Rig(**kwargs))
        return made[-1]
    yield make
    for r in made:
        r.close()


def test_a_blocking_command_on_an_idle_gpu_runs_on_the_callers_thread(rig):
    r = rig()
    assert r.manager.run_one(0, r.job("a"), "set_power_limit") == "a"
    r.manager.submit_all([0], r.job("later"), "set_power_limit", on_error=print)
    wait_until(lambda: len(r.ran) == 2)
    assert r.ran == [("a", threading.current_thread().name), ("later", "zeusd-gpu0")]


def test_a_non_blocking_write_to_an_idle_gpu_is_handed_to_after_response_and_keeps_fifo(rig):
    r = rig()
    later: list = []
    r.manager.submit_all([0], r.job("nb"), "set_power_limit", on_error=print,
                         after_response=later.append)
    assert len(later) == 1 and r.ran == []  # taken, not run: the answer goes out first
    # Anything for GPU 0 meanwhile queues behind it: a blocking write waits in the queue.
    blocked = r.in_thread(r.manager.run_one, 0, r.job("behind"), "set_power_limit")
    time.sleep(0.1)
    assert r.ran == [] and r.manager.queue_stats()[0][0] == 2
    later[0]()  # what the transport does once the response is sent
    blocked["thread"].join(10)
    assert r.ran == [("nb", threading.current_thread().name), ("behind", "zeusd-gpu0")]


def test_a_non_blocking_write_to_a_busy_gpu_or_to_several_gpus_is_queued(rig):
    r = rig(count=2)
    later: list = []
    r.manager.submit_all([0, 1], r.job("both"), "set_power_limit", on_error=print,
                         after_response=later.append)
    wait_until(lambda: len(r.ran) == 2)
    assert later == [] and sorted(r.ran) == [("both", "zeusd-gpu0"), ("both", "zeusd-gpu1")]
    r.hang_next(SET_LIMIT)
    r.manager.submit_all([0], r.job("hangs"), "set_power_limit", on_error=print)
    wait_until(lambda: r.calls(SET_LIMIT) == 2)  # GPU 0's second set: the hung one, running
    r.manager.submit_all([0], r.job("queued"), "set_power_limit", on_error=print,
                         after_response=later.append)
    assert later == []  # the GPU is busy: queued, not taken
    r.backend.release_hangs()
    wait_until(lambda: len(r.ran) == 4)
    assert r.ran[2:] == [("hangs", "zeusd-gpu0"), ("queued", "zeusd-gpu0")]


def test_a_failing_write_run_after_its_response_goes_to_on_error_and_frees_the_gpu(rig):
    r = rig()
    r.gpus[0].inject_fault(SET_LIMIT, "INVALID_ARGUMENT", times=1)
    later, errors = [], []
    r.manager.submit_all([0], r.job("bad"), "set_power_limit",
                         on_error=lambda i, exc: errors.append((i, type(exc).__name__)),
                         after_response=later.append)
    later[0]()
    assert errors == [(0, "NvmlError")] and r.ran == []
    assert r.manager.run_one(0, r.job("next"), "set_power_limit") == "next"
    assert r.ran == [("next", threading.current_thread().name)]


@pytest.mark.parametrize("why", ["no budget", "several gpus", "slow gpu"])
def test_no_inline_call_without_budget_for_several_gpus_or_on_a_slow_gpu(rig, monkeypatch,
                                                                         why):
    r = rig(count=2, inline=0 if why == "no budget" else 2)
    if why == "slow gpu":
        monkeypatch.setattr(gm, "SLOW_CALL_S", 0.0)  # every GPU counts as slow
    indices = [0, 1] if why == "several gpus" else [0]
    r.manager.run_all(indices, r.job("x"), "set_power_limit")
    assert sorted(r.ran) == sorted(("x", f"zeusd-gpu{i}") for i in indices)


def test_no_inline_call_while_another_request_waits_for_the_gpu(rig):
    r = rig()
    r.hang_next(ENERGY)  # a read waits on GPU 0 (beside the queue, which stays empty)
    reader = r.in_thread(r.manager.read_all, [0], _energy_mj, "get_total_energy")
    wait_until(lambda: r.calls(ENERGY) == 1)
    r.manager.run_one(0, r.job("x"), "set_power_limit")
    assert r.ran == [("x", "zeusd-gpu0")]
    r.backend.release_hangs()
    reader["thread"].join(10)
    r.manager.run_one(0, r.job("y"), "set_power_limit")  # alone again: inline
    assert r.ran[-1] == ("y", threading.current_thread().name)


def test_commands_behind_an_inline_call_run_after_it_in_arrival_order(rig):
    r = rig()
    r.hang_next(SET_LIMIT)
    first = r.in_thread(r.manager.run_one, 0, r.job("first"), "set_power_limit")
    wait_until(lambda: r.calls(SET_LIMIT) == 1)  # inside its (hung) driver call
    for label in ("q1", "q2", "q3"):
        r.manager.submit_all([0], r.job(label), "set_power_limit", on_error=print)
    last = r.in_thread(r.manager.run_one, 0, r.job("last"), "set_power_limit")
    wait_until(lambda: r.manager._workers[0].backlog() == 5)
    assert r.ran == []
    r.backend.release_hangs()
    last["thread"].join(10)
    assert [label for label, _ in r.ran] == ["first", "q1", "q2", "q3", "last"]
    assert r.ran[0][1] == first["thread"].name and last["result"] == "last"


def test_a_command_answered_504_behind_a_hung_inline_call_never_runs(rig):
    r = rig(call_timeout_s=0.3)
    r.hang_next(GET_LIMIT)
    stuck = r.in_thread(r.manager.run_one, 0, lambda d: d.get_power_limit_mw(),
                        "get_power_limit")
    wait_until(lambda: r.calls(GET_LIMIT) == 1)
    with pytest.raises(GpuTimedOut) as queued:
        r.manager.run_one(0, r.job("queued"), "set_power_limit")
    assert queued.value.message == NOT_RUN.format("get_power_limit")
    # Past the limit every request is refused at once, nothing queued.
    with pytest.raises(GpuTimedOut, match=r"^GPU 0 is not responding: NVML call "
                                          r"get_power_limit has not returned for \d+ s; "
                                          r"nothing was queued$"):
        r.manager.run_one(0, r.job("refused"), "set_power_limit")
    assert stuck["thread"].is_alive()  # the hung request itself has no answer
    r.backend.release_hangs()
    stuck["thread"].join(10)
    assert stuck["result"] == 700_000  # the call's real outcome, once it returned
    r.manager.run_one(0, r.job("after"), "set_power_limit")
    assert [label for label, _ in r.ran] == ["after"]
    assert r.calls(SET_LIMIT) == 1


def test_a_write_waiting_to_run_behind_a_hung_inline_call_is_dropped_at_shutdown(rig):
    r = rig()
    r.hang_next(GET_LIMIT)
    r.in_thread(r.manager.run_one, 0, lambda d: d.get_power_limit_mw(), "get_power_limit")
    wait_until(lambda: r.calls(GET_LIMIT) == 1)
    dropped = []
    r.manager.submit_all([0], r.job("queued"), "set_power_limit", on_error=print,
                         on_drop=lambda i, why: dropped.append(i))
    wait_until(lambda: r.manager._workers[0]._next is not None)  # taken, waiting to run
    assert r.manager.drain(0.05) == 1 and dropped == [0]
    r.backend.release_hangs()
    r.manager.close()
    time.sleep(0.1)  # the GPU's thread would run it now if it were still claimable
    assert r.ran == [] and r.calls(SET_LIMIT) == 0


def test_concurrent_energy_reads_share_one_driver_call(rig):
    r = rig()
    r.hang_next(ENERGY)
    leader = r.in_thread(r.manager.read_all, [0], _energy_mj, "get_total_energy")
    wait_until(lambda: r.calls(ENERGY) == 1)
    flight = r.manager._workers[0].flights.current("get_total_energy")
    joiners = [r.in_thread(r.manager.read_all, [0], _energy_mj, "get_total_energy")
               for _ in range(7)]
    wait_until(lambda: flight.joined == 7)
    r.backend.release_hangs()
    for out in [leader] + joiners:
        out["thread"].join(10)
    answers = {out["result"][0] for out in [leader] + joiners}
    assert len(answers) == 1 and r.calls(ENERGY) == 1
    # The flight is over: the next read makes its own call.
    assert r.manager.read_all([0], _energy_mj, "get_total_energy")[0] >= answers.pop()
    assert r.calls(ENERGY) == 2


def test_a_read_of_several_gpus_makes_one_call_per_gpu(rig):
    r = rig(count=3)
    assert sorted(r.manager.read_all([0, 1, 2], _energy_mj, "get_total_energy")) == [0, 1, 2]
    assert [r.calls(ENERGY, i) for i in range(3)] == [1, 1, 1]


def test_the_simulated_driver_serialises_energy_reads_of_one_gpu_only(rig):
    r = rig(count=2)
    r.hang_next(ENERGY)
    first = r.in_thread(r.gpus[0].get_total_energy_mj)
    wait_until(lambda: r.calls(ENERGY) == 1)
    second = r.in_thread(r.gpus[0].get_total_energy_mj)
    assert r.gpus[1].get_total_energy_mj() > 0  # another GPU is not held up
    assert r.gpus[0].get_power_mw() > 0  # nor another function of the same GPU
    time.sleep(0.1)
    assert r.calls(ENERGY) == 1 and second["thread"].is_alive()  # waits for the first
    r.backend.release_hangs()
    second["thread"].join(10)
    assert r.calls(ENERGY) == 2 and second["result"] >= first["result"]


def test_power_and_energy_reads_do_not_wait_behind_writes_but_settings_reads_do(rig):
    r = rig()
    r.hang_next(SET_LIMIT)
    r.in_thread(r.manager.run_one, 0, r.job("stuck", 250_000), "set_power_limit")
    wait_until(lambda: r.calls(SET_LIMIT) == 1)
    r.manager.submit_all([0], r.job("queued", 260_000), "set_power_limit", on_error=print)
    limit = r.in_thread(r.manager.run_one, 0, lambda d: d.get_power_limit_mw(),
                        "get_power_limit")
    assert r.manager.read_all([0], _power_mw, "get_power")[0] > 0
    assert r.manager.read_all([0], _energy_mj, "get_total_energy")[0] > 0
    assert limit["thread"].is_alive() and r.ran == []
    r.backend.release_hangs()
    limit["thread"].join(10)
    assert limit["result"] == 260_000  # in order: it saw the write queued before it


def test_a_hung_energy_read_answers_its_joiners_504_and_reads_of_all_gpus_skip_it(rig):
    r = rig(count=2, call_timeout_s=0.3)
    r.hang_next(ENERGY)
    leader = r.in_thread(r.manager.read_all, [0], _energy_mj, "get_total_energy")
    wait_until(lambda: r.calls(ENERGY) == 1)
    with pytest.raises(AggregatedError) as joined:
        r.manager.read_all([0], _energy_mj, "get_total_energy")
    assert joined.value.errors[0].message == ("NVML call get_total_energy on GPU 0 did not "
                                              "return within 0.3 s")
    results, missing = r.manager.read_available([0, 1], _energy_mj, "get_total_energy")
    assert list(results) == [1]
    assert missing[0].message.startswith("GPU 0 is not responding: NVML call "
                                         "get_total_energy has not returned for ")
    assert r.manager.health()[0]["state"] == "hung"
    assert r.calls(ENERGY) == 1
    r.backend.release_hangs()
    leader["thread"].join(10)
    assert leader["result"][0] > 0


def test_a_read_error_is_answered_and_the_next_read_calls_again(rig):
    r = rig()
    r.gpus[0].inject_fault(ENERGY, error="UNKNOWN", times=1)
    with pytest.raises(AggregatedError) as failed:
        r.manager.read_all([0], _energy_mj, "get_total_energy")
    assert isinstance(failed.value.errors[0], NvmlFailure)
    assert failed.value.errors[0].message.startswith(
        "NVML error: Unknown Error (nvmlDeviceGetTotalEnergyConsumption)")
    assert r.manager.read_all([0], _energy_mj, "get_total_energy")[0] > 0
