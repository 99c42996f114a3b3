"""Query-style GPU routes: what each hands its service, and its answers."""

from __future__ import annotations

import json

import pytest

from zeusd import operations as ops
from zeusd.api.gpu import READ_ROUTES
from zeusd.operations import GPU_OPERATIONS
from zeusd.errors import GpuLost, UnknownDevice
from zeusd.operations import GpuChange
from zeusd.service.reads import PerGpu

from .fakes import ALICE, is_json_error

VALUES = {"power_limit_mw": "300000", "enabled": "true", "min_clock_mhz": "900",
          "max_clock_mhz": "1500"}
TYPED = {"power_limit_mw": 300000, "enabled": True, "min_clock_mhz": 900, "max_clock_mhz": 1500}


def write_query(operation: str, gpu_ids: str = "1,0", block: str = "true") -> str:
    values = "".join(f"&{n}={VALUES[n]}" for n in GPU_OPERATIONS[operation].params)
    return f"/gpu/{operation}?gpu_ids={gpu_ids}&block={block}{values}"


@pytest.mark.parametrize("operation", list(GPU_OPERATIONS))
def test_each_write_hands_typed_changes_to_control(rig, operation):
    result = rig.post(write_query(operation, block="false"))
    assert (result.status_code, result.content) == (200, b"")
    typed = {n: TYPED[n] for n in GPU_OPERATIONS[operation].params}
    assert rig.control.calls == [("change", ALICE, [GpuChange(operation, 0, **typed),
                                                    GpuChange(operation, 1, **typed)], False)]


@pytest.mark.parametrize("query,message", [
    ("gpu_ids=0&block=true", "Query deserialize error: missing field `power_limit_mw`"),
    ("gpu_ids=0&block=yes&power_limit_mw=1",
     "Query deserialize error: provided string was not `true` or `false`"),
    ("gpu_ids=0&block=true&power_limit_mw=-1",
     "Query deserialize error: invalid digit found in string"),
    ("gpu_ids=0&block=true&power_limit_mw=4294967296",
     "Query deserialize error: number too large to fit in target type"),
    ("gpu_ids=&block=true&power_limit_mw=1", "gpu_ids must contain at least one GPU index"),
    ("gpu_ids=0,,1&block=true&power_limit_mw=1", "gpu_ids contains an empty GPU index"),
    ("gpu_ids=x&block=true&power_limit_mw=1", "Invalid GPU index: x"),
])
def test_malformed_write_is_400_and_reaches_no_service(rig, query, message):
    assert is_json_error(rig.post(f"/gpu/set_power_limit?{query}"), 400, message)
    assert rig.control.calls == []


def test_unknown_query_field_names_the_allowed_ones(rig):
    result = rig.post("/gpu/reset_locked_clocks?gpu_ids=0&block=true&x=1")
    assert is_json_error(result, 400, "Query deserialize error: unknown field `x`, expected one "
                                      "of `gpu_ids`, `block`")


def test_write_error_from_the_service(rig):
    rig.control.answers["change"] = UnknownDevice("GPU index 7 does not exist.")
    result = rig.post(write_query(ops.RESET_LOCKED_CLOCKS, gpu_ids="7"))
    assert is_json_error(result, 400, "GPU index 7 does not exist.")


@pytest.mark.parametrize("path,method", list(READ_ROUTES.items()))
def test_each_read_route_calls_its_method(rig, path, method):
    rig.gpu_reads.answers[method] = PerGpu({"0": {"value": 1}})
    result = rig.get(f"{path}?gpu_ids=0")
    assert (result.status_code, result.json) == (200, {"0": {"value": 1}})
    assert "zeusd-unavailable-gpus" not in result.headers
    assert rig.gpu_reads.calls == [(method, ALICE, [0])]
    rig.get(path)
    assert rig.gpu_reads.calls[-1] == (method, ALICE, None)  # no list: all GPUs


def test_gpus_left_out_of_a_read_are_named_in_a_header_not_the_body(rig):
    rig.gpu_reads.answers["power_limit"] = PerGpu({"0": {"power_limit_mw": 5}},
                                                  {2: "GPU 2 is lost"})
    result = rig.get("/gpu/get_power_limit")
    assert result.json == {"0": {"power_limit_mw": 5}}
    assert json.loads(result.headers["zeusd-unavailable-gpus"]) == {"2": "GPU 2 is lost"}


def test_read_errors(rig):
    assert is_json_error(rig.get("/gpu/get_power?gpu_ids=0&x=1"), 400,
                         "Query deserialize error: unknown field `x`, expected one of `gpu_ids`")
    assert rig.gpu_reads.calls == []
    rig.gpu_reads.answers["power"] = GpuLost("GPU 0 is lost")
    assert is_json_error(rig.get("/gpu/get_power?gpu_ids=0"), 503, "GPU 0 is lost")
