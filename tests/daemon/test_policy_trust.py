"""The directories on the way to the policy are checked too, at start and on SIGHUP (#8.6).

Each hostile condition is staged against the real daemon: a directory others can write, a
directory owned by another user, a symlinked parent, the file moved away before SIGHUP, the
parent swapped for a symlink before SIGHUP. A refused reload keeps the policy in force: the
unprivileged user's request is decided exactly as before, and no GPU changes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

import pytest

from tests.support.checks import query
from tests.support.daemon import env_with_repo, zeusd_command
from tests.support.policy_daemon import (PolicyDaemon, install_policy, serve_expecting_failure,
                                         sha256, traversable_dir)
from tests.support.users import Accounts, UserAgent, needs_real_users

pytestmark = needs_real_users

NARROW = """\
version = 1
[defaults]
operations = ["gpu-read"]
[[rule]]
name = "narrow"
users = ["{user}"]
gpus = [0]
operations = ["set_power_limit", "gpu-read"]
power_limit_w = [200, 300]
"""
# What an attacker would swap in: every write for everyone.
PERMISSIVE = '[defaults]\noperations = ["all"]\n'
_SERIAL = itertools.count()
GOOD = '[defaults]\noperations = ["gpu-read"]\n'


@pytest.fixture(scope="module")
def accounts():
    with Accounts() as made:
        yield made


@pytest.fixture
def staged(accounts):
    """A daemon whose policy is <dir>/etc/policy.toml, and the user's connection."""
    user = accounts.user(f"tr{next(_SERIAL)}")
    daemon = PolicyDaemon(NARROW.format(user=user.name), policy_subdir="etc")
    agent = UserAgent(user, daemon.address)
    try:
        yield daemon, agent
    finally:
        agent.close()
        daemon.stop()
        assert "Traceback" not in daemon.log(), daemon.log()


def still_narrow(daemon, agent) -> None:
    """400 W is outside the narrow rule: denied by it, nothing applied."""
    mark = daemon.gpus.mark()
    reply = agent.post(query("/gpu/set_power_limit", gpu_ids=0, power_limit_mw=400_000,
                             block=True))
    assert reply.status == 403 and reply.json()["rule"] == "narrow", reply.body
    assert daemon.gpus.since(mark) == []


def rejected_reload(daemon, *fragments: str) -> str:
    in_force = daemon.policy_hash
    mark = daemon.log_mark()
    daemon.sighup()
    log = daemon.wait_for_log(r"policy reload rejected", mark)
    assert f"policy reload rejected, policy {in_force} stays in force: " in log, log
    for fragment in fragments:
        assert fragment in log, log
    return log


def test_file_moved_away_before_sighup_keeps_the_policy(staged):
    daemon, agent = staged
    still_narrow(daemon, agent)
    os.rename(daemon.policy_path, daemon.policy_path.with_name("moved.toml"))
    log = rejected_reload(daemon, f"{daemon.policy_path}: no such file (moved or deleted?)")
    assert "built-in" not in log
    still_narrow(daemon, agent)


def test_parent_swapped_for_a_symlink_before_sighup_is_refused(staged):
    daemon, agent = staged
    etc = daemon.policy_path.parent
    evil = daemon.dir / "evil"
    evil.mkdir(mode=0o755)
    install_policy(evil / "policy.toml", PERMISSIVE)
    etc.rename(daemon.dir / "etc.old")
    etc.symlink_to(evil)
    rejected_reload(daemon, f"refused: directory {etc} is a symbolic link (to {evil})",
                    f"--policy {evil}/policy.toml")
    still_narrow(daemon, agent)


def test_parent_made_writable_by_others_is_refused_on_reload(staged):
    daemon, agent = staged
    etc = daemon.policy_path.parent
    os.chmod(etc, 0o777)
    install_policy(daemon.policy_path, PERMISSIVE)
    rejected_reload(daemon, f"refused: directory {etc} is writable by group and others "
                            f"(mode 0777)", f"chmod go-w {etc}")
    still_narrow(daemon, agent)
    os.chmod(etc, 0o755)  # fixed: the same file now loads
    mark = daemon.log_mark()
    daemon.sighup()
    daemon.wait_for_log(rf"policy {sha256(PERMISSIVE)} in force.*reloaded", mark)


# -- at start ------------------------------------------------------------------------------


@pytest.fixture
def workdir():
    path = traversable_dir("zdt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def policy_in(directory, mode: int = 0o755):
    directory.mkdir(exist_ok=True)
    os.chmod(directory, mode)
    path = directory / "policy.toml"
    install_policy(path, GOOD)
    return path


def assert_refused_at_start(path, workdir, *fragments: str) -> None:
    result = serve_expecting_failure(path, workdir)
    assert result.returncode != 0, result.stdout
    for fragment in fragments:
        assert fragment in result.stdout, result.stdout
    assert "Traceback" not in result.stdout
    assert not (workdir / "never.sock").exists()


@pytest.mark.parametrize("mode, who", [(0o777, "group and others"), (0o775, "group"),
                                       (0o757, "others")])
def test_start_refuses_a_writable_parent(workdir, mode, who):
    path = policy_in(workdir / "etc", mode)
    assert_refused_at_start(path, workdir, f"{path}: refused: directory {workdir}/etc is "
                                           f"writable by {who} (mode {mode:04o})",
                            f"chmod go-w {workdir}/etc")


def test_start_refuses_a_writable_grandparent(workdir):
    (workdir / "a").mkdir()
    path = policy_in(workdir / "a" / "b")
    os.chmod(workdir / "a", 0o777)
    assert_refused_at_start(path, workdir, f"directory {workdir}/a is writable")


def test_start_refuses_a_parent_owned_by_another_user(workdir, accounts):
    user = accounts.user("own")
    path = policy_in(workdir / "etc")
    os.chown(workdir / "etc", user.uid, user.gid)
    assert_refused_at_start(path, workdir, f"directory {workdir}/etc is owned by uid "
                                           f"{user.uid} ({user.name})", "chown root")


def test_start_refuses_a_symlinked_parent(workdir):
    real = policy_in(workdir / "real")
    (workdir / "etc").symlink_to(real.parent)
    assert_refused_at_start(workdir / "etc" / "policy.toml", workdir,
                            f"directory {workdir}/etc is a symbolic link")


def policy_check(path):
    return subprocess.run(zeusd_command("policy", "check", str(path)), capture_output=True,
                          text=True, env=env_with_repo(), timeout=60, check=False)


def test_a_sticky_root_directory_is_trusted_but_not_its_users_subdirectories(workdir,
                                                                             accounts):
    """Like /tmp: others may create entries there but not replace root's."""
    path = policy_in(workdir / "shared", 0o1777)
    result = policy_check(path)
    assert result.returncode == 0 and f"{path}: valid" in result.stdout, result.stderr
    user = accounts.user("stk")
    os.chown(workdir / "shared", user.uid, user.gid)  # sticky, but not root's
    result = policy_check(path)
    assert result.returncode == 1
    assert f"directory {workdir}/shared is owned by uid {user.uid}" in result.stderr
    assert_refused_at_start(path, workdir, f"directory {workdir}/shared is owned by uid")
