"""Query-style GPU writes (docs/api.md "GPU writes"), upstream HEAD gpu.rs tests included.

One daemon with four simulated H200s serves the module; what the GPUs applied
is read back from the simulator's journal (one line per setter that
succeeded, in the order each GPU applied them).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import pytest

from tests.support.checks import (Unchanged, assert_error, assert_error_startswith,
                                  assert_json, assert_ok_empty, query)
from tests.support.sim import (RESET_GPU_CLOCKS, RESET_MEM_CLOCKS, SET_GPU_CLOCKS,
                               SET_MEM_CLOCKS, SET_PERSISTENCE, SET_POWER)

GPUS = [0, 1, 2, 3]


@dataclass(frozen=True)
class Setter:
    op: str
    call: str
    value: Callable[[int], dict]  # i -> the value parameters of the i-th request
    args: Callable[[dict], list]  # value parameters -> journal args

    def path(self, gpu_ids, block: bool, **values) -> str:
        return query(f"/gpu/{self.op}", gpu_ids=gpu_ids, **values, block=block)


def _clocks(table: list[tuple[int, int]]):
    return lambda i: {"min_clock_mhz": table[i % len(table)][0],
                      "max_clock_mhz": table[i % len(table)][1]}


SETTERS = {
    "persistence": Setter("set_persistence_mode", SET_PERSISTENCE,
                          lambda i: {"enabled": i % 3 == 0}, lambda v: [v["enabled"]]),
    "power_limit": Setter("set_power_limit", SET_POWER,
                          lambda i: {"power_limit_mw": 200_000 + 10_000 * i},
                          lambda v: [v["power_limit_mw"]]),
    "gpu_clocks": Setter("set_gpu_locked_clocks", SET_GPU_CLOCKS,
                         _clocks([(345, 1980), (900, 1410), (1005, 1005), (1980, 1980)]),
                         lambda v: [v["min_clock_mhz"], v["max_clock_mhz"]]),
    "mem_clocks": Setter("set_mem_locked_clocks", SET_MEM_CLOCKS,
                         _clocks([(2201, 3201), (3201, 3201), (2201, 2201), (2500, 3000)]),
                         lambda v: [v["min_clock_mhz"], v["max_clock_mhz"]]),
}
setters = pytest.mark.parametrize("setter", SETTERS.values(), ids=SETTERS.keys())


@pytest.fixture(scope="module")
def zd(start_zeusd):
    return start_zeusd()


# ----- upstream: single / multiple / bulk / invalid, for every setter ------------------------

@setters
def test_single_blocking_write_is_applied_before_the_reply(zd, setter):
    mark = zd.gpus.mark()
    values = setter.value(0)
    assert_ok_empty(zd.post(setter.path("0", True, **values)))
    assert zd.gpus.since(mark) == [(0, setter.call, setter.args(values))]


@setters
def test_multiple_round_robin_writes_apply_in_order_per_gpu(zd, setter):
    mark = zd.gpus.mark()
    sent: dict[int, list] = {g: [] for g in GPUS}
    for i in range(10):
        values = setter.value(i)
        assert_ok_empty(zd.post(setter.path(str(i % 4), True, **values)))
        sent[i % 4].append(setter.args(values))
    for gpu in GPUS:
        assert zd.gpus.applied(mark, gpu, setter.call) == sent[gpu]


@setters
def test_blocking_write_waits_for_every_earlier_non_blocking_one(zd, setter):
    mark = zd.gpus.mark()
    for i in range(10):
        assert_ok_empty(zd.post(setter.path("0", False, **setter.value(i))))
    assert_ok_empty(zd.post(setter.path("0", True, **setter.value(10))))
    # Read at once: the blocking reply is the barrier, all 11 were applied in order.
    assert zd.gpus.applied(mark, 0) == [setter.args(setter.value(i)) for i in range(11)]


@setters
def test_concurrent_non_blocking_writes_all_apply_before_a_blocking_one(zd, setter):
    mark = zd.gpus.mark()
    statuses = []

    def send(i: int) -> None:
        client = zd.client()
        statuses.append(client.post(setter.path("1", False, **setter.value(i))).status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 10
    assert_ok_empty(zd.post(setter.path("1", True, **setter.value(10))))
    applied = zd.gpus.applied(mark, 1)
    assert len(applied) == 11
    assert applied[-1] == setter.args(setter.value(10))
    assert sorted(map(str, applied[:-1])) == sorted(str(setter.args(setter.value(i)))
                                                    for i in range(10))


@setters
@pytest.mark.parametrize("block", [True, False])
def test_unknown_gpu_is_rejected_before_anything_runs(zd, setter, block):
    with Unchanged(zd):
        assert_error(zd.post(setter.path("5", block, **setter.value(1))), 400,
                     "GPU index 5 does not exist.")
        assert_error(zd.post(setter.path("0,1,7", block, **setter.value(1))), 400,
                     "GPU index 7 does not exist.")


@setters
def test_unknown_query_field_is_rejected(zd, setter):
    with Unchanged(zd):
        path = setter.path("0", True, **setter.value(1)) + "&lego=false"
        err = assert_error_startswith(zd.post(path), 400, "Query deserialize error: ")
        assert "unknown field `lego`" in err


@setters
def test_every_required_field_is_required(zd, setter):
    full = {"gpu_ids": "0", **setter.value(1), "block": True}
    with Unchanged(zd):
        for missing in full:
            params = {k: v for k, v in full.items() if k != missing}
            assert_error(zd.post(query(f"/gpu/{setter.op}", **params)), 400,
                         f"Query deserialize error: missing field `{missing}`")


@setters
def test_duplicate_field_is_rejected(zd, setter):
    with Unchanged(zd):
        path = setter.path("0", True, **setter.value(1)) + "&block=false"
        assert_error(zd.post(path), 400, "Query deserialize error: duplicate field `block`")


@pytest.mark.parametrize("setter,field", [
    (SETTERS["power_limit"], "power_limit_wwww"),   # upstream's typo tests
    (SETTERS["gpu_clocks"], "max_clock_khz"),
    (SETTERS["mem_clocks"], "max_clock_khz"),
    (SETTERS["persistence"], "disabled"),
], ids=["power_limit", "gpu_clocks", "mem_clocks", "persistence"])
def test_misspelled_value_field_is_rejected(zd, setter, field):
    values = setter.value(1)
    real = "max_clock_mhz" if field == "max_clock_khz" else next(iter(values))
    values[field] = values.pop(real)
    with Unchanged(zd):
        err = assert_error_startswith(zd.post(setter.path("0", True, **values)), 400,
                                      "Query deserialize error: ")
        assert f"unknown field `{field}`" in err


# ----- value parsing ------------------------------------------------------------------------

BOOL_ERROR = "Query deserialize error: provided string was not `true` or `false`"


@pytest.mark.parametrize("text", ["1", "0", "TRUE", "True", "yes", "", "true "])
@pytest.mark.parametrize("field", ["enabled", "block"])
def test_booleans_are_exactly_true_or_false(zd, text, field):
    params = {"gpu_ids": "0", "enabled": "true", "block": "true"}
    params[field] = text
    with Unchanged(zd):
        assert_error(zd.post(query("/gpu/set_persistence_mode", **params)), 400, BOOL_ERROR)


@pytest.mark.parametrize("text,reason", [
    ("abc", "invalid digit found in string"),
    ("-1", "invalid digit found in string"),
    ("1e5", "invalid digit found in string"),
    ("300000.0", "invalid digit found in string"),
    (" 300000", "invalid digit found in string"),
    ("", "cannot parse integer from empty string"),
    ("4294967296", "number too large to fit in target type"),
    ("99999999999999999999", "number too large to fit in target type"),
])
@pytest.mark.parametrize("route,field", [
    ("set_power_limit", "power_limit_mw"),
    ("set_gpu_locked_clocks", "max_clock_mhz"),
    ("set_mem_locked_clocks", "min_clock_mhz"),
])
def test_integers_are_unsigned_32_bit(zd, route, field, text, reason):
    params = {"gpu_ids": "0", "power_limit_mw": "300000"} if route == "set_power_limit" \
        else {"gpu_ids": "0", "min_clock_mhz": "1000", "max_clock_mhz": "1200"}
    params[field] = text
    params["block"] = "true"
    with Unchanged(zd):
        assert_error(zd.post(query(f"/gpu/{route}", **params)), 400,
                     f"Query deserialize error: {reason}")


def test_largest_u32_passes_parsing_and_is_out_of_the_gpus_range(zd):
    with Unchanged(zd):
        reply = zd.post(query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=2**32 - 1,
                              block=True))
        assert assert_json(reply, 400) == {"errors": {"0": (
            "Invalid request: power_limit_mw 4294967295 is outside the valid range "
            "200000-700000 mW of GPU 0")}}


# ----- gpu_ids --------------------------------------------------------------------------------

GPU_IDS_ERRORS = [
    ("", "gpu_ids must contain at least one GPU index"),
    ("%20", "gpu_ids must contain at least one GPU index"),
    ("0,,1", "gpu_ids contains an empty GPU index"),
    ("0,", "gpu_ids contains an empty GPU index"),
    (",0", "gpu_ids contains an empty GPU index"),
    ("0,%20,1", "gpu_ids contains an empty GPU index"),
    ("abc", "Invalid GPU index: abc"),
    ("0,x", "Invalid GPU index: x"),
    ("-1", "Invalid GPU index: -1"),
    ("1.0", "Invalid GPU index: 1.0"),
    ("0;1", "Invalid GPU index: 0;1"),
]


@pytest.mark.parametrize("gpu_ids,message", GPU_IDS_ERRORS)
def test_gpu_ids_errors_on_writes(zd, gpu_ids, message):
    with Unchanged(zd):
        reply = zd.post(f"/gpu/set_power_limit?gpu_ids={gpu_ids}&power_limit_mw=300000&block=true")
        assert_error(reply, 400, message)


@pytest.mark.parametrize("gpu_ids,message", GPU_IDS_ERRORS)
def test_gpu_ids_errors_on_reads(zd, gpu_ids, message):
    assert_error(zd.get(f"/gpu/get_power_limit?gpu_ids={gpu_ids}"), 400, message)


def test_gpu_ids_are_trimmed_sorted_and_deduplicated_on_writes(zd):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post("/gpu/set_power_limit?gpu_ids=%202%20,0,2,%200&power_limit_mw=420000"
                            "&block=true"))
    applied = sorted(zd.gpus.since(mark))
    assert applied == [(0, SET_POWER, [420000]), (2, SET_POWER, [420000])]


def test_gpu_ids_are_trimmed_sorted_and_deduplicated_on_reads(zd):
    reply = zd.get("/gpu/get_power_limit?gpu_ids=3,%201%20,3,1")
    assert list(assert_json(reply, 200)) == ["1", "3"]
    assert reply.text.index('"1"') < reply.text.index('"3"')


# ----- multi-GPU writes, resets -------------------------------------------------------------

def test_multi_gpu_write_changes_every_listed_gpu_and_only_those(zd):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post(query("/gpu/set_power_limit", gpu_ids="1,3", power_limit_mw=333000,
                                  block=True)))
    assert sorted(zd.gpus.since(mark)) == [(1, SET_POWER, [333000]), (3, SET_POWER, [333000])]
    limits = assert_json(zd.get("/gpu/get_power_limit?gpu_ids=1,3"), 200)
    assert limits == {"1": {"power_limit_mw": 333000}, "3": {"power_limit_mw": 333000}}


@pytest.mark.parametrize("op,calls", [
    ("reset_gpu_locked_clocks", [RESET_GPU_CLOCKS]),
    ("reset_mem_locked_clocks", [RESET_MEM_CLOCKS]),
    ("reset_locked_clocks", [RESET_GPU_CLOCKS, RESET_MEM_CLOCKS]),
])
def test_resets_apply_their_nvml_calls_on_every_listed_gpu(zd, op, calls):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post(query(f"/gpu/{op}", gpu_ids="0,1,2,3", block=True)))
    for gpu in GPUS:
        assert zd.gpus.since(mark, gpu) == [(gpu, call, []) for call in calls]


def test_reset_after_set_appends_to_the_history(zd):
    mark = zd.gpus.mark()
    assert_ok_empty(zd.post(query("/gpu/set_gpu_locked_clocks", gpu_ids="2", min_clock_mhz=1000,
                                  max_clock_mhz=1500, block=True)))
    assert_ok_empty(zd.post(query("/gpu/reset_gpu_locked_clocks", gpu_ids="2", block=False)))
    assert_ok_empty(zd.post(query("/gpu/reset_locked_clocks", gpu_ids="2", block=True)))
    assert zd.gpus.since(mark, 2) == [(2, SET_GPU_CLOCKS, [1000, 1500]),
                                      (2, RESET_GPU_CLOCKS, []),
                                      (2, RESET_GPU_CLOCKS, []), (2, RESET_MEM_CLOCKS, [])]


@pytest.mark.parametrize("op", ["reset_gpu_locked_clocks", "reset_mem_locked_clocks",
                                "reset_locked_clocks"])
def test_resets_take_no_value_fields(zd, op):
    with Unchanged(zd):
        err = assert_error_startswith(
            zd.post(query(f"/gpu/{op}", gpu_ids="0", lego=False)), 400, "Query deserialize error: ")
        assert "unknown field `lego`" in err
        assert_error(zd.post(query(f"/gpu/{op}", gpu_ids="0")), 400,
                     "Query deserialize error: missing field `block`")


# ----- the driver's range checks --------------------------------------------------------------

# A value the GPU would refuse answers 400 before anything is queued, whether or not the
# request waits (block=false used to answer 200 and fail later, seen only in the log).

@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("power_limit_mw", [199_999, 700_001, 0, 99_000])
def test_power_limit_outside_the_gpu_range_is_400_with_the_range(zd, power_limit_mw, block):
    with Unchanged(zd):
        reply = zd.post(query("/gpu/set_power_limit", gpu_ids="0,1",
                              power_limit_mw=power_limit_mw, block=block))
        assert assert_json(reply, 400) == {"errors": {
            str(g): f"Invalid request: power_limit_mw {power_limit_mw} is outside the valid "
                    f"range 200000-700000 mW of GPU {g}" for g in (0, 1)}}


@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("op,low,high,message", [
    ("set_gpu_locked_clocks", 344, 1980,
     "GPU clocks 344-1980 MHz are outside the supported range 345-1980 MHz of GPU 3"),
    ("set_gpu_locked_clocks", 345, 1981,
     "GPU clocks 345-1981 MHz are outside the supported range 345-1980 MHz of GPU 3"),
    ("set_gpu_locked_clocks", 1500, 1000, "min_clock_mhz 1500 is above max_clock_mhz 1000"),
    ("set_mem_locked_clocks", 2200, 3201,
     "memory clocks 2200-3201 MHz are outside the supported range 2201-3201 MHz of GPU 3"),
    ("set_mem_locked_clocks", 2201, 3202,
     "memory clocks 2201-3202 MHz are outside the supported range 2201-3201 MHz of GPU 3"),
    ("set_mem_locked_clocks", 3201, 2201, "min_clock_mhz 3201 is above max_clock_mhz 2201"),
])
def test_clocks_outside_the_supported_range_are_400_naming_it(zd, op, low, high, message,
                                                              block):
    with Unchanged(zd):
        reply = zd.post(query(f"/gpu/{op}", gpu_ids="3", min_clock_mhz=low, max_clock_mhz=high,
                              block=block))
        assert assert_json(reply, 400) == {"errors": {"3": f"Invalid request: {message}"}}


def test_clocks_at_the_ends_of_the_supported_range_are_accepted(zd):
    mark = zd.gpus.mark()
    for op, low, high in (("set_gpu_locked_clocks", 345, 1980),
                          ("set_mem_locked_clocks", 2201, 3201)):
        assert_ok_empty(zd.post(query(f"/gpu/{op}", gpu_ids="3", min_clock_mhz=low,
                                      max_clock_mhz=high, block=True)))
    assert [call[2] for call in zd.gpus.since(mark)] == [[345, 1980], [2201, 3201]]
    for op in ("reset_gpu_locked_clocks", "reset_mem_locked_clocks"):
        assert_ok_empty(zd.post(query(f"/gpu/{op}", gpu_ids="3", block=True)))


def test_supported_clocks_route_names_the_tables_and_ranges(zd):
    body = assert_json(zd.get("/gpu/get_supported_clocks?gpu_ids=3"), 200)
    gpu = body["3"]
    assert (gpu["min_gpu_clock_mhz"], gpu["max_gpu_clock_mhz"]) == (345, 1980)
    assert (gpu["min_mem_clock_mhz"], gpu["max_mem_clock_mhz"]) == (2201, 3201)
    assert set(gpu["graphics_clocks_mhz"]) == {str(m) for m in gpu["memory_clocks_mhz"]}
    every = [mhz for table in gpu["graphics_clocks_mhz"].values() for mhz in table]
    assert min(every) == 345 and max(every) == 1980
    assert set(assert_json(zd.get("/gpu/get_supported_clocks"), 200)) == {"0", "1", "2", "3"}
    assert_error(zd.get("/gpu/get_supported_clocks?gpu_ids=9"), 400, "GPU 9 not found")
    assert_error(zd.get("/gpu/get_supported_clocks?gpu=1"), 400,
                 "Query deserialize error: unknown field `gpu`, expected one of `gpu_ids`")


def test_bulk_power_limits_then_an_invalid_blocking_one(zd):
    """Upstream test_set_power_limit_bulk: the 10 valid values apply, the last one fails."""
    mark = zd.gpus.mark()
    values = [210_000 + 1_000 * i for i in range(10)]
    for value in values:
        assert_ok_empty(zd.post(query("/gpu/set_power_limit", gpu_ids="2", power_limit_mw=value,
                                      block=False)))
    reply = zd.post(query("/gpu/set_power_limit", gpu_ids="2", power_limit_mw=800_000,
                          block=True))
    assert assert_json(reply, 400) == {"errors": {"2": (
        "Invalid request: power_limit_mw 800000 is outside the valid range 200000-700000 mW "
        "of GPU 2")}}
    # The 400 came before the queue; this read runs behind the 10 writes (per-GPU FIFO).
    assert assert_json(zd.get("/gpu/get_power_limit?gpu_ids=2"), 200) == {
        "2": {"power_limit_mw": values[-1]}}
    assert zd.gpus.applied(mark, 2) == [[v] for v in values]


# ----- routes -----------------------------------------------------------------------------------

def test_unknown_route_is_404_json(zd):
    reply = zd.get("/gpu/set_power_limits")
    assert assert_json(reply, 404) == {"error": "404 Not Found"}


def test_get_on_a_write_route_is_rejected_and_changes_nothing(zd):
    with Unchanged(zd):
        reply = zd.get(query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=300000,
                             block=True))
        assert_json(reply, 405)
