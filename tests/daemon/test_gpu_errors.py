"""When a write is refused: NVML errors aggregated per GPU (status = the largest), and
(ours) policy denials that are decided before anything runs and change nothing."""

from __future__ import annotations

import pytest

from tests.support.checks import Unchanged, assert_json, assert_ok_empty, assert_text_error, query
from tests.support.sim import (RESET_GPU_CLOCKS, RESET_MEM_CLOCKS, SET_PERSISTENCE, SET_POWER,
                               SimGpus)


# ----- policy (ours): a denied request changes nothing, and is never deferred ------------------

POLICY = """
[defaults]
operations = ["gpu-read"]

[[rule]]
name = "lab"
anonymous = true
gpus = [0, 1]
operations = ["gpu-read", "set_power_limit", "reset_locked_clocks"]
power_limit_w = [250, 450]
"""


@pytest.fixture(scope="module")
def tcp_zd(start_zeusd):
    """TCP without tokens: every caller is anonymous; the policy limits it."""
    return start_zeusd(tcp=True, policy_text=POLICY)


def test_policy_allows_within_the_rule(tcp_zd):
    mark = tcp_zd.gpus.mark()
    assert_ok_empty(tcp_zd.post(query("/gpu/set_power_limit", gpu_ids="0,1",
                                      power_limit_mw=300_000, block=True)))
    assert sorted(tcp_zd.gpus.since(mark)) == [(0, SET_POWER, [300000]), (1, SET_POWER, [300000])]


@pytest.mark.parametrize("block", [True, False])
def test_policy_denial_outside_the_range_is_403_and_changes_nothing(tcp_zd, block):
    with Unchanged(tcp_zd):
        reply = tcp_zd.post(query("/gpu/set_power_limit", gpu_ids="0,1", power_limit_mw=500_000,
                                  block=block))
        body = assert_json(reply, 403)
    assert body["rule"] == "lab"
    assert body["error"].startswith("power_limit_mw 500000 is outside the range 250000-450000 "
                                    "that rule 'lab' allows")
    assert body["error"].endswith("on GPU 0")


def test_policy_denial_on_one_gpu_changes_none_of_the_listed_gpus(tcp_zd):
    """GPU 1 is allowed, GPU 2 is not (defaults): the whole request is decided first."""
    with Unchanged(tcp_zd):
        body = assert_json(tcp_zd.post(query("/gpu/set_power_limit", gpu_ids="1,2",
                                             power_limit_mw=300_000, block=False)), 403)
    assert "GPU 2" in body["error"] and body["rule"] != "lab"


def test_policy_denies_operations_the_rule_does_not_grant(tcp_zd):
    with Unchanged(tcp_zd):
        body = assert_json(tcp_zd.post(query("/gpu/set_persistence_mode", gpu_ids="0",
                                             enabled=False, block=True)), 403)
    assert body["rule"] == "lab" and "set_persistence_mode" in body["error"]


def test_policy_denial_on_a_legacy_route_is_plain_text_403(tcp_zd):
    with Unchanged(tcp_zd):
        text = assert_text_error(tcp_zd.post("/gpu/0/set_power_limit",
                                             {"power_limit_mw": 500_000, "block": False}), 403)
    assert text.startswith("power_limit_mw 500000 is outside the range 250000-450000 that "
                           "rule 'lab' allows")


def test_policy_denial_is_audited(tcp_zd):
    tcp_zd.post(query("/gpu/set_power_limit", gpu_ids="1", power_limit_mw=460_000, block=True))
    log = tcp_zd.wait_for_log("new_value=\"460000 mW\"")
    line = next(line for line in log.splitlines() if 'new_value="460000 mW"' in line)
    assert "decision=deny" in line and "rule=lab" in line and "caller_transport=tcp" in line


# ----- NVML errors, aggregated per GPU ----------------------------------------------------------

FAULTS = [
    {"gpu": 0, "call": "nvmlDeviceSetPersistenceMode", "error": "INVALID_ARGUMENT"},
    {"gpu": 1, "call": "nvmlDeviceSetPersistenceMode", "error": "NO_PERMISSION"},
    {"gpu": 0, "call": "nvmlDeviceSetPowerManagementLimit", "error": "INVALID_ARGUMENT"},
    {"gpu": 1, "call": "nvmlDeviceResetGpuLockedClocks", "error": "UNKNOWN"},
    {"gpu": 2, "call": "nvmlDeviceResetGpuLockedClocks", "error": "NOT_SUPPORTED"},
    {"gpu": 2, "call": "nvmlDeviceResetMemoryLockedClocks", "error": "NO_PERMISSION"},
    # (a lost GPU is left out of reads of all GPUs: tests/daemon/test_gpu_health.py)
    {"gpu": 2, "call": "nvmlDeviceGetPowerManagementLimit", "error": "UNKNOWN"},
]


@pytest.fixture(scope="module")
def faulty(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, profile=["h200", "h200", "h200",
                                        {"base": "h200", "energy_counter": False}],
                   count=None, faults=FAULTS, name="faulty")
    return start_zeusd(gpus=gpus)


def test_nvml_errors_are_aggregated_with_the_largest_status(faulty):
    mark = faulty.gpus.mark()
    reply = faulty.post(query("/gpu/set_persistence_mode", gpu_ids="0,1,2,3", enabled=False,
                              block=True))
    errors = assert_json(reply, 403)["errors"]
    assert list(errors) == ["0", "1"]
    assert errors["0"].startswith("NVML error: Invalid Argument (nvmlDeviceSetPersistenceMode)")
    assert errors["1"].startswith(
        "NVML error: Insufficient Permissions (nvmlDeviceSetPersistenceMode)")
    # The GPUs that succeeded stay changed; the others are as they were.
    assert sorted(faulty.gpus.since(mark)) == [(2, SET_PERSISTENCE, [False]),
                                               (3, SET_PERSISTENCE, [False])]
    persistence = assert_json(faulty.get("/gpu/get_persistence_mode"), 200)
    assert {k: v["enabled"] for k, v in persistence.items()} == {
        "0": True, "1": True, "2": False, "3": False}


@pytest.mark.parametrize("gpu_ids,status", [("0", 400), ("1", 403), ("0,1", 403),
                                            ("0,2", 400), ("1,3", 403)])
def test_status_is_the_largest_per_gpu_status(faulty, gpu_ids, status):
    reply = faulty.post(query("/gpu/set_persistence_mode", gpu_ids=gpu_ids, enabled=True,
                              block=True))
    errors = assert_json(reply, status)["errors"]
    assert list(errors) == [g for g in gpu_ids.split(",") if g in ("0", "1")]
    assert all(message.startswith("NVML error: ") for message in errors.values())


def test_reset_locked_clocks_attempts_the_memory_reset_after_a_failed_gpu_reset(faulty):
    mark = faulty.gpus.mark()
    reply = faulty.post(query("/gpu/reset_locked_clocks", gpu_ids="1", block=True))
    assert assert_json(reply, 500) == {"errors": {
        "1": "NVML error: Unknown Error (nvmlDeviceResetGpuLockedClocks)"}}
    assert faulty.gpus.since(mark) == [(1, RESET_MEM_CLOCKS, [])]


def test_reset_locked_clocks_reports_the_gpu_reset_error_when_both_fail(faulty):
    mark = faulty.gpus.mark()
    reply = faulty.post(query("/gpu/reset_locked_clocks", gpu_ids="1,2,3", block=True))
    errors = assert_json(reply, 500)["errors"]
    assert list(errors) == ["1", "2"]
    assert errors["2"].startswith("NVML error: Not Supported (nvmlDeviceResetGpuLockedClocks)")
    assert sorted(faulty.gpus.since(mark)) == [(1, RESET_MEM_CLOCKS, []),
                                               (3, RESET_GPU_CLOCKS, []),
                                               (3, RESET_MEM_CLOCKS, [])]


def test_driver_invalid_argument_for_an_in_range_power_limit_is_not_blamed_on_the_range(faulty):
    reply = faulty.post(query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=300_000,
                              block=True))
    message = assert_json(reply, 400)["errors"]["0"]
    assert message.startswith("NVML error: Invalid Argument (nvmlDeviceSetPowerManagementLimit)")
    assert "valid range" not in message and "300000" not in message


def test_read_errors_are_aggregated_per_gpu(faulty):
    reply = faulty.get("/gpu/get_power_limit")
    errors = assert_json(reply, 500)["errors"]
    assert list(errors) == ["2"]
    assert errors["2"] == "NVML error: Unknown Error (nvmlDeviceGetPowerManagementLimit)"
    assert assert_json(faulty.get("/gpu/get_power_limit?gpu_ids=0,3"), 200) == {
        "0": {"power_limit_mw": 700000}, "3": {"power_limit_mw": 700000}}


def test_gpu_without_an_energy_counter(faulty):
    gpus = assert_json(faulty.get("/discover"), 200)["gpus"]
    assert [g["cumulative_energy_available"] for g in gpus] == [True, True, True, False]
    reply = faulty.get("/gpu/get_cumulative_energy?gpu_ids=3")
    errors = assert_json(reply, 400)["errors"]
    assert list(errors) == ["3"]
    assert errors["3"].startswith("NVML error: Not Supported (nvmlDeviceGetTotalEnergyConsumption)")
    energy = assert_json(faulty.get("/gpu/get_cumulative_energy?gpu_ids=0,1"), 200)
    assert all(isinstance(v["energy_mj"], int) for v in energy.values())
