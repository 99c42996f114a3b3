"""A hung or slow driver, floods, and hostile input: the daemon stays up and answers."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.support.checks import assert_json, assert_ok_empty, assert_text_error, query
from tests.support.sim import SET_PERSISTENCE, SET_POWER, SimGpus

TIMEOUT_S = 2
HUNG_CALL = "nvmlDeviceGetPowerManagementLimit"


def hung_call(call: str) -> str:
    return f"NVML call {call} on GPU 0 did not return within {TIMEOUT_S} s"


def not_run(stuck_call: str) -> str:
    return (f"GPU 0 did not answer within {TIMEOUT_S} s: NVML call {stuck_call} has not "
            "returned; this command was not run")


HUNG = hung_call("get_power_limit")
NOT_RUN = not_run("get_power_limit")
NOT_RESPONDING = "GPU 0 is not responding: NVML call "


class Background:
    """A request running on its own connection in a thread. A request whose own NVML call
    hangs is never answered: its connection is cut when the daemon stops (``reply`` is then
    the client's exception)."""

    def __init__(self, zd, method: str, path: str, body=None) -> None:
        self.reply = None
        client = zd.client()
        client.timeout = 600

        def send() -> None:
            try:
                self.reply = client.request(method, path, body=body)
            except OSError as exc:  # the daemon stopped while the call hung
                self.reply = exc
        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout_s: float = 60):
        self.thread.join(timeout_s)
        assert self.done()
        return self.reply


def first_done(*requests: Background, timeout_s: float = 60) -> Background:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for request in requests:
            if request.done():
                return request
        time.sleep(0.02)
    raise AssertionError("no request was answered")


@pytest.fixture(scope="module")
def hung(start_zeusd, module_tmp):
    """On GPU 0, reading the power limit and setting persistence mode hang for good (until
    the daemon exits). Nothing has touched them yet: the first test trips the hang."""
    gpus = SimGpus(module_tmp, count=2, name="hung",
                   faults=[{"gpu": 0, "call": HUNG_CALL, "hang": True},
                           {"gpu": 0, "call": "nvmlDeviceSetPersistenceMode", "hang": True}])
    return start_zeusd(gpus=gpus, args=("--nvml-timeout-s", str(TIMEOUT_S)))


def test_other_gpus_and_service_routes_answer_while_gpu_0_is_hung(hung):
    mark = hung.gpus.mark()
    # Two GPU 0 requests; whichever reaches the GPU first hangs, the other waits behind it.
    read = Background(hung, "GET", "/gpu/get_power_limit?gpu_ids=0")
    write = Background(hung, "POST", query("/gpu/set_persistence_mode", gpu_ids="0",
                                            enabled=False, block=True))
    assert hung.get("/gpu/get_power_limit?gpu_ids=1").status == 200
    assert_ok_empty(hung.post(query("/gpu/set_persistence_mode", gpu_ids="1", enabled=False,
                                    block=True)))
    assert assert_json(hung.get("/discover"), 200)["gpu_ids"] == [0, 1]
    assert hung.get("/time").status == 200
    # All of that finished while the GPU 0 requests were still stuck on the hung call.
    assert not read.done() and not write.done()
    assert hung.gpus.since(mark) == [(1, SET_PERSISTENCE, [False])]
    # One request ran its call on its own thread (the GPU was idle) and that call hung: it
    # cannot be answered (see gpu_manager). The one queued behind it was answered 504 after
    # the NVML time limit and cancelled.
    queued = first_done(read, write)
    stuck = write if queued is read else read
    stuck_call = "get_power_limit" if stuck is read else "set_persistence_mode"
    assert assert_json(queued.result(), 504)["errors"]["0"] == not_run(stuck_call)
    assert not stuck.done()
    # The cancelled command never runs later, and GPU 0 was never changed.
    assert hung.get("/gpu/get_persistence_mode?gpu_ids=0").status == 504
    assert hung.gpus.since(mark) == [(1, SET_PERSISTENCE, [False])]


def test_requests_to_a_hung_gpu_fail_at_once_and_queue_nothing(hung):
    """Once a call has overrun the limit, waiting behind it would only tie up a worker."""
    mark = hung.gpus.mark()
    for method, path in (("GET", "/gpu/get_persistence_mode?gpu_ids=0"),
                         ("POST", query("/gpu/set_persistence_mode", gpu_ids="0,1",
                                        enabled=True, block=True)),
                         ("POST", query("/gpu/set_persistence_mode", gpu_ids="0",
                                        enabled=True, block=False))):
        reply = hung.get(path) if method == "GET" else hung.post(path)
        body = assert_json(reply, 504)
        message = body["errors"]["0"] if "errors" in body else body["error"]
        assert message.startswith(NOT_RESPONDING), body
        assert "nothing was queued" in message
    legacy = hung.post("/gpu/0/set_persistence_mode", {"enabled": True, "block": True})
    assert assert_text_error(legacy, 504).startswith(NOT_RESPONDING)
    # Refused before anything was queued: GPU 1 was not changed by the multi-GPU write.
    assert hung.gpus.since(mark) == []
    assert hung.get("/gpu/get_persistence_mode?gpu_ids=1").status == 200


def test_daemon_with_a_hung_gpu_stops_on_sigterm(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, count=1, name="hung-stop",
                   faults=[{"gpu": 0, "call": HUNG_CALL, "hang": True}])
    zd = start_zeusd(gpus=gpus, args=("--nvml-timeout-s", "1"))
    stuck = Background(zd, "GET", "/gpu/get_power_limit")  # its own call hangs: no answer
    for _ in range(200):  # the call overruns its 1 s limit: the GPU is hung
        if assert_json(zd.get("/discover"), 200)["gpu_health"]["0"]["state"] == "hung":
            break
        time.sleep(0.05)
    later = assert_json(zd.get("/gpu/get_power_limit"), 504)["errors"]["0"]
    assert later.startswith(NOT_RESPONDING)
    assert not stuck.done()
    assert zd.stop() == 0
    assert "zeusd stopped" in zd.log()
    assert isinstance(stuck.result(), OSError)  # cut at the stop, never a late answer


# ----- floods ---------------------------------------------------------------------------------

TOO_MANY = "Too many queued commands for GPU {}; retry later."


@pytest.fixture(scope="module")
def slow(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, count=2, name="slow", faults=[
        {"gpu": 0, "call": "nvmlDeviceSetPersistenceMode", "delay_s": 0.25},
        {"gpu": 1, "call": "nvmlDeviceSetPersistenceMode", "delay_s": 0.25},
        {"gpu": 1, "call": "nvmlDeviceSetGpuLockedClocks", "error": "NO_PERMISSION"}])
    return start_zeusd(gpus=gpus, args=("--max-queue-per-gpu", "4"))


def drain(zd, gpu: int) -> None:
    """Wait (blocking request, retried while 429) until the GPU's queue is empty."""
    for _ in range(200):
        reply = zd.get(f"/gpu/get_persistence_mode?gpu_ids={gpu}")
        if reply.status != 429:
            assert reply.status == 200, reply.text
            return
        time.sleep(0.1)
    raise AssertionError(f"GPU {gpu} never drained")


def test_flood_gets_429_and_the_daemon_stays_healthy(slow):
    mark = slow.gpus.mark()
    replies = [slow.post(query("/gpu/set_persistence_mode", gpu_ids="0", enabled=i % 2 == 0,
                               block=False)) for i in range(10)]
    statuses = [r.status for r in replies]
    assert statuses[:4] == [200] * 4 and 429 in statuses, statuses
    assert set(statuses) == {200, 429}
    for reply in replies:
        if reply.status == 429:
            assert assert_json(reply, 429) == {"error": TOO_MANY.format(0)}
    # Healthy meanwhile: service routes and other GPUs answer.
    assert slow.get("/discover").status == 200
    assert slow.get("/gpu/get_power_limit?gpu_ids=1").status == 200
    drain(slow, 0)
    # Exactly the accepted commands ran, in order.
    accepted = [[i % 2 == 0] for i, r in enumerate(replies) if r.status == 200]
    assert slow.gpus.applied(mark, 0) == accepted


def fill(zd, gpu: int) -> None:
    """Queue slow non-blocking commands on ``gpu`` until its queue is full (a 429)."""
    for _ in range(20):
        reply = zd.post(query("/gpu/set_persistence_mode", gpu_ids=str(gpu), enabled=True,
                              block=False))
        if reply.status == 429:
            return
        assert_ok_empty(reply)
    raise AssertionError(f"GPU {gpu}'s queue never filled")


def test_blocking_request_into_a_full_queue_is_429(slow):
    drain(slow, 0)
    fill(slow, 0)
    reply = slow.post(query("/gpu/set_persistence_mode", gpu_ids="0", enabled=False, block=True))
    assert assert_json(reply, 429) == {"error": TOO_MANY.format(0)}
    drain(slow, 0)


def test_429_on_one_gpu_changes_no_other_gpu(slow):
    """A multi-GPU request refused for a full queue must not run on the GPUs with room."""
    drain(slow, 0)
    drain(slow, 1)
    mark = slow.gpus.mark()
    fill(slow, 1)
    for block in (True, False):
        reply = slow.post(query("/gpu/set_power_limit", gpu_ids="0,1", power_limit_mw=345_000,
                                block=block))
        assert assert_json(reply, 429) == {"error": TOO_MANY.format(1)}
    drain(slow, 1)
    drain(slow, 0)
    assert [e for e in slow.gpus.since(mark) if e[1] == SET_POWER] == []


def test_non_blocking_failure_is_logged_with_the_callers_identity(slow):
    assert_ok_empty(slow.post(query("/gpu/set_gpu_locked_clocks", gpu_ids="1", min_clock_mhz=900,
                                    max_clock_mhz=1000, block=False)))
    expected = (f"non-blocking set_gpu_locked_clocks on GPU 1 for uid {os.getuid()} "
                f"pid {os.getpid()}")
    log = slow.wait_for_log(expected)
    line = next(line for line in log.splitlines() if expected in line)
    assert "NVML error: Insufficient Permissions (nvmlDeviceSetGpuLockedClocks)" in line
    # The audit record of the same failure names the caller too.
    assert any("outcome=\"failed: NVML error: Insufficient Permissions" in line
               and f"caller_uid={os.getuid()}" in line for line in log.splitlines())


# ----- hostile input: always an answer, never a traceback, never a 500 ------------------------

HOSTILE = [
    ("GET", "/gpu/get_power?gpu_ids=%ff", None, 400),
    ("GET", "/gpu/get_power?gpu_ids=%", None, 400),
    ("GET", "/gpu/get_power?%zz=1", None, 400),
    ("GET", "/gpu/get_power?" + "&".join(f"f{i}=1" for i in range(100)), None, 400),
    ("GET", "/gpu/get_power?gpu_ids=" + "0," * 5000 + "0", None, 200),
    ("GET", "/gpu/get_power?gpu_ids=0%000", None, 400),
    ("POST", "/gpu/" + "9" * 4000 + "/set_power_limit", {"power_limit_mw": 1, "block": True}, 400),
    ("POST", "/gpu/0/set_power_limit", b"[" * 10_000, 400),  # deep, but within the body cap
    ("POST", "/gpu/0/set_power_limit", b"[" * 100_000, 413),  # over the cap: refused unread
    ("POST", "/gpu/0/set_power_limit", b'{"power_limit_mw": 1' + b"0" * 5000 + b', "block": true}',
     400),
    ("POST", "/gpu/0/set_power_limit", b'{"power_limit_mw": NaN, "block": true}', 400),
    ("POST", "/gpu/0/set_power_limit", b'{"power_limit_mw": 1e400, "block": true}', 400),
    ("POST", "/cpu/0/get_index_energy", b"\xff\xfe\x00", 400),
    ("POST", "/cpu/0/get_index_energy", b'{"cpu": true, "dram": true, "cpu": 1}', 400),
    ("GET", "/discover/../discover", None, 404),
    ("DELETE", "/gpu/set_power_limit", None, 405),
]


@pytest.fixture(scope="module")
def plain(start_zeusd):
    return start_zeusd(rapl=True)


@pytest.mark.parametrize("method,path,body,status", HOSTILE,
                         ids=[f"{i}-{m}-{p[:30]}" for i, (m, p, _, _) in enumerate(HOSTILE)])
def test_hostile_requests_get_a_clean_answer(plain, method, path, body, status):
    mark = plain.gpus.mark()
    if status == 413:  # answered from the headers, then closed: sending the rest may fail
        assert refused_status(plain.socket_path, method, path, body) == 413
    else:
        client = plain.client()  # a fresh connection: a bad request may close it
        reply = client.request(method, path, body=body)
        assert reply.status == status, reply.text
    assert plain.gpus.since(mark) == []
    assert plain.get("/time").status == 200


def refused_status(socket_path: str, method: str, path: str, body: bytes) -> int:
    """The status of a request the daemon refuses before its body has arrived: the send may
    meet the closed connection (EPIPE), the answer is still there to read."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(socket_path)
        try:
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                         "\r\n\r\n".encode() + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return int(sock.recv(65536).split(b" ", 2)[1])
