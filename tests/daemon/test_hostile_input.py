"""Input no client sends: numbers past every limit, odd digits, deep JSON. Each is a 400 or
404 with the contract's text, never a 500, and nothing reaches a GPU (issue #8.7)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.support.checks import Unchanged, assert_error, assert_json, assert_text_error

HUGE = "9" * 5000  # past Python's 4300-digit int() limit
LONG_ZEROS = "0" * 5000 + "1"


@pytest.fixture(scope="module")
def zd(start_zeusd):
    return start_zeusd(rapl=True)


@pytest.mark.parametrize("elem", [HUGE, "4294967296", "+2", "0_1", "\u0663", "\uff11", " 1 2"])
def test_write_ids_that_are_not_u32_indices_are_400(zd, elem):
    with Unchanged(zd):
        reply = zd.post(f"/gpu/set_power_limit?gpu_ids={quote(elem)}&power_limit_mw=300000"
                        "&block=true")
        assert_error(reply, 400, f"Invalid GPU index: {elem.strip()}")


def test_leading_zeros_are_still_one_index(zd):
    with Unchanged(zd):
        reply = zd.get(f"/gpu/get_power_limit?gpu_ids={LONG_ZEROS}")
    assert list(assert_json(reply, 200)) == ["1"]


@pytest.mark.parametrize("path, message", [
    (f"/gpu/get_power?gpu_ids=0,{HUGE}", f"Invalid GPU index: {HUGE}"),
    (f"/cpu/get_power?cpu_ids={HUGE}", f"Invalid CPU index: {HUGE}"),
    (f"/cpu/get_cumulative_energy?cpu=true&dram=true&cpu_ids={HUGE}",
     f"Invalid CPU index: {HUGE}"),
    (f"/gpu/stream_power?gpu_ids={HUGE}", f"Invalid GPU index: {HUGE}"),
])
def test_read_ids_past_any_limit_are_400(zd, path, message):
    assert_error(zd.get(path), 400, message)


@pytest.mark.parametrize("value, message", [
    (HUGE, "number too large to fit in target type"),
    ("4294967296", "number too large to fit in target type"),
    (LONG_ZEROS, None),  # = 1 mW: parsed, then outside the GPU's range
    ("+300000", "invalid digit found in string"),
    ("3_00000", "invalid digit found in string"),
])
def test_values_past_u32_are_400_before_int(zd, value, message):
    with Unchanged(zd):
        reply = zd.post(f"/gpu/set_power_limit?gpu_ids=0&power_limit_mw={quote(value)}"
                        "&block=true")
    if message is None:
        assert (reply.status, reply.json()) == (400, {"errors": {"0": (
            "Invalid request: power_limit_mw 1 is outside the valid range 200000-700000 mW "
            "of GPU 0")}})
    else:
        assert_error(reply, 400, f"Query deserialize error: {message}")


@pytest.mark.parametrize("segment", ["+2", "0_1", "\u0663", "\uff10", " 1", "-1", "0x1"])
def test_legacy_path_ids_use_the_query_rule(zd, segment):
    """Not digits: not a route (404), as `/gpu/-1/...` always was; nothing runs."""
    with Unchanged(zd):
        reply = zd.post(f"/gpu/{quote(segment)}/set_power_limit",
                        {"power_limit_mw": 300000, "block": True})
        assert reply.status == 404, reply.text
        assert zd.get(f"/cpu/{quote(segment)}/supports_dram_energy").status == 404


@pytest.mark.parametrize("digits", [HUGE, "4294967296"])
def test_legacy_path_ids_past_u32_are_invalid_indices(zd, digits):
    with Unchanged(zd):
        reply = zd.post(f"/gpu/{digits}/set_power_limit",
                        {"power_limit_mw": 300000, "block": True})
        assert assert_text_error(reply, 400) == f"Invalid GPU index: {digits}"
        assert assert_text_error(zd.get(f"/cpu/{digits}/supports_dram_energy"), 400) == \
            f"Invalid CPU index: {digits}"
        reply = zd.post(f"/cpu/{digits}/get_index_energy", {"cpu": True, "dram": True})
        assert assert_text_error(reply, 400) == f"Invalid CPU index: {digits}"


def test_legacy_path_ids_accept_the_plain_spelling(zd):
    assert zd.get("/cpu/00/supports_dram_energy").status == 200


@pytest.mark.parametrize("body, fragment", [
    ('{"power_limit_mw": %s, "block": true}' % HUGE,
     "invalid type: floating point `inf`, expected u32"),
    ('{"power_limit_mw": -%s, "block": true}' % HUGE,
     "invalid type: floating point `-inf`, expected u32"),
    ('{"power_limit_mw": 1e999999, "block": true}',
     "invalid type: floating point `inf`, expected u32"),
    ('{"power_limit_mw": NaN, "block": true}',
     "invalid type: floating point `nan`, expected u32"),
    ("[" * 5000 + "]" * 5000, "recursion limit exceeded"),
    ('{"a": ' + "{" * 200 + "}" * 200 + ', "power_limit_mw": 1, "block": true}',
     "recursion limit exceeded"),
])
def test_legacy_bodies_past_any_limit_are_400(zd, body, fragment):
    with Unchanged(zd):
        reply = zd.post("/gpu/0/set_power_limit", body.encode(),
                        headers={"Content-Type": "application/json"})
        text = assert_text_error(reply, 400)
    assert text.startswith("Json deserialize error: ") and fragment in text, text


def test_nesting_up_to_serdes_limit_is_still_parsed(zd):
    body = {"unused": json.loads("[" * 100 + "]" * 100), "power_limit_mw": 300000,
            "block": True}
    mark = zd.gpus.mark()
    assert zd.post("/gpu/0/set_power_limit", body).status == 200
    assert zd.gpus.since(mark) == [(0, "nvmlDeviceSetPowerManagementLimit", [300000])]
