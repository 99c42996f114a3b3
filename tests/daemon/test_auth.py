"""Bearer-token auth over TCP (docs/api.md "Authentication"; upstream auth.rs tests) and `zeusd token issue`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import time

import pytest

from tests.support.checks import assert_error, assert_json, assert_ok_empty, group_disabled, query
from tests.support.daemon import env_with_repo, zeusd_command
from tests.support.sim import SET_POWER
from tests.support.tokens import SIGNING_KEY, TOKEN_POLICY, bearer, sign
from zeusd.auth.tokens import decode, issue

MISSING = "Authentication required. Provide an Authorization: Bearer <token> header."
CHALLENGE = 'Bearer realm="zeusd"'
SET_LIMIT = query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=300_000, block=True)
POLICY = TOKEN_POLICY


def token(scopes, sub="alice", expires_in_s=3600) -> str:
    return issue(SIGNING_KEY, sub, list(scopes), expires_in_s)


@pytest.fixture(scope="module")
def key_path(module_tmp):
    path = module_tmp / "signing.key"
    path.write_bytes(SIGNING_KEY)
    return path


@pytest.fixture(scope="module")
def auth(start_zeusd, key_path):
    return start_zeusd(tcp=True, rapl=True, policy_text=POLICY,
                       args=("--signing-key-path", str(key_path)))


@pytest.fixture(scope="module")
def auth_gpu_read_only(start_zeusd, key_path):
    return start_zeusd(tcp=True, enable="gpu-read", args=("--signing-key-path", str(key_path)))


@pytest.fixture(scope="module")
def open_tcp(start_zeusd):
    return start_zeusd(tcp=True, rapl=True, enable="gpu-read,cpu-read")


def assert_401(reply, message: str | None = None, prefix: str | None = None) -> None:
    body = assert_json(reply, 401)
    assert reply.headers.get("www-authenticate") == CHALLENGE
    assert list(body) == ["error"]
    if message is not None:
        assert body["error"] == message
    if prefix is not None:
        assert body["error"].startswith(prefix), body


# ----- service routes never need a token ----------------------------------------------------

def test_discover_no_auth_server(open_tcp):
    assert assert_json(open_tcp.get("/discover"), 200)["auth_required"] is False


def test_discover_auth_server_without_token(auth):
    body = assert_json(auth.get("/discover"), 200)
    assert body["auth_required"] is True
    assert body["caller"] == {"transport": "tcp", "subject": None}


def test_discover_auth_server_with_a_bad_token(auth):
    assert auth.get("/discover", headers=bearer("not-a-valid-jwt")).status == 200


@pytest.mark.parametrize("daemon", ["open_tcp", "auth"])
def test_time_needs_no_token(request, daemon):
    zd = request.getfixturevalue(daemon)
    assert isinstance(assert_json(zd.get("/time"), 200)["timestamp_ms"], int)


# ----- a disabled group is 404 before any auth check -----------------------------------------

def test_disabled_group_no_auth_returns_404(open_tcp):
    assert assert_json(open_tcp.post(SET_LIMIT), 404) == group_disabled("gpu-control")


@pytest.mark.parametrize("headers", [
    {},
    bearer("not-a-valid-jwt"),
    bearer(token(["gpu-read"])),
    bearer(token(["gpu-control"])),
], ids=["no-token", "invalid-token", "wrong-scope", "correct-scope"])
def test_disabled_group_on_auth_server_returns_404(auth_gpu_read_only, headers):
    reply = auth_gpu_read_only.post(SET_LIMIT, headers=headers)
    assert assert_json(reply, 404) == group_disabled("gpu-control")
    assert "www-authenticate" not in reply.headers


# ----- enabled groups ---------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, bearer(token(["gpu-read"])), bearer("garbage")],
                         ids=["no-token", "token", "garbage"])
def test_enabled_group_without_auth_ignores_tokens(open_tcp, headers):
    assert open_tcp.get("/gpu/get_power", headers=headers).status == 200


def test_no_token_is_401(auth):
    assert_401(auth.get("/gpu/get_power"), MISSING)
    assert_401(auth.post(SET_LIMIT), MISSING)
    assert_401(auth.get("/cpu/get_power"), MISSING)


def test_legacy_routes_need_a_token_too(auth):
    mark = auth.gpus.mark()
    assert_401(auth.post("/gpu/0/set_power_limit", {"power_limit_mw": 300_000, "block": True}),
               MISSING)
    assert auth.gpus.since(mark) == []


@pytest.mark.parametrize("header", [
    "Bearer not-a-valid-jwt",
    "Bearer a.b.c",
    "Bearer " + sign({"sub": "alice", "scopes": ["gpu-read"]}, key=b"another-key"),
    "Bearer " + sign({"sub": "alice", "scopes": ["gpu-read", "root"]}),
    "Bearer " + sign({"sub": "alice"}),
    "Bearer " + sign({"scopes": ["gpu-read"]}),
    "Bearer " + sign({"sub": "alice", "scopes": ["gpu-read"]},
                     header={"typ": "JWT", "alg": "none"}),
    "Bearer " + sign({"sub": "alice", "scopes": ["gpu-read"]},
                     header={"typ": "JWT", "alg": "HS512"}),
    "bearer " + token(["gpu-read"]),
    "Bearer  " + token(["gpu-read"]),
    "Basic YWxpY2U6cGFzcw==",
    "Bearer",
], ids=["malformed", "bad-segments", "wrong-key", "unknown-scope", "no-scopes", "no-sub",
        "alg-none", "alg-hs512", "lowercase-bearer", "two-spaces", "basic", "bare-bearer"])
def test_invalid_token_is_401(auth, header):
    assert_401(auth.get("/gpu/get_power", headers={"Authorization": header}),
               prefix="Invalid token: ")


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


DEEP = b"[" * 5000 + b"]" * 5000
DEEP_PAYLOAD = b"[" * 2000 + b"]" * 2000  # past Python's recursion limit, within the token size


def _signed_raw(payload: bytes) -> str:
    """A token whose payload bytes are ``payload``, correctly signed with our key."""
    head = _segment(b'{"typ":"JWT","alg":"HS256"}') + "." + _segment(payload)
    mac = hmac.new(SIGNING_KEY, head.encode(), hashlib.sha256).digest()
    return head + "." + _segment(mac)


@pytest.mark.parametrize("header, reason", [
    # PyJWT reads the header before it can check anything: its size is bounded first.
    (_segment(DEEP) + ".e30." + _segment(b"x" * 32), "InvalidToken"),
    ("a" * 9000, "InvalidToken"),
    # A payload is parsed only once its signature is ours: a forged deep one is never read.
    (sign({"sub": "a", "scopes": []}).rsplit(".", 2)[0] + "." + _segment(DEEP_PAYLOAD) + "."
     + _segment(b"x" * 32), "InvalidSignature"),
    # Signed with our key (only an admin could): still a 401, never a 500.
    (_signed_raw(DEEP_PAYLOAD), "JSON error: expected a map of claims"),
], ids=["deep-header", "huge-token", "forged-deep-payload", "signed-deep-payload"])
def test_hostile_tokens_are_401_before_their_payload_is_parsed(auth, header, reason):
    mark = auth.gpus.mark()
    for path in ("/gpu/get_power", "/auth/whoami", SET_LIMIT):
        reply = auth.http.request("POST" if path == SET_LIMIT else "GET", path,
                                  headers=bearer(header))
        assert_401(reply, f"Invalid token: {reason}")
    assert auth.gpus.since(mark) == []


def test_expired_token_is_401(auth):
    expired = sign({"sub": "alice", "scopes": ["gpu-read"], "exp": 1_000_000_000})
    assert_401(auth.get("/gpu/get_power", headers=bearer(expired)), "Token has expired.")


def test_expiry_has_sixty_seconds_of_leeway(auth):
    now = int(time.time())
    recent = sign({"sub": "alice", "scopes": ["gpu-read"], "exp": now - 20})
    assert auth.get("/gpu/get_power", headers=bearer(recent)).status == 200
    old = sign({"sub": "alice", "scopes": ["gpu-read"], "exp": now - 600})
    assert_401(auth.get("/gpu/get_power", headers=bearer(old)), "Token has expired.")


def test_wrong_scope_is_403(auth):
    mark = auth.gpus.mark()
    reply = auth.post(SET_LIMIT, headers=bearer(token(["gpu-read"])))
    assert_error(reply, 403, "Token for user 'alice' lacks required scope 'gpu-control'. "
                             "Token scopes: ['gpu-read']")
    assert auth.gpus.since(mark) == []


def test_cross_device_scope_is_403(auth):
    reply = auth.get("/cpu/get_power", headers=bearer(token(["gpu-read"])))
    assert_error(reply, 403, "Token for user 'alice' lacks required scope 'cpu-read'. "
                             "Token scopes: ['gpu-read']")
    reply = auth.get("/gpu/get_power", headers=bearer(token(["cpu-read", "gpu-control"], "bob")))
    assert_error(reply, 403, "Token for user 'bob' lacks required scope 'gpu-read'. "
                             "Token scopes: ['cpu-read', 'gpu-control']")


def test_correct_scope_gpu_read(auth):
    assert auth.get("/gpu/get_power", headers=bearer(token(["gpu-read"]))).status == 200


def test_correct_scope_gpu_control(auth):
    mark = auth.gpus.mark()
    assert_ok_empty(auth.post(SET_LIMIT, headers=bearer(token(["gpu-control"]))))
    assert auth.gpus.since(mark) == [(0, SET_POWER, [300000])]


def test_correct_scope_cpu_read(auth):
    headers = bearer(token(["cpu-read"]))
    assert auth.get("/cpu/get_cumulative_energy?cpu=true&dram=true", headers=headers).status == 200


def test_no_expiry_token_is_accepted(auth):
    assert auth.get("/gpu/get_power", headers=bearer(token(["gpu-read"], expires_in_s=None))) \
        .status == 200


def test_scope_is_not_a_policy_grant(auth):
    """(ours) a token with gpu-control still needs the policy: bob has no rule."""
    mark = auth.gpus.mark()
    body = assert_json(auth.post(SET_LIMIT, headers=bearer(token(["gpu-control"], "bob"))), 403)
    assert "rule" in body and body["rule"] != "alice"
    assert auth.gpus.since(mark) == []


# ----- /auth/whoami ---------------------------------------------------------------------------

def test_whoami_no_auth_server_returns_404(open_tcp):
    assert_error(open_tcp.get("/auth/whoami"), 404, "Authentication is not enabled on this server.")
    assert_error(open_tcp.get("/auth/whoami", headers=bearer(token(["gpu-read"]))), 404,
                 "Authentication is not enabled on this server.")


def test_whoami_no_token_returns_401(auth):
    assert_401(auth.get("/auth/whoami"), MISSING)


def test_whoami_invalid_token_returns_401(auth):
    assert_401(auth.get("/auth/whoami", headers=bearer("not-a-valid-jwt")),
               prefix="Invalid token: ")


def test_whoami_valid_token(auth):
    valid = sign({"sub": "alice", "scopes": ["gpu-read", "gpu-control"], "exp": 9_999_999_999})
    assert assert_json(auth.get("/auth/whoami", headers=bearer(valid)), 200) == {
        "sub": "alice", "scopes": ["gpu-read", "gpu-control"], "exp": 9_999_999_999}


def test_whoami_no_expiry_token(auth):
    body = assert_json(auth.get("/auth/whoami", headers=bearer(token(["cpu-read"], "carol",
                                                                     None))), 200)
    assert body == {"sub": "carol", "scopes": ["cpu-read"]}


def test_whoami_needs_no_particular_scope(auth):
    assert assert_json(auth.get("/auth/whoami", headers=bearer(token([], "dave"))), 200) == {
        "sub": "dave", "scopes": [], "exp": pytest.approx(time.time() + 3600, abs=120)}


# ----- zeusd token issue ------------------------------------------------------------------------

def token_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(zeusd_command("token", "issue", *args), capture_output=True, text=True,
                          env=env_with_repo(), timeout=60)


def test_token_issue_prints_a_token_the_daemon_accepts(auth, key_path):
    proc = token_cli("--signing-key-path", str(key_path), "--user", "alice",
                     "--scope", "gpu-read,gpu-control", "--expires", "7d")
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip()
    assert "\n" not in printed
    claims = decode(SIGNING_KEY, printed)
    assert (claims.sub, claims.scopes) == ("alice", ("gpu-read", "gpu-control"))
    assert claims.exp == pytest.approx(time.time() + 7 * 86400, abs=120)
    assert assert_json(auth.get("/auth/whoami", headers=bearer(printed)), 200)["sub"] == "alice"


@pytest.mark.parametrize("expires,seconds", [("1h", 3600), ("30d", 30 * 86400), ("never", None)])
def test_token_issue_durations(key_path, expires, seconds):
    proc = token_cli("--signing-key-path", str(key_path), "--user", "u", "--scope", "cpu-read",
                     "--expires", expires)
    assert proc.returncode == 0, proc.stderr
    claims = decode(SIGNING_KEY, proc.stdout.strip())
    if seconds is None:
        assert claims.exp is None
    else:
        assert claims.exp == pytest.approx(time.time() + seconds, abs=120)


@pytest.mark.parametrize("args,fragment", [
    (("--scope", "gpu-read", "--expires", "soon"), "invalid duration 'soon'"),
    (("--scope", "gpu-admin"), "unknown scope 'gpu-admin'"),
    (("--scope", "gpu-read", "--signing-key-path", "/nonexistent/key"), "/nonexistent/key"),
])
def test_token_issue_errors_are_one_line_and_exit_2(key_path, args, fragment):
    proc = token_cli("--signing-key-path", str(key_path), "--user", "alice", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
