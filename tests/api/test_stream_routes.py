"""GET /gpu/stream_power and /cpu/stream_power: SSE bodies and their errors."""

from __future__ import annotations

import json

import pytest

from zeusd.errors import PolicyDenied, StreamLimit, UnknownDevice

from .fakes import ALICE, Rig, is_json_error

GPU_EVENTS = [{"timestamp_ms": 10, "gpu_id": 0, "power_mw": 100},
              {"timestamp_ms": 20, "gpu_id": 1, "power_mw": 200}]


def events_of(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.split("\n\n") if line]


def test_gpu_stream_sends_each_event(rig):
    rig.hub.events = GPU_EVENTS
    rig.hub.answers["start"] = [0, 1]
    result = rig.get("/gpu/stream_power?gpu_ids=1,0")
    assert result.status_code == 200
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["cache-control"] == "no-cache"
    assert events_of(result.text) == GPU_EVENTS
    assert rig.hub.calls == [("start", ALICE, "gpu", [0, 1])]
    assert rig.hub.closed == [("gpu", [0, 1])]  # the body's close() released it


def test_snapshot_stream_accumulates_every_device(rig):
    rig.hub.events = GPU_EVENTS
    rig.hub.answers["start"] = [0, 1]
    result = rig.get("/gpu/stream_power?snapshot=true")
    assert events_of(result.text) == [{"timestamp_ms": 10, "power_mw": {"0": 100}},
                                      {"timestamp_ms": 20, "power_mw": {"0": 100, "1": 200}}]
    assert rig.hub.calls == [("start", ALICE, "gpu", None)]


def test_cpu_stream(rig):
    event = {"timestamp_ms": 1, "cpu_id": 0, "cpu_mw": 5, "dram_mw": None}
    rig.hub.events = [event]
    rig.hub.answers["start"] = [0]
    result = rig.get("/cpu/stream_power?cpu_ids=0&snapshot=true")
    assert events_of(result.text) == [{"timestamp_ms": 1,
                                       "power_mw": {"0": {"cpu_mw": 5, "dram_mw": None}}}]
    assert rig.hub.calls == [("start", ALICE, "cpu", [0])]


def test_no_device_sends_a_keepalive_at_once(rig):
    rig.hub.answers["start"] = []
    assert rig.get("/gpu/stream_power").text == ": keepalive\n\n"


@pytest.mark.parametrize("error,status", [
    (UnknownDevice("Unknown GPU indices: [4]. Available: [0, 1]"), 400),
    (PolicyDenied("uid 1001 may not read GPU 4", rule="default"), 403),
    (StreamLimit("Too many open power streams (6); close one or retry later."), 429),
])
def test_stream_refusals_are_json_and_open_nothing(rig, error, status):
    rig.hub.answers["start"] = error
    result = rig.get("/gpu/stream_power?gpu_ids=4")
    assert is_json_error(result, status, error.message, **error.extra)
    assert rig.hub.closed == []


def test_malformed_stream_query(rig):
    assert is_json_error(rig.get("/cpu/stream_power?gpu_ids=0"), 400,
                         "Query deserialize error: unknown field `gpu_ids`, expected one of "
                         "`cpu_ids`, `snapshot`")
    assert is_json_error(rig.get("/gpu/stream_power?snapshot=1"), 400,
                         "Query deserialize error: provided string was not `true` or `false`")
    assert rig.hub.calls == []


def test_without_a_hub_there_is_no_stream_route():
    assert is_json_error(Rig(streams=False).get("/gpu/stream_power"), 404, "404 Not Found")
