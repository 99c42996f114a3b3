"""SIGTERM applies acknowledged writes (or audits each one dropped), and one reader cannot
hold every stream slot."""

from __future__ import annotations

import json

import pytest

from tests.support.checks import assert_ok_empty, query
from tests.support.hostile import Attacker, body_of, status_of
from tests.support.sim import SET_POWER, SimGpus
from tests.support.users import needs_real_users

SET_LIMIT = "nvmlDeviceSetPowerManagementLimit"
VALUES = (300_000, 310_000, 320_000)


def queue_writes(zd) -> None:
    for value in VALUES:  # acknowledged at once, applied 1 or 2 s apart
        assert_ok_empty(zd.post(query("/gpu/set_power_limit", gpu_ids="0",
                                      power_limit_mw=value, block="false")))


def test_sigterm_applies_acknowledged_writes_before_exiting(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, count=1, name="drain",
                   faults=[{"gpu": 0, "call": SET_LIMIT, "delay_s": 1}])
    zd = start_zeusd(gpus=gpus)
    mark = zd.gpus.mark()
    queue_writes(zd)
    assert zd.stop() == 0
    assert zd.gpus.since(mark) == [(0, SET_POWER, [v]) for v in VALUES]
    assert "dropped" not in zd.log()


def test_writes_that_miss_the_shutdown_deadline_are_audited_as_dropped(start_zeusd, module_tmp):
    """The first write found GPU 0 idle: it runs on its request's thread after its answer, so
    the stop finishes it (a request in progress) before the queue's drain starts. The second
    is then running on the GPU's thread past the 1 s drain, the third is dropped."""
    gpus = SimGpus(module_tmp, count=1, name="deadline",
                   faults=[{"gpu": 0, "call": SET_LIMIT, "delay_s": 2}])
    zd = start_zeusd(gpus=gpus, args=("--shutdown-timeout-s", "1"))
    mark = zd.gpus.mark()
    queue_writes(zd)
    assert zd.stop() == 0
    assert zd.gpus.since(mark) == [(0, SET_POWER, [VALUES[0]])]
    log = zd.log()
    dropped = [line for line in log.splitlines() if "dropped: zeusd stopped after 1 s" in line]
    assert len(dropped) == 1, log
    assert "set_power_limit" in dropped[0] and str(VALUES[2]) in dropped[0]
    assert "1 queued command(s) were dropped at shutdown (audited)" in log
    assert "NVML call set_power_limit was still running at shutdown" in log


@needs_real_users
def test_one_reader_cannot_hold_every_stream_slot(start_zeusd, accounts):
    zd = start_zeusd(env=None, args=("--num-workers", "8"))  # 6 stream slots, 2 per caller
    mallory, eve = (Attacker(accounts.user(k), zd.socket_path) for k in ("smal", "seve"))
    try:
        request = "GET /gpu/stream_power HTTP/1.1\r\nHost: x\r\n\r\n"
        mallory.call("open", name="streams", n=3, send=request)
        replies = mallory.call("replies", name="streams", wait_s=2)["replies"]
        statuses = sorted(status_of(r["data"]) for r in replies)
        assert statuses == [200, 200, 429], replies
        refused = next(r for r in replies if status_of(r["data"]) == 429)
        assert body_of(refused["data"]) == {"error": (
            f"Too many open power streams for uid {mallory.uid} (2, the limit per caller); "
            "close one or retry later.")}
        # Another user still gets a stream.
        eve.call("open", name="streams", n=1, send=request)
        reply = eve.call("replies", name="streams", wait_s=2)["replies"][0]
        assert status_of(reply["data"]) == 200 and "data: " in reply["data"]
    finally:
        mallory.close()
        eve.close()
    assert json.loads(zd.get("/discover").text)["gpu_ids"] == [0, 1, 2, 3]
