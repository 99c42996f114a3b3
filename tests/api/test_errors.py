"""The one error table: every domain error's status, headers and body, in the JSON
shape and in the legacy text shape."""

from __future__ import annotations

import pytest

from zeusd.devices import errors as nvml
from zeusd.errors import (AggregatedError, DeviceFailure, GpuBusy, GpuLost, GpuTimedOut,
                          Internal, InvalidValue, NotEnabled, NvmlFailure, PolicyDenied,
                          QueueFull, ScopeMissing, ShuttingDown, StreamLimit, Unauthenticated,
                          UnknownDevice)

from .fakes import is_json_error, is_text_error

STATUS_OF = [
    (InvalidValue("bad value"), 400),
    (UnknownDevice("GPU index 9 does not exist."), 400),
    (Unauthenticated("Token has expired."), 401),
    (ScopeMissing("lacks scope"), 403),
    (PolicyDenied("denied by policy"), 403),
    (NotEnabled("not enabled"), 404),
    (QueueFull("Too many queued commands for GPU 0; retry later."), 429),
    (GpuBusy("GPU 0 is backed up"), 429),
    (StreamLimit("Too many open power streams (1)"), 429),
    (DeviceFailure("CPU 0: EIO"), 500),
    (Internal("Internal error: KeyError"), 500),
    (GpuLost("GPU 0 is lost"), 503),
    (ShuttingDown("zeusd is shutting down; nothing was queued"), 503),
    (GpuTimedOut("GPU 0 did not answer"), 504),
]
NVML_STATUS = [
    (nvml.NO_PERMISSION, 403),
    (nvml.GPU_IS_LOST, 503),
    (nvml.INVALID_ARGUMENT, 400),
    (nvml.NOT_SUPPORTED, 400),
    (nvml.UNKNOWN, 500),
    (nvml.TIMEOUT, 500),
    (nvml.RESET_REQUIRED, 500),
]


def nvml_failure(code: int) -> NvmlFailure:
    return NvmlFailure.of(nvml.NvmlError(code, "nvmlDeviceSetPowerManagementLimit"))


@pytest.mark.parametrize("error,status", STATUS_OF, ids=lambda v: type(v).__name__)
def test_each_error_type_has_its_status_in_json(rig, error, status):
    rig.gpu_reads.answers["power_limit"] = error
    result = rig.get("/gpu/get_power_limit")
    assert is_json_error(result, status, error.message)


@pytest.mark.parametrize("error,status", STATUS_OF, ids=lambda v: type(v).__name__)
def test_each_error_type_has_its_status_as_legacy_text(rig, error, status):
    rig.control.answers["change"] = error
    result = rig.post("/gpu/0/set_power_limit", json={"power_limit_mw": 1, "block": True})
    assert is_text_error(result, status, error.message)


@pytest.mark.parametrize("code,status", NVML_STATUS)
def test_nvml_codes_map_as_upstream(rig, code, status):
    rig.gpu_reads.answers["power"] = nvml_failure(code)
    result = rig.get("/gpu/get_power")
    assert is_json_error(result, status, nvml.NvmlError(code, "nvmlDeviceSetPowerManagementLimit")
                         .message)


def test_extra_fields_join_the_body(rig):
    rig.control.answers["change"] = PolicyDenied("no", rule="narrow", allowed_range=[1, 2])
    result = rig.post("/gpu/set_power_limit?gpu_ids=0&power_limit_mw=5&block=true")
    assert is_json_error(result, 403, "no", rule="narrow", allowed_range=[1, 2])


def test_unauthenticated_carries_the_bearer_challenge(rig):
    rig.gpu_reads.answers["power"] = Unauthenticated("Token has expired.")
    result = rig.get("/gpu/get_power")
    assert result.headers["www-authenticate"] == 'Bearer realm="zeusd"'
    rig.gpu_reads.answers["power"] = PolicyDenied("no")
    assert "www-authenticate" not in rig.get("/gpu/get_power").headers


def test_several_devices_answer_with_the_worst_status_and_each_message(rig):
    rig.gpu_reads.answers["power"] = AggregatedError(
        {2: GpuTimedOut("slow"), 0: nvml_failure(nvml.INVALID_ARGUMENT), 1: GpuLost("gone")})
    result = rig.get("/gpu/get_power")
    assert result.status_code == 504
    assert result.json == {"errors": {"0": nvml_failure(nvml.INVALID_ARGUMENT).message,
                                      "1": "gone", "2": "slow"}}
    assert list(result.json["errors"]) == ["0", "1", "2"]


def test_legacy_route_answers_one_device_error_as_that_error(rig):
    rig.control.answers["change"] = AggregatedError({3: GpuLost("GPU 3 is lost")})
    result = rig.post("/gpu/3/set_persistence_mode", json={"enabled": True, "block": True})
    assert is_text_error(result, 503, "GPU 3 is lost")


def test_legacy_route_joins_several_device_errors(rig):
    rig.control.answers["change"] = AggregatedError({0: GpuLost("a"), 1: QueueFull("b")})
    result = rig.post("/gpu/0/set_power_limit", json={"power_limit_mw": 1, "block": True})
    assert is_text_error(result, 503, "0: a; 1: b")


def test_unexpected_exception_is_500_without_a_traceback(rig, caplog):
    rig.gpu_reads.answers["power"] = KeyError("secret detail")
    result = rig.get("/gpu/get_power")
    assert is_json_error(result, 500, "Internal server error")
    assert "secret" not in result.text
    assert "KeyError" in caplog.text  # the operator still learns what it was
    rig.control.answers["change"] = ValueError("x")  # a legacy route too: JSON, no text
    result = rig.post("/gpu/0/set_power_limit", json={"power_limit_mw": 1, "block": True})
    assert is_json_error(result, 500, "Internal server error")


def test_falcon_routing_errors_take_our_json_shape(rig):
    assert is_json_error(rig.get("/no/such/route"), 404, "404 Not Found")
    result = rig.get("/gpu/set_power_limit")
    assert is_json_error(result, 405, "405 Method Not Allowed")
    assert "POST" in result.headers["allow"]
