"""A slow, hung or lost GPU: reads of it by an unprivileged user cannot hold every worker,
a request's whole wait is bounded, other GPUs keep answering, reads of all GPUs return the
healthy ones and name the others."""

from __future__ import annotations

import json
import re
import threading

import pytest

from tests.support.checks import assert_json, assert_ok_empty, query
from tests.support.hostile import Attacker
from tests.support.sim import SET_PERSISTENCE, SET_POWER, SimGpus
from tests.support.users import needs_real_users

pytestmark = needs_real_users

GET_LIMIT = "nvmlDeviceGetPowerManagementLimit"
WORKERS = 4  # so at most 2 requests wait on one GPU
# 2 waiting at the cap while slow; up to 4 (every worker) for the 0.25 s before it is seen slow
BACKED_UP = re.compile(r"GPU 1 is backed up: [234] requests are already waiting for it; "
                       r"retry later\.")
HEADER = "zeusd-unavailable-gpus"


def is_past_limit(message: str) -> bool:
    """Queued past its time limit (never run), or its own 2 s call outlived the limit."""
    return (message.startswith("GPU 1 did not get to this command within the request time "
                               "limit") and message.endswith("it was not run")) \
        or message == ("NVML call get_power_limit on GPU 1 was still running when the "
                       "request time limit ran out")


@pytest.fixture(scope="module")
def slow(start_zeusd, module_tmp):
    """GPU 1 answers every power-limit read in 2 s; a request may stay 3 s in all."""
    gpus = SimGpus(module_tmp, name="slow",
                   faults=[{"gpu": 1, "call": GET_LIMIT, "delay_s": 2}])
    return start_zeusd(gpus=gpus, args=("--num-workers", str(WORKERS),
                                        "--request-timeout-s", "3"))


@pytest.fixture(scope="module")
def mallory(accounts):
    return accounts.user("mal")


def test_a_slow_gpu_holds_at_most_its_share_of_workers(slow, mallory):
    mark = slow.gpus.mark()
    attacker = Attacker(mallory, slow.socket_path)
    flood = {}
    thread = threading.Thread(target=lambda: flood.update(attacker.call(
        "parallel", requests=[["GET", "/gpu/get_power_limit?gpu_ids=1"]] * 12)))
    thread.start()
    try:
        # Root's control of GPU 0 is served while the flood is on.
        assert_ok_empty(slow.post(query("/gpu/set_persistence_mode", gpu_ids="0",
                                        enabled="false", block="true")))
        thread.join(120)
    finally:
        attacker.close()
    results = flood["results"]
    statuses = sorted(r["status"] for r in results)
    # At most 4 waited (one read, the others past their 3 s limit); the rest were told at once.
    assert statuses.count(429) >= 6, results
    for r in results:
        body = json.loads(r["body"])
        if r["status"] == 429:
            message = body["errors"]["1"] if "errors" in body else body["error"]
            assert BACKED_UP.fullmatch(message), body
        elif r["status"] == 504:
            message = body["errors"]["1"] if "errors" in body else body["error"]
            assert is_past_limit(message), body
        else:
            assert r["status"] == 200 and body == {"1": {"power_limit_mw": 700000}}, r
    assert slow.gpus.since(mark) == [(0, SET_PERSISTENCE, [False])]


def test_reads_of_all_gpus_skip_a_backed_up_gpu(slow, mallory):
    attacker = Attacker(mallory, slow.socket_path)
    try:
        results = attacker.call("parallel", requests=[["GET", "/gpu/get_power_limit"]] * 3)
    finally:
        attacker.close()
    bodies = [json.loads(r["body"]) for r in results["results"]]
    assert all(r["status"] == 200 for r in results["results"]), \
        [(r["status"], r["body"]) for r in results["results"]]
    skipped = [r for r in results["results"] if HEADER in r["headers"]]
    assert skipped, "three concurrent reads of all GPUs: one must find GPU 1 backed up"
    for r in skipped:
        missing = json.loads(r["headers"][HEADER])
        assert list(missing) == ["1"]
        assert BACKED_UP.fullmatch(missing["1"]) or is_past_limit(missing["1"]), missing
        assert sorted(json.loads(r["body"])) == ["0", "2", "3"]
    assert all(set(b) <= {"0", "1", "2", "3"} for b in bodies)


@pytest.fixture(scope="module")
def hung(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, name="hung", faults=[{"gpu": 1, "call": GET_LIMIT, "hang": True}])
    return start_zeusd(gpus=gpus, args=("--nvml-timeout-s", "1"))


def test_reads_of_all_gpus_return_the_healthy_ones_while_one_is_hung(hung, mallory):
    attacker = Attacker(mallory, hung.socket_path)
    try:
        healthy = {str(i): {"power_limit_mw": 700000} for i in (0, 2, 3)}
        # The read that meets the hang waits out the NVML time limit, then skips GPU 1...
        first = attacker.call("request", method="GET", path="/gpu/get_power_limit")
        assert first["status"] == 200 and json.loads(first["body"]) == healthy
        assert json.loads(first["headers"][HEADER]) == {
            "1": "NVML call get_power_limit on GPU 1 did not return within 1 s"}
        # ...and later ones skip it at once.
        reply = attacker.call("request", method="GET", path="/gpu/get_power_limit")
        assert reply["status"] == 200 and json.loads(reply["body"]) == healthy
        missing = json.loads(reply["headers"][HEADER])
        assert list(missing) == ["1"]
        assert missing["1"].startswith("GPU 1 is not responding: NVML call get_power_limit "
                                       "has not returned for ")
        # Asked by name, the hung GPU is an error, at once.
        named = attacker.call("request", method="GET", path="/gpu/get_power_limit?gpu_ids=1")
        assert named["status"] == 504
    finally:
        attacker.close()
    health = assert_json(hung.get("/discover"), 200)["gpu_health"]
    assert health["0"] == {"state": "ok"} and health["1"]["state"] == "hung"


@pytest.fixture(scope="module")
def troubled(start_zeusd, module_tmp):
    """GPU 1 falls off the bus on its first call after start-up (info() makes 4)."""
    gpus = SimGpus(module_tmp, name="troubled", faults=[
        {"gpu": 1, "lost": True, "after_calls": 4},
        {"gpu": 2, "call": "nvmlDeviceSetPersistenceMode", "error": "NOT_SUPPORTED", "times": 1},
        {"gpu": 3, "call": "nvmlDeviceSetPowerManagementLimit", "error": "NO_PERMISSION"},
        {"gpu": 3, "call": "nvmlDeviceSetGpuLockedClocks", "error": "RESET_REQUIRED"},
    ])
    return start_zeusd(gpus=gpus)


LOST = "GPU 1 is lost (GPU is lost in "


def test_a_lost_gpu_answers_503_and_the_others_keep_working(troubled, mallory):
    mark = troubled.gpus.mark()
    attacker = Attacker(mallory, troubled.socket_path)
    try:
        for _ in range(2):  # the call that finds it lost, then the remembered state
            reply = attacker.call("request", method="GET", path="/gpu/get_power_limit")
            assert reply["status"] == 200
            assert sorted(json.loads(reply["body"])) == ["0", "2", "3"]
            assert list(json.loads(reply["headers"][HEADER])) == ["1"]
        named = attacker.call("request", method="GET", path="/gpu/get_power?gpu_ids=1")
        assert named["status"] == 503
        assert json.loads(named["body"])["error"].startswith(LOST)  # refused before queueing
    finally:
        attacker.close()
    write = troubled.post(query("/gpu/set_power_limit", gpu_ids="0,1", power_limit_mw=400_000,
                                block="true"))
    assert assert_json(write, 503)["error"].startswith(LOST)  # refused before anything ran
    assert_ok_empty(troubled.post(query("/gpu/set_power_limit", gpu_ids="0",
                                        power_limit_mw=400_000, block="true")))
    assert troubled.gpus.since(mark) == [(0, SET_POWER, [400_000])]
    health = assert_json(troubled.get("/discover"), 200)["gpu_health"]
    assert health["1"]["state"] == "lost"
    assert health["1"]["error"].startswith("NVML error: GPU is lost")
    assert "GPU 1 is lost (GPU is lost in" in troubled.wait_for_log("GPU 1 is lost")
    # A stream of the lost GPU does not poll it (nor log a warning at every tick).
    watcher = Attacker(mallory, troubled.socket_path)
    try:
        watcher.call("open", name="stream", n=1,
                     send="GET /gpu/stream_power?gpu_ids=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = watcher.call("replies", name="stream", wait_s=1.5)["replies"][0]
        assert "data: " not in reply["data"] and not reply["eof"]  # open, and no events
    finally:
        watcher.close()
    assert troubled.log().count("GPU 1: power poll failed") <= 1


def test_not_supported_is_remembered_and_answered_without_the_driver(troubled):
    mark = troubled.gpus.mark()
    path = query("/gpu/set_persistence_mode", gpu_ids="2", enabled="false", block="true")
    expected = ("NVML error: Not Supported (nvmlDeviceSetPersistenceMode): this GPU or driver "
                "does not support the operation")
    for _ in range(2):  # the simulator fails only once: the second answer is remembered
        assert assert_json(troubled.post(path), 400) == {"errors": {"2": expected}}
    assert troubled.gpus.since(mark) == []


def test_no_permission_and_reset_required_are_explained_to_the_admin(troubled):
    mark = troubled.gpus.mark()
    denied = troubled.post(query("/gpu/set_power_limit", gpu_ids="3", power_limit_mw=400_000,
                                 block="true"))
    assert assert_json(denied, 403)["errors"]["3"].startswith(
        "NVML error: Insufficient Permissions (nvmlDeviceSetPowerManagementLimit)")
    log = troubled.wait_for_log("configuration error")
    assert ("configuration error: NVML refused nvmlDeviceSetPowerManagementLimit on GPU 3 "
            "(Insufficient Permissions). zeusd needs root or CAP_SYS_ADMIN") in log
    reset = troubled.post(query("/gpu/set_gpu_locked_clocks", gpu_ids="3", min_clock_mhz=900,
                                max_clock_mhz=1500, block="true"))
    assert assert_json(reset, 500)["errors"]["3"].startswith(
        "NVML error: GPU requires restart (nvmlDeviceSetGpuLockedClocks)")
    assert "GPU 3 requires a reset" in troubled.wait_for_log("requires a reset")
    health = assert_json(troubled.get("/discover"), 200)["gpu_health"]
    assert health["3"]["state"] == "reset_required"
    assert troubled.gpus.since(mark) == []
