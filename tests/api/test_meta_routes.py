"""/discover, /time and /auth/whoami: no API group, no token needed."""

from __future__ import annotations

import time

from zeusd.auth.tokens import issue

from .fakes import ALICE, SIGNING_KEY, Rig, is_json_error


def test_discover_is_the_discovery_services_answer(rig):
    rig.discovery.answers["describe"] = {"gpus": [], "api_version": "x"}
    result = rig.get("/discover")
    assert (result.status_code, result.json) == (200, {"gpus": [], "api_version": "x"})
    assert rig.discovery.calls == [("describe", ALICE)]


def test_discover_with_no_group_enabled_and_a_bad_token():
    rig = Rig(groups=(), signing_key=SIGNING_KEY)
    rig.discovery.answers["describe"] = {}
    result = rig.get("/discover", headers={"Authorization": "Bearer nonsense"})
    assert result.status_code == 200  # a bad token is ignored on service routes
    assert rig.discovery.calls == [("describe", ALICE)]


def test_discover_sees_the_token_subject():
    rig = Rig(signing_key=SIGNING_KEY)
    token = issue(SIGNING_KEY, "alice", ["gpu-read"], 60)
    rig.get("/discover", headers={"Authorization": f"Bearer {token}"})
    caller = rig.discovery.calls[0][1]
    assert (caller.token_subject, caller.token_scopes) == ("alice", ("gpu-read",))


def test_time(rig):
    before = int(time.time() * 1000)
    result = rig.get("/time")
    assert result.status_code == 200
    assert before <= result.json["timestamp_ms"] <= int(time.time() * 1000)


def test_whoami_without_tokens_is_404(rig):
    assert is_json_error(rig.get("/auth/whoami"), 404,
                         "Authentication is not enabled on this server.")


def test_whoami_with_a_token():
    rig = Rig(signing_key=SIGNING_KEY)
    token = issue(SIGNING_KEY, "alice", ["gpu-read", "cpu-read"], None)
    result = rig.get("/auth/whoami", headers={"Authorization": f"Bearer {token}"})
    assert (result.status_code, result.json) == (200, {"sub": "alice",
                                                       "scopes": ["gpu-read", "cpu-read"]})
    result = rig.get("/auth/whoami")
    assert is_json_error(result, 401, "Authentication required. Provide an Authorization: "
                                      "Bearer <token> header.")
