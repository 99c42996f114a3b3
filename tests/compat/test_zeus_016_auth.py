"""zeus 0.16.0's ZeusdClient over TCP with bearer tokens (docs/api.md "Authentication").

The client is configured the documented way (ZEUSD_HOST_PORT, ZEUSD_TOKEN): it reads
``auth_required`` from /discover, asks /auth/whoami for its scopes, and derives
``can_*`` and ``require_capabilities`` from them; errors reach the caller as
ZeusdError carrying zeusd's reply.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.sim import SET_POWER
from tests.support.tokens import SIGNING_KEY, TOKEN_POLICY
from zeusd.auth.tokens import issue

CLIENT = "zeus-0.16.0"
DRIVER = "drive_zeus_query.py"
POLICY = TOKEN_POLICY


def zeusd_options(tmp: Path) -> dict:
    """TCP, tokens signed with SIGNING_KEY, and a policy that lets alice's token set limits."""
    key = tmp / "signing.key"
    key.write_bytes(SIGNING_KEY)
    return {"tcp": True, "policy_text": POLICY, "args": ("--signing-key-path", str(key))}


def reply(result: dict, operation: str) -> dict:
    assert "error" in result, f"the client did not raise: {result}"
    error = result["error"]
    assert (error["module"], error["type"]) == ("zeus.device.exception", "ZeusdError"), error
    prefix = f"Failed to {operation}: "
    assert error["message"].startswith(prefix), error
    return json.loads(error["message"][len(prefix):])


def test_tokens_scopes_and_errors(compat):
    tokens = {
        "admin": issue(SIGNING_KEY, "alice", ["gpu-read", "gpu-control", "cpu-read"], 3600),
        "reader": issue(SIGNING_KEY, "bob", ["gpu-read"], 3600),
        "bad": issue(b"some other key, not the daemon's", "alice", ["gpu-read"], 3600),
        "none": None,
    }
    mark = compat.gpus.mark()
    out = compat.drive(DRIVER, CLIENT, "auth", tokens=tokens, power_limit_mw=310_000)

    admin = out["admin"]
    assert admin["auth_required"] is True and admin["auth_error"] is None
    assert admin["granted_scopes"] == ["cpu-read", "gpu-control", "gpu-read"]
    assert admin["can"] == [True, True, True]
    assert admin["require_control"] == {"ok": None}
    assert admin["power"]["ok"].keys() == {"0"}
    assert admin["cpu_energy"] == {"ok": [0]}
    assert admin["set"] == {"ok": None}

    reader = out["reader"]
    assert reader["auth_error"] is None and reader["granted_scopes"] == ["gpu-read"]
    assert reader["can"] == [True, False, False]
    assert reader["require_control"]["error"]["type"] == "ZeusdCapabilityError"
    assert "gpu-control" in reader["require_control"]["error"]["message"]
    assert reader["power"]["ok"].keys() == {"0"}
    assert reply(reader["set"], "set_power_limit") == {
        "error": "Token for user 'bob' lacks required scope 'gpu-control'. "
                 "Token scopes: ['gpu-read']"}
    assert reply(reader["cpu_energy"], "get_cpu_energy")["error"].startswith(
        "Token for user 'bob' lacks required scope 'cpu-read'.")

    bad = out["bad"]
    assert bad["auth_error"].startswith(f"Token rejected by Zeusd at {compat.host_port}: ")
    assert "Invalid token: " in bad["auth_error"]
    assert bad["granted_scopes"] == [] and bad["can"] == [False, False, False]
    assert reply(bad["power"], "get_gpu_power")["error"].startswith("Invalid token: ")

    none = out["none"]
    assert "requires authentication but no token was provided" in none["auth_error"]
    assert reply(none["set"], "set_power_limit") == {
        "error": "Authentication required. Provide an Authorization: Bearer <token> header."}

    assert compat.applied(mark) == [(0, SET_POWER, [310_000])]
