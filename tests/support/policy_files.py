"""Helpers for the policy tests (unit and admin): policy files on disk and real Unix users/groups."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from zeusd.identity import Caller

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, useradd, mknod)")


def write_policy(directory, text: str, *, name: str = "policy.toml", mode: int = 0o644) -> str:
    """Write a policy file (owned by whoever runs the tests) and return its path."""
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(path, mode)
    return path


def unix_caller(uid: int, gid: int | None = None, groups: tuple[int, ...] = (),
                pid: int = 4242) -> Caller:
    return Caller(transport="unix", pid=pid, uid=uid, gid=gid if gid is not None else uid,
                  groups=groups)


@dataclass(frozen=True)
class UnixIds:
    """Two real groups and two real users created for a test session.

    ``member`` has primary group ``group_primary``; ``supplementary`` has its own
    primary group and is a supplementary member of ``group_extra``.
    """

    group_primary: str
    gid_primary: int
    group_extra: str
    gid_extra: int
    member: str
    member_uid: int
    supplementary: str
    supplementary_uid: int
    supplementary_gid: int


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid


def _uid(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def unix_ids():
    """Create real users/groups with random names; remove them afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create real users and groups")
    tag = secrets.token_hex(3)
    names = {k: f"zp{k}{tag}" for k in ("ga", "gb", "um", "us")}
    created_users, created_groups = [], []
    try:
        for key in ("ga", "gb"):
            _run("groupadd", names[key])
            created_groups.append(names[key])
        _run("useradd", "-M", "-s", "/usr/sbin/nologin", "-g", names["ga"], names["um"])
        created_users.append(names["um"])
        _run("useradd", "-M", "-s", "/usr/sbin/nologin", "-U", "-G", names["gb"], names["us"])
        created_users.append(names["us"])
        created_groups.append(names["us"])  # its user-private group
        member_uid, _ = _uid(names["um"])
        sup_uid, sup_gid = _uid(names["us"])
        yield UnixIds(names["ga"], _gid(names["ga"]), names["gb"], _gid(names["gb"]),
                      names["um"], member_uid, names["us"], sup_uid, sup_gid)
    finally:
        for user in created_users:
            subprocess.run(["userdel", user], capture_output=True)
        for group in created_groups:
            subprocess.run(["groupdel", group], capture_output=True)
