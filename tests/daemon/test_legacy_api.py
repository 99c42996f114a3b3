"""Legacy path-style API of zeus-ml 0.10-0.13 (docs/api.md "Legacy path-style API"; upstream v0.1 gpu.rs tests)."""

from __future__ import annotations

import threading

import pytest

from tests.support.checks import assert_json, assert_ok_empty, assert_text_error
from tests.support.sim import (RESET_GPU_CLOCKS, RESET_MEM_CLOCKS, SET_GPU_CLOCKS,
                               SET_MEM_CLOCKS, SET_PERSISTENCE, SET_POWER, SimGpus)

# op -> (NVML call, i -> body values without block, values -> journal args)
SETTERS = {
    "set_persistence_mode": (SET_PERSISTENCE, lambda i: {"enabled": i % 2 == 0},
                             lambda v: [v["enabled"]]),
    "set_persistent_mode": (SET_PERSISTENCE, lambda i: {"enabled": i % 3 != 0},
                            lambda v: [v["enabled"]]),
    "set_power_limit": (SET_POWER, lambda i: {"power_limit_mw": 200_000 + 5_000 * i},
                        lambda v: [v["power_limit_mw"]]),
    "set_gpu_locked_clocks": (SET_GPU_CLOCKS,
                              lambda i: {"min_clock_mhz": 900 + i, "max_clock_mhz": 1980 - i},
                              lambda v: [v["min_clock_mhz"], v["max_clock_mhz"]]),
    "set_mem_locked_clocks": (SET_MEM_CLOCKS,
                              lambda i: {"min_clock_mhz": 2201 + i, "max_clock_mhz": 3201},
                              lambda v: [v["min_clock_mhz"], v["max_clock_mhz"]]),
}
setters = pytest.mark.parametrize("op", SETTERS)


@pytest.fixture(scope="module")
def zd(start_zeusd):
    return start_zeusd(rapl=True)


def body_of(op: str, i: int, block: bool) -> dict:
    return {**SETTERS[op][1](i), "block": block}


def args_of(op: str, i: int) -> list:
    return SETTERS[op][2](SETTERS[op][1](i))


@setters
def test_single(zd, op):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post(f"/gpu/0/{op}", body_of(op, 0, True)))
    assert zd.gpus.since(mark) == [(0, SETTERS[op][0], args_of(op, 0))]


@setters
def test_multiple_round_robin(zd, op):
    mark = zd.gpus.mark()
    for i in range(10):
        assert_ok_empty(zd.post(f"/gpu/{i % 4}/{op}", body_of(op, i, True)))
    for gpu in range(4):
        assert zd.gpus.applied(mark, gpu) == [args_of(op, i) for i in range(gpu, 10, 4)]


@setters
def test_bulk_non_blocking_then_blocking(zd, op):
    mark = zd.gpus.mark()
    statuses = []

    def send(i: int) -> None:
        statuses.append(zd.client().post(f"/gpu/3/{op}", body_of(op, i, False)).status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 10
    assert_ok_empty(zd.post(f"/gpu/3/{op}", body_of(op, 10, True)))
    applied = zd.gpus.applied(mark, 3)
    assert len(applied) == 11 and applied[-1] == args_of(op, 10)
    assert sorted(map(str, applied[:-1])) == sorted(str(args_of(op, i)) for i in range(10))


@setters
@pytest.mark.parametrize("block", [True, False])
def test_unknown_gpu(zd, op, block):
    mark = zd.gpus.mark()
    reply = zd.post(f"/gpu/5/{op}", body_of(op, 1, block))
    assert assert_text_error(reply, 400) == "GPU index 5 does not exist."
    assert zd.gpus.since(mark) == []


@pytest.mark.parametrize("op", ["reset_gpu_locked_clocks", "reset_mem_locked_clocks"])
@pytest.mark.parametrize("block", [True, False])
def test_unknown_gpu_reset(zd, op, block):
    assert assert_text_error(zd.post(f"/gpu/5/{op}", {"block": block}), 400) == \
        "GPU index 5 does not exist."


@setters
def test_every_field_is_required(zd, op):
    full = body_of(op, 1, True)
    mark = zd.gpus.mark()
    for missing in full:
        body = {k: v for k, v in full.items() if k != missing}
        text = assert_text_error(zd.post(f"/gpu/0/{op}", body), 400)
        assert "missing field" in text and f"`{missing}`" in text, text
    assert zd.gpus.since(mark) == []


@setters
def test_unknown_fields_are_ignored(zd, op):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post(f"/gpu/1/{op}", {**body_of(op, 2, True), "lego": False}))
    assert zd.gpus.since(mark) == [(1, SETTERS[op][0], args_of(op, 2))]


@pytest.mark.parametrize("op,field,value", [
    ("set_persistence_mode", "enabled", 1),           # upstream: `enabled: 1`
    ("set_persistence_mode", "enabled", "true"),
    ("set_persistence_mode", "block", "false"),
    ("set_power_limit", "power_limit_mw", "300000"),
    ("set_power_limit", "power_limit_mw", 300000.5),
    ("set_power_limit", "power_limit_mw", None),
    ("set_gpu_locked_clocks", "max_clock_mhz", "1100"),  # upstream: string "1100"
    ("set_mem_locked_clocks", "min_clock_mhz", [2201]),
    ("set_power_limit", "block", 1),
])
def test_wrong_types_are_invalid_type(zd, op, field, value):
    body = {**body_of(op, 1, True), field: value}
    mark = zd.gpus.mark()
    assert "invalid type" in assert_text_error(zd.post(f"/gpu/0/{op}", body), 400)
    assert zd.gpus.since(mark) == []


@pytest.mark.parametrize("value", [-1, 2**32])
def test_integers_outside_u32_are_rejected(zd, value):
    mark = zd.gpus.mark()
    text = assert_text_error(zd.post("/gpu/0/set_power_limit",
                                     {"power_limit_mw": value, "block": True}), 400)
    assert "expected u32" in text
    assert zd.gpus.since(mark) == []


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b"null", b"\xff\xfe"])
def test_bodies_that_are_not_a_json_object(zd, raw):
    reply = zd.post("/gpu/0/set_power_limit", raw, headers={"Content-Type": "application/json"})
    assert assert_text_error(reply, 400).startswith("Json deserialize error: ")


@pytest.mark.parametrize("value", [199_000, 730_000])
def test_power_limit_outside_the_gpu_range(zd, value):
    mark = zd.gpus.mark()
    text = assert_text_error(zd.post("/gpu/0/set_power_limit",
                                     {"power_limit_mw": value, "block": True}), 400)
    assert text == (f"Invalid request: power_limit_mw {value} is outside the valid range "
                    "200000-700000 mW of GPU 0")
    assert zd.gpus.since(mark) == []


def test_non_blocking_out_of_range_answers_400_at_once_and_applies_nothing(zd):
    mark = zd.gpus.mark()
    text = assert_text_error(zd.post("/gpu/2/set_power_limit",
                                     {"power_limit_mw": 10_000, "block": False}), 400)
    assert text == ("Invalid request: power_limit_mw 10000 is outside the valid range "
                    "200000-700000 mW of GPU 2")
    assert_ok_empty(zd.post("/gpu/2/set_power_limit", {"power_limit_mw": 321_000, "block": True}))
    assert zd.gpus.since(mark) == [(2, SET_POWER, [321000])]


def test_bulk_power_limits_then_an_invalid_blocking_one(zd):
    mark = zd.gpus.mark()
    values = [230_000 + 1_000 * i for i in range(10)]
    for value in values:
        assert_ok_empty(zd.post("/gpu/1/set_power_limit",
                                {"power_limit_mw": value, "block": False}))
    text = assert_text_error(zd.post("/gpu/1/set_power_limit",
                                     {"power_limit_mw": 750_000, "block": True}), 400)
    assert text == ("Invalid request: power_limit_mw 750000 is outside the valid range "
                    "200000-700000 mW of GPU 1")
    zd.get("/gpu/get_power_limit?gpu_ids=1")  # runs behind the 10 writes (the 400 did not queue)
    assert zd.gpus.applied(mark, 1) == [[v] for v in values]


def test_clock_reset_history(zd):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post("/gpu/2/set_gpu_locked_clocks",
                            {"min_clock_mhz": 1000, "max_clock_mhz": 1400, "block": True}))
    assert_ok_empty(zd.post("/gpu/2/reset_gpu_locked_clocks", {"block": True}))
    assert_ok_empty(zd.post("/gpu/2/set_mem_locked_clocks",
                            {"min_clock_mhz": 2201, "max_clock_mhz": 2201, "block": False}))
    assert_ok_empty(zd.post("/gpu/2/reset_mem_locked_clocks", {"block": True}))
    assert zd.gpus.since(mark) == [(2, SET_GPU_CLOCKS, [1000, 1400]), (2, RESET_GPU_CLOCKS, []),
                                   (2, SET_MEM_CLOCKS, [2201, 2201]), (2, RESET_MEM_CLOCKS, [])]


def test_reset_body_needs_block(zd):
    """Upstream: `{"lego": false}` on a reset is `missing field` (block)."""
    text = assert_text_error(zd.post("/gpu/0/reset_gpu_locked_clocks", {"lego": False}), 400)
    assert "missing field" in text and "`block`" in text


def test_reset_locked_clocks_has_no_legacy_route(zd):
    """zeus-ml never had it; only the query-style API does."""
    assert zd.post("/gpu/0/reset_locked_clocks", {"block": True}).status == 404


def test_negative_gpu_in_the_path_is_not_a_route(zd):
    assert zd.post("/gpu/-1/set_power_limit", {"power_limit_mw": 300000, "block": True}).status \
        == 404


# ----- NVML errors on legacy routes: text/plain with upstream's statuses ------------------------

@pytest.fixture(scope="module")
def faulty(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, count=2, name="legacy-faulty", faults=[
        {"gpu": 1, "call": "nvmlDeviceSetPersistenceMode", "error": "NO_PERMISSION"},
        {"gpu": 1, "call": "nvmlDeviceSetGpuLockedClocks", "error": "UNKNOWN"},
        {"gpu": 0, "call": "nvmlDeviceSetMemoryLockedClocks", "error": "NOT_SUPPORTED"}])
    return start_zeusd(gpus=gpus)


@pytest.mark.parametrize("op,gpu,body,status,text", [
    ("set_persistent_mode", 1, {"enabled": False, "block": True}, 403,
     "NVML error: Insufficient Permissions (nvmlDeviceSetPersistenceMode)"),
    ("set_gpu_locked_clocks", 1, {"min_clock_mhz": 900, "max_clock_mhz": 1000, "block": True},
     500, "NVML error: Unknown Error (nvmlDeviceSetGpuLockedClocks)"),
    ("set_mem_locked_clocks", 0, {"min_clock_mhz": 2201, "max_clock_mhz": 3201, "block": True},
     400, "NVML error: Not Supported (nvmlDeviceSetMemoryLockedClocks)"),
])
def test_nvml_errors_are_plain_text(faulty, op, gpu, body, status, text):
    assert assert_text_error(faulty.post(f"/gpu/{gpu}/{op}", body), status).startswith(text)


# ----- legacy CPU routes (zeus-ml 0.11+) ------------------------------------------------------

def test_supports_dram_energy(zd):
    assert assert_json(zd.get("/cpu/0/supports_dram_energy"), 200) == {"dram_available": True}


def test_supports_dram_energy_unknown_cpu(zd):
    assert assert_text_error(zd.get("/cpu/1/supports_dram_energy"), 400) == \
        "CPU index 1 does not exist."


@pytest.mark.parametrize("cpu,dram", [(True, True), (True, False), (False, True),
                                      (False, False)])
def test_get_index_energy(zd, cpu, dram):
    zd.rapl.set(0, cpu_uj=123_456_789, dram_uj=45_678)
    body = assert_json(zd.post("/cpu/0/get_index_energy", {"cpu": cpu, "dram": dram}), 200)
    assert body == {"cpu_energy_uj": 123_456_789 if cpu else None,
                    "dram_energy_uj": 45_678 if dram else None}


def test_get_index_energy_errors(zd):
    assert assert_text_error(zd.post("/cpu/3/get_index_energy", {"cpu": True, "dram": True}),
                             400) == "CPU index 3 does not exist."
    text = assert_text_error(zd.post("/cpu/0/get_index_energy", {"cpu": True}), 400)
    assert "missing field" in text and "`dram`" in text
    assert "invalid type" in assert_text_error(
        zd.post("/cpu/0/get_index_energy", {"cpu": "yes", "dram": True}), 400)
