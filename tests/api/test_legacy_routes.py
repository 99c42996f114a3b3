"""Legacy path-style GPU and CPU routes: JSON bodies in, text/plain errors out."""

from __future__ import annotations

import pytest

from zeusd.api.legacy import LEGACY_OPERATIONS
from zeusd.operations import GPU_OPERATIONS
from zeusd.errors import PolicyDenied, UnknownDevice
from zeusd.operations import GpuChange

from .fakes import ALICE, is_json_error, is_text_error

BODY = {"power_limit_mw": 300000, "enabled": False, "min_clock_mhz": 900, "max_clock_mhz": 1500}


@pytest.mark.parametrize("path_op,operation", list(LEGACY_OPERATIONS.items()))
def test_each_legacy_write_hands_its_change_to_control(rig, path_op, operation):
    values = {n: BODY[n] for n in GPU_OPERATIONS[operation].params}
    result = rig.post(f"/gpu/2/{path_op}", json={**values, "block": True, "extra": 1})
    assert (result.status_code, result.content) == (200, b"")
    assert rig.control.calls == [("change", ALICE, [GpuChange(operation, 2, **values)], True)]


@pytest.mark.parametrize("body,message", [
    (b"", "Json deserialize error: expected value (Expecting value: line 1 column 1 (char 0))"),
    (b"[]", "Json deserialize error: invalid type: a sequence, expected a struct"),
    (b'{"block": true}', "Json deserialize error: missing field `power_limit_mw`"),
    (b'{"power_limit_mw": "1", "block": true}',
     'Json deserialize error: invalid type: string "1", expected u32'),
    (b'{"power_limit_mw": -1, "block": true}',
     "Json deserialize error: invalid value: integer `-1`, expected u32"),
    (b'{"power_limit_mw": 1, "block": 1}',
     "Json deserialize error: invalid type: integer `1`, expected a boolean"),
])
def test_malformed_legacy_body_is_400_text(rig, body, message):
    result = rig.post("/gpu/0/set_power_limit", body=body)
    assert is_text_error(result, 400, message)
    assert rig.control.calls == []


def test_legacy_index_past_u32_is_400_text_and_a_non_index_is_no_route(rig):
    result = rig.post("/gpu/4294967296/set_power_limit", json={"power_limit_mw": 1,
                                                               "block": True})
    assert is_text_error(result, 400, "Invalid GPU index: 4294967296")
    assert is_json_error(rig.post("/gpu/-1/set_power_limit", json={}), 404, "404 Not Found")
    assert rig.control.calls == []


def test_legacy_service_errors_are_text(rig):
    rig.control.answers["change"] = UnknownDevice("GPU index 5 does not exist.")
    result = rig.post("/gpu/5/reset_gpu_locked_clocks", json={"block": False})
    assert is_text_error(result, 400, "GPU index 5 does not exist.")


def test_legacy_cpu_dram(rig):
    rig.cpu_reads.answers["dram_available"] = True
    result = rig.get("/cpu/1/supports_dram_energy")
    assert (result.status_code, result.json) == (200, {"dram_available": True})
    assert rig.cpu_reads.calls == [("dram_available", ALICE, 1)]
    rig.cpu_reads.answers["dram_available"] = PolicyDenied("no CPU reads for uid 1001")
    assert is_text_error(rig.get("/cpu/1/supports_dram_energy"), 403,
                         "no CPU reads for uid 1001")
    assert is_text_error(rig.get("/cpu/99999999999/supports_dram_energy"), 400,
                         "Invalid CPU index: 99999999999")


def test_legacy_cpu_energy(rig):
    rig.cpu_reads.answers["index_energy"] = {"cpu_energy_uj": 5, "dram_energy_uj": None}
    result = rig.post("/cpu/0/get_index_energy", json={"cpu": True, "dram": False})
    assert (result.status_code, result.json) == (200, {"cpu_energy_uj": 5,
                                                       "dram_energy_uj": None})
    assert rig.cpu_reads.calls == [("index_energy", ALICE, 0, True, False)]
    assert is_text_error(rig.post("/cpu/0/get_index_energy", json={"cpu": True}), 400,
                         "Json deserialize error: missing field `dram`")
    rig.cpu_reads.answers["index_energy"] = UnknownDevice("CPU index 3 does not exist.")
    assert is_text_error(rig.post("/cpu/3/get_index_energy", json={"cpu": True, "dram": True}),
                         400, "CPU index 3 does not exist.")
