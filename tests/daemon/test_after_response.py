"""A non-blocking write to an idle GPU runs on its request's own thread after the answer is
sent (no hand-off to the GPU's thread): the answer still comes first, the connection's next
request is served meanwhile, later commands for that GPU still run after it (FIFO), and a
failure is still logged and audited."""

from __future__ import annotations

import threading
import time

from tests.support.checks import assert_json, assert_ok_empty, query
from tests.support.sim import SET_POWER, SimGpus

SET_LIMIT = "nvmlDeviceSetPowerManagementLimit"


def set_limit(zd_or_client, gpu: int, value: int, block: bool):
    return zd_or_client.post(query("/gpu/set_power_limit", gpu_ids=str(gpu),
                                   power_limit_mw=value, block=block))


def test_the_answer_comes_before_the_call_and_the_connection_stays_usable(start_zeusd,
                                                                           module_tmp):
    gpus = SimGpus(module_tmp, count=2, name="slowset",
                   faults=[{"gpu": 0, "call": SET_LIMIT, "delay_s": 1.5}])
    zd = start_zeusd(gpus=gpus)
    client = zd.client()
    mark = zd.gpus.mark()
    started = time.monotonic()
    assert_ok_empty(set_limit(client, 0, 310_000, block=False))
    answered_s = time.monotonic() - started
    # The same connection, at once: a read of the other GPU is not held up by the write.
    assert assert_json(client.get(query("/gpu/get_power_limit", gpu_ids="1")), 200) \
        == {"1": {"power_limit_mw": 700_000}}
    read_s = time.monotonic() - started
    assert answered_s < 1.0 and read_s < 1.0, (answered_s, read_s)
    assert zd.gpus.since(mark) == []  # still running
    # A blocking write queued behind it runs after it: per-GPU order is kept.
    assert_ok_empty(set_limit(zd, 0, 320_000, block=True))
    assert zd.gpus.since(mark) == [(0, SET_POWER, [310_000]), (0, SET_POWER, [320_000])]


def test_a_failed_write_run_after_its_answer_is_logged_and_audited(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, count=1, name="failset",
                   faults=[{"gpu": 0, "call": SET_LIMIT, "error": 999, "times": 1}])
    zd = start_zeusd(gpus=gpus)
    mark = zd.gpus.mark()
    assert_ok_empty(set_limit(zd, 0, 330_000, block=False))
    log = zd.wait_for_log("non-blocking set_power_limit on GPU 0")
    assert "non-blocking set_power_limit on GPU 0 for uid 0" in log and "failed" in log, log
    assert 'outcome="failed: ' in log, log
    assert zd.gpus.since(mark) == []
    assert "work run after a response failed" not in log  # handled where it belongs
    # The GPU was given back: the next write runs (inline or queued alike).
    assert_ok_empty(set_limit(zd, 0, 340_000, block=True))
    assert zd.gpus.since(mark) == [(0, SET_POWER, [340_000])]


def test_concurrent_non_blocking_writes_to_one_gpu_apply_in_arrival_order(start_zeusd,
                                                                          module_tmp):
    gpus = SimGpus(module_tmp, count=1, name="order",
                   faults=[{"gpu": 0, "call": SET_LIMIT, "delay_s": 0.05}])
    zd = start_zeusd(gpus=gpus, args=("--num-workers", "8"))
    mark = zd.gpus.mark()
    values = [300_000 + 1000 * k for k in range(12)]
    for value in values:  # one connection: each acknowledged before the next is sent
        assert_ok_empty(set_limit(zd, 0, value, block=False))
    assert_ok_empty(set_limit(zd, 0, 299_000, block=True))  # a barrier behind all of them
    assert zd.gpus.applied(mark, 0, SET_POWER) == [[v] for v in values] + [[299_000]]
