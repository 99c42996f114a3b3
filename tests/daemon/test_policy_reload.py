"""Policy reload (SIGHUP) on the real daemon, seen through one keep-alive connection.

A user's client process holds a single connection (a tests.support.client.Client) for the
whole module; the policy file is replaced in place (write a new file, rename it over) and
the daemon is sent SIGHUP. The same connection must see the new decision, a bad file must
be rejected with the old policy still deciding, and the connection must never drop.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.checks import query
from tests.support.daemon import env_with_repo, zeusd_command
from tests.support.policy_daemon import (
    PolicyDaemon,
    install_policy,
    sha256,
    traversable_dir,
)
from tests.support.sim import SET_POWER
from tests.support.users import Accounts, UserAgent, needs_real_users

pytestmark = needs_real_users

TEMPLATE = """\
version = 1

[defaults]
operations = ["gpu-read"]

[[rule]]
name = "{name}"
users = ["{user}"]
gpus = [0]
operations = ["set_power_limit", "gpu-read"]
power_limit_w = [{low}, {high}]
"""

BAD_FILES = {
    "syntax error": ("version = 1\n[defaults\n", 0o644, ":2: TOML syntax error"),
    "unknown key": ('version = 1\n[defaults]\noperations = ["gpu-read"]\nbogus = 1\n', 0o644,
                    ':4: defaults.bogus: unknown key "bogus"'),
    "world-writable": ('[defaults]\noperations = ["all"]\n', 0o646,
                       ": refused: it is world-writable"),
}


def set_power(mw: int, gpu: int = 0) -> str:
    return query("/gpu/set_power_limit", gpu_ids=gpu, power_limit_mw=mw, block=True)


@pytest.fixture(scope="module")
def setup():
    with Accounts() as accounts:
        user = accounts.user("rl")
        policies = {
            "narrow": TEMPLATE.format(name="lab-narrow", user=user.name, low=200, high=300),
            "wide": TEMPLATE.format(name="lab-wide", user=user.name, low=200, high=450),
        }
        daemon = PolicyDaemon(policies["narrow"])
        agent = None
        try:
            agent = UserAgent(user, daemon.address)
            yield daemon, agent, policies
        finally:
            if agent is not None:
                agent.close()
            daemon.stop()
            assert "Traceback" not in daemon.log(), daemon.log()


def decide(daemon, agent, mw: int) -> tuple[int, str | None, list]:
    """(status, rule, setters applied) of one set_power_limit on the agent's connection."""
    mark = daemon.gpus.mark()
    reply = agent.post(set_power(mw))
    assert reply.connects == 1, "the client's connection was dropped and reopened"
    rule = reply.json()["rule"] if reply.status == 403 else None
    return reply.status, rule, daemon.gpus.since(mark)


def test_reload_changes_the_decision_on_the_same_connection(setup):
    daemon, agent, policies = setup
    assert daemon.policy_hash == sha256(policies["narrow"])
    assert decide(daemon, agent, 400_000) == (403, "lab-narrow", [])
    assert decide(daemon, agent, 290_000) == (200, None, [(0, SET_POWER, [290_000])])

    log = daemon.reload(policies["wide"])
    assert sha256(policies["wide"]) in log
    assert decide(daemon, agent, 400_000) == (200, None, [(0, SET_POWER, [400_000])])
    status, rule, applied = decide(daemon, agent, 460_000)
    assert (status, rule, applied) == (403, "lab-wide", [])
    reply = agent.get("/gpu/get_power_limit?gpu_ids=0")
    assert reply.json() == {"0": {"power_limit_mw": 400_000}} and reply.connects == 1
    # the caller's identity was taken once, at accept: the audit names the same process
    records = daemon.audit(0, caller_uid=str(agent.ids["uid"]), decision="allow")
    assert {r["caller_pid"] for r in records} == {str(agent.pid)}
    assert records[-1]["policy_hash"] == daemon.policy_hash


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_reload_is_rejected_and_the_old_policy_still_decides(setup, kind):
    daemon, agent, policies = setup
    if daemon.policy_hash != sha256(policies["wide"]):
        daemon.reload(policies["wide"])
    in_force = daemon.policy_hash
    before = [decide(daemon, agent, 420_000), decide(daemon, agent, 460_000)]
    assert [b[:2] for b in before] == [(200, None), (403, "lab-wide")]

    text, mode, message = BAD_FILES[kind]
    log = daemon.reload(text, expect_ok=False, mode=mode)
    assert f"policy reload rejected, policy {in_force} stays in force" in log, log
    assert f"{daemon.policy_path}{message}" in log, log

    after = [decide(daemon, agent, 420_000), decide(daemon, agent, 460_000)]
    assert [a[:2] for a in after] == [b[:2] for b in before]
    assert after[1][2] == []  # still denied: nothing applied
    # "all writes for everyone" in the rejected file would have let root-less writes on GPU 1
    mark = daemon.gpus.mark()
    reply = agent.post(set_power(300_000, gpu=1))
    assert reply.status == 403 and reply.json()["rule"] == "default", reply.body
    assert daemon.gpus.since(mark) == [] and reply.connects == 1


def test_reload_after_a_rejected_one_works(setup):
    daemon, agent, policies = setup
    daemon.reload(BAD_FILES["syntax error"][0], expect_ok=False)
    daemon.reload(policies["narrow"])
    assert decide(daemon, agent, 400_000) == (403, "lab-narrow", [])


# -- the admin's check, on the same files -----------------------------------------------------


@pytest.fixture
def check_dir():
    path = traversable_dir("zdc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def policy_check(path) -> subprocess.CompletedProcess:
    return subprocess.run(zeusd_command("policy", "check", str(path)), capture_output=True,
                          text=True, env=env_with_repo(), timeout=60, check=False)


def test_policy_check_accepts_the_good_file(setup, check_dir):
    _, _, policies = setup
    path = check_dir / "policy.toml"
    install_policy(path, policies["wide"])
    result = policy_check(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}: valid (sha256 {sha256(policies['wide'])})" in result.stdout
    assert "lab-wide" in result.stdout


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_policy_check_rejects_the_bad_file(check_dir, kind):
    text, mode, message = BAD_FILES[kind]
    path = check_dir / "policy.toml"
    install_policy(path, text, mode)
    result = policy_check(path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"invalid: {path}{message}"), result.stderr
