"""Who the caller is comes from the kernel; socket activation hands the daemon its socket."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from tests.support.checks import assert_json, query
from tests.support.client import Client
from tests.support.daemon import REPO, Daemon
from tests.support.harness import short_dir
from tests.support.sim import SET_POWER, SimGpus
from tests.support.users import create_user, delete_user, requests_as

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (users, setpriv)")


@pytest.fixture(scope="module")
def user():
    created = create_user()
    yield created
    delete_user(created)


# ----- a different Unix user on the socket ----------------------------------------------------

@pytest.fixture(scope="module")
def builtin(start_zeusd):
    """The built-in policy: everybody reads, only root changes."""
    return start_zeusd()


def test_discover_shows_the_callers_uid_and_groups(builtin, user):
    [reply] = requests_as(user.name, builtin.address, [("GET", "/discover")])
    assert reply["status"] == 200

    caller = json.loads(reply["body"])["caller"]
    assert caller["transport"] == "unix"
    assert (caller["uid"], caller["gid"]) == (user.uid, user.gid)
    # SO_PEERGROUPS: the supplementary group the user was put in, and the primary one.
    assert user.group_gid in caller["groups"] and user.gid in caller["groups"]
    assert caller["pid"] != os.getpid()


def test_non_root_change_is_denied_and_audited_with_the_callers_uid(builtin, user):
    mark = builtin.gpus.mark()
    path = query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=301_000, block=True)
    [read, write] = requests_as(user.name, builtin.address,
                                [("GET", "/gpu/get_power_limit?gpu_ids=0"), ("POST", path)])
    assert read["status"] == 200
    assert write["status"] == 403

    body = json.loads(write["body"])
    assert body["rule"] and "set_power_limit" in body["error"]
    assert builtin.gpus.since(mark) == []
    log = builtin.wait_for_log('new_value="301000 mW"')
    line = next(line for line in log.splitlines() if 'new_value="301000 mW"' in line)
    assert f"caller_uid={user.uid}" in line and "decision=deny" in line


POLICY = """
[[rule]]
name = "testers"
groups = ["{group}"]
operations = ["gpu-read", "set_power_limit"]
power_limit_w = [200, 400]
"""


@pytest.fixture(scope="module")
def by_group(start_zeusd, user, module_tmp):
    gpus = SimGpus(module_tmp, count=2, name="by-group", faults=[
        {"gpu": 1, "call": "nvmlDeviceSetPowerManagementLimit", "error": "NO_PERMISSION"}])
    return start_zeusd(gpus=gpus, policy_text=POLICY.format(group=user.group_name))


def test_supplementary_group_grants_a_change_and_the_audit_names_the_uid(by_group, user):
    mark = by_group.gpus.mark()
    ok = query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=302_000, block=True)
    too_high = query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=450_000, block=True)
    [applied, denied] = requests_as(user.name, by_group.address, [("POST", ok),
                                                                  ("POST", too_high)])
    assert applied == {"status": 200, "body": ""}
    assert denied["status"] == 403 and '"rule":"testers"' in denied["body"]
    assert by_group.gpus.since(mark) == [(0, SET_POWER, [302000])]
    log = by_group.wait_for_log('new_value="302000 mW"')
    line = next(line for line in log.splitlines() if 'new_value="302000 mW"' in line)
    assert f"caller_uid={user.uid}" in line and "decision=allow" in line and "rule=testers" in line


def test_user_outside_the_group_is_denied(by_group):
    mark = by_group.gpus.mark()
    [reply] = requests_as("nobody", by_group.address, [
        ("POST", query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=303_000, block=True))])
    assert reply["status"] == 403
    assert by_group.gpus.since(mark) == []


def test_non_blocking_failure_is_logged_with_the_other_users_uid(by_group, user):
    [reply] = requests_as(user.name, by_group.address, [
        ("POST", query("/gpu/set_power_limit", gpu_ids="1", power_limit_mw=304_000,
                       block=False))])
    assert reply == {"status": 200, "body": ""}
    text = f"non-blocking set_power_limit on GPU 1 for uid {user.uid} pid "
    assert text in by_group.wait_for_log(text)


# ----- socket activation ----------------------------------------------------------------------

ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_socket_activation_serves_the_inherited_socket_and_leaves_it(module_tmp):
    directory = short_dir()
    activated = str(directory / "activated.sock")
    own = directory / "own.sock"
    gpus = SimGpus(module_tmp, count=2, name="activated")
    daemon = Daemon(module_tmp, [
        "serve", "--gpu-backend", "simulated", "--simulated-gpus", str(gpus.spec_path),
        "--policy", str(module_tmp / "none.toml"), "--enable", "gpu-control,gpu-read",
        "--socket-path", str(own)],
        prefix=[ACTIVATE, "-l", activated, "-E", f"PYTHONPATH={REPO}"])
    try:
        daemon.wait_for_socket(activated)  # the first connection makes it exec zeusd
        client = Client("unix:" + activated)
        body = assert_json(client.get("/discover"), 200)
        assert body["gpu_ids"] == [0, 1] and body["caller"]["pid"] == os.getpid()
        mark = gpus.mark()
        assert client.post(query("/gpu/set_power_limit", gpu_ids="1", power_limit_mw=305_000,
                                 block=True)).status == 200
        assert gpus.since(mark) == [(1, SET_POWER, [305000])]
        client.close()
        assert "serving on systemd fd 3" in daemon.log()
        assert not own.exists()  # --socket-path is ignored under socket activation
    finally:
        code = daemon.stop()
    try:
        assert code == 0, daemon.log()
        # The socket belongs to systemd: zeusd must not delete it on exit.
        assert stat.S_ISSOCK(os.lstat(activated).st_mode)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
