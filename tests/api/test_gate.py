"""The gate before every resource: API groups (404), then tokens (401/403). Its errors
are JSON even on a legacy route."""

from __future__ import annotations

import pytest

from zeusd import operations as ops
from zeusd.auth.tokens import issue

from .fakes import ALL_GROUPS, SIGNING_KEY, Rig, is_json_error


@pytest.mark.parametrize("method,path,group", [
    ("POST", "/gpu/set_power_limit?gpu_ids=0&power_limit_mw=1&block=true", ops.GPU_CONTROL),
    ("POST", "/gpu/0/set_power_limit", ops.GPU_CONTROL),
    ("GET", "/gpu/get_power", ops.GPU_READ),
    ("GET", "/gpu/stream_power", ops.GPU_READ),
    ("GET", "/cpu/get_power", ops.CPU_READ),
    ("GET", "/cpu/0/supports_dram_energy", ops.CPU_READ),
    ("GET", "/cpu/stream_power", ops.CPU_READ),
])
def test_disabled_group_is_404_json_and_reaches_no_service(method, path, group):
    rig = Rig(groups=ALL_GROUPS - {group})
    result = rig.request(method, path, json={"power_limit_mw": 1, "block": True})
    assert is_json_error(result, 404, f"API group '{group}' is not enabled on this server.")
    assert rig.control.calls == rig.gpu_reads.calls == rig.cpu_reads.calls == rig.hub.calls == []


@pytest.mark.parametrize("headers,message", [
    ({}, "Authentication required. Provide an Authorization: Bearer <token> header."),
    ({"Authorization": "Basic abc"}, "Invalid token: expected 'Bearer <token>'"),
])
def test_missing_or_malformed_token_is_401_with_a_challenge(headers, message):
    rig = Rig(signing_key=SIGNING_KEY)
    result = rig.post("/gpu/0/set_power_limit", headers=headers,
                      json={"power_limit_mw": 1, "block": True})
    assert is_json_error(result, 401, message)
    assert result.headers["www-authenticate"] == 'Bearer realm="zeusd"'
    assert rig.control.calls == []


def test_expired_and_forged_tokens_are_401():
    rig = Rig(signing_key=SIGNING_KEY)
    expired = issue(SIGNING_KEY, "alice", ["gpu-read"], -3600)
    assert is_json_error(rig.get("/gpu/get_power", headers={"Authorization": f"Bearer {expired}"}),
                         401, "Token has expired.")
    forged = issue(b"another-key-another-key-another!!", "alice", ["gpu-read"], 60)
    result = rig.get("/gpu/get_power", headers={"Authorization": f"Bearer {forged}"})
    assert result.status_code == 401 and result.json["error"].startswith("Invalid token: ")
    assert rig.gpu_reads.calls == []


def test_token_without_the_routes_scope_is_403():
    rig = Rig(signing_key=SIGNING_KEY)
    token = issue(SIGNING_KEY, "bob", ["gpu-read"], 60)
    result = rig.post("/gpu/set_persistence_mode?gpu_ids=0&enabled=true&block=true",
                      headers={"Authorization": f"Bearer {token}"})
    assert is_json_error(result, 403, "Token for user 'bob' lacks required scope 'gpu-control'. "
                                      "Token scopes: ['gpu-read']")
    assert rig.control.calls == []


def test_a_scoped_token_reaches_the_service_as_its_subject():
    rig = Rig(signing_key=SIGNING_KEY)
    token = issue(SIGNING_KEY, "carol", ["cpu-read"], 60)
    rig.cpu_reads.answers["power"] = {}
    assert rig.get("/cpu/get_power", headers={"Authorization": f"Bearer {token}"}).json == {}
    assert rig.cpu_reads.calls[0][1].token_subject == "carol"
