"""Query-style CPU routes."""

from __future__ import annotations

from zeusd.errors import AggregatedError, DeviceFailure, UnknownDevice

from .fakes import ALICE, is_json_error


def test_cumulative_energy(rig):
    answer = {"0": {"cpu_energy_uj": 1, "dram_energy_uj": 2}}
    rig.cpu_reads.answers["cumulative_energy"] = answer
    result = rig.get("/cpu/get_cumulative_energy?cpu_ids=0&cpu=true&dram=false")
    assert (result.status_code, result.json) == (200, answer)
    rig.get("/cpu/get_cumulative_energy?cpu=false&dram=true")
    assert rig.cpu_reads.calls == [("cumulative_energy", ALICE, [0], True, False),
                                   ("cumulative_energy", ALICE, None, False, True)]


def test_cumulative_energy_errors(rig):
    assert is_json_error(rig.get("/cpu/get_cumulative_energy?cpu=true"), 400,
                         "Query deserialize error: missing field `dram`")
    assert rig.cpu_reads.calls == []
    rig.cpu_reads.answers["cumulative_energy"] = UnknownDevice("CPU 4 not found")
    assert is_json_error(rig.get("/cpu/get_cumulative_energy?cpu_ids=4&cpu=true&dram=true"),
                         400, "CPU 4 not found")


def test_power(rig):
    answer = {"timestamp_ms": 1, "power_mw": {"0": {"cpu_mw": 5, "dram_mw": None}}}
    rig.cpu_reads.answers["power"] = answer
    result = rig.get("/cpu/get_power?cpu_ids=0")
    assert (result.status_code, result.json) == (200, answer)
    assert rig.cpu_reads.calls == [("power", ALICE, [0])]


def test_power_errors(rig):
    assert is_json_error(rig.get("/cpu/get_power?cpu_ids=a"), 400, "Invalid CPU index: a")
    rig.cpu_reads.answers["power"] = AggregatedError({1: DeviceFailure("CPU 1 did not return "
                                                                       "the energy data")})
    result = rig.get("/cpu/get_power")
    assert (result.status_code, result.json) == (500, {"errors": {
        "1": "CPU 1 did not return the energy data"}})
