"""Throw-away Unix users and groups, and running a client as one of them."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
import uuid
from dataclasses import dataclass

from .daemon import REPO


@dataclass(frozen=True)
class TempUser:
    name: str
    uid: int
    gid: int
    group_name: str  # a supplementary group created with the user
    group_gid: int


def create_user() -> TempUser:
    """A new user (no home) in a new supplementary group. Needs root."""
    tag = uuid.uuid4().hex[:8]
    group_name, user_name = f"zdtg{tag}", f"zdtu{tag}"
    subprocess.run(["groupadd", group_name], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "-M", "-N", "-G", group_name, "-s", "/usr/sbin/nologin",
                        user_name], check=True, capture_output=True)
    except BaseException:
        subprocess.run(["groupdel", group_name], capture_output=True)
        raise
    entry = pwd.getpwnam(user_name)
    return TempUser(user_name, entry.pw_uid, entry.pw_gid, group_name,
                    grp.getgrnam(group_name).gr_gid)


def delete_user(user: TempUser) -> None:
    subprocess.run(["userdel", user.name], capture_output=True)
    subprocess.run(["groupdel", user.group_name], capture_output=True)


_CLIENT = """
import json, sys
sys.path.insert(0, {repo!r})
from tests.support.client import Client
out = []
c = Client({address!r})
for method, path in json.loads(sys.argv[1]):
    r = c.request(method, path)
    out.append({{"status": r.status, "body": r.text}})
print(json.dumps(out))
"""


def requests_as(user: str, address: str, requests: list[tuple[str, str]]) -> list[dict]:
    """Send ``requests`` (method, path) on one connection as ``user`` (setpriv with its
    groups); returns [{"status", "body"}]."""
    script = _CLIENT.format(repo=str(REPO), address=address)
    proc = subprocess.run(
        ["setpriv", "--reuid", user, "--regid", str(pwd.getpwnam(user).pw_gid), "--init-groups",
         sys.executable, "-c", script, json.dumps(requests)],
        capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": os.environ["PATH"]})
    if proc.returncode != 0:
        raise RuntimeError(f"client as {user} failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)
