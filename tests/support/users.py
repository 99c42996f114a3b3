"""Throw-away Unix users and groups, and running a client as one of them."""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import select
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import pytest

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
        subprocess.run(["groupdel", group_name], capture_output=True, check=False)
        raise
    entry = pwd.getpwnam(user_name)
    return TempUser(user_name, entry.pw_uid, entry.pw_gid, group_name,
                    grp.getgrnam(group_name).gr_gid)


def delete_user(user: TempUser) -> None:
    subprocess.run(["userdel", user.name], capture_output=True, check=False)
    subprocess.run(["groupdel", user.group_name], capture_output=True, check=False)


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
         user_python(), "-c", script, json.dumps(requests)],
        capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": os.environ["PATH"]},
        check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"client as {user} failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


# -- accounts that clean up after themselves, and a client process per user ------------------


def user_python() -> str:
    """A Python that an unprivileged user may run: the test's own interpreter often lives
    under /root (pyenv, a venv), which other users cannot enter; the child scripts need only
    the standard library (and tests.support.client, read from the world-readable tree)."""
    candidates = [sys.executable, os.path.realpath(sys.executable),
                  "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""]
    for path in candidates:
        if path and _world_executable(path):
            return path
    raise RuntimeError("no Python interpreter that other users may execute")


def _world_executable(path: str) -> bool:
    """Every directory above ``path`` is world-searchable and the file world-executable."""
    real = os.path.realpath(path)
    if not os.path.isfile(real) or not os.stat(real).st_mode & 0o001:
        return False
    parent = os.path.dirname(real)
    while parent and parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    # a venv's bin/python also needs its pyvenv.cfg readable; the symlink's own dirs too
    parent = os.path.dirname(os.path.abspath(path))
    while parent and parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return True


@dataclass(frozen=True)
class Group:
    name: str
    gid: int


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int  # primary
    supplementary: tuple[int, ...] = ()


@dataclass
class Accounts:
    """Creates real groups and users with unique random names; ``cleanup()`` (or leaving the
    ``with`` block) removes every one it created, whatever happened in between."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def __enter__(self) -> Accounts:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def _name(self, key: str) -> str:
        return f"zp{key}{self.tag}"[:32]

    def group(self, key: str) -> Group:
        name = self._name(key)
        subprocess.run(["groupadd", name], check=True, capture_output=True)
        self.groups.append(name)
        return Group(name, grp.getgrnam(name).gr_gid)

    def user(self, key: str, *, primary: Group | None = None,
             supplementary: tuple[Group, ...] = ()) -> Account:
        """A user without a home; primary group ``primary`` or a new user-private group."""
        name = self._name(key)
        argv = ["useradd", "-M", "-s", "/usr/sbin/nologin"]
        argv += ["-g", primary.name] if primary is not None else ["-U"]
        if supplementary:
            argv += ["-G", ",".join(g.name for g in supplementary)]
        self.users.append(name)  # before useradd: a half-made user is removed too
        subprocess.run(argv + [name], check=True, capture_output=True)
        if primary is None:
            self.groups.append(name)  # its user-private group (userdel usually removes it)
        entry = pwd.getpwnam(name)
        return Account(name, entry.pw_uid, entry.pw_gid, tuple(g.gid for g in supplementary))

    def cleanup(self) -> None:
        for name in reversed(self.users):
            subprocess.run(["userdel", name], capture_output=True, check=False)
        for name in reversed(self.groups):
            subprocess.run(["groupdel", name], capture_output=True, check=False)
        self.users.clear()
        self.groups.clear()


_AGENT = r"""
import json, os, sys
sys.dont_write_bytecode = True
sys.path.insert(0, {repo!r})
from tests.support.client import Client, UnixHTTPConnection

connects = 0

class CountingConnection(UnixHTTPConnection):
    def connect(self):
        global connects
        connects += 1
        super().connect()

class AgentClient(Client):
    def _connect(self):
        return CountingConnection(self.address[5:], self.timeout)

client = AgentClient({address!r}, timeout=30)
ids = {{"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "pid": os.getpid()}}
print(json.dumps(ids), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    try:
        reply = client.request(request["method"], request["path"], body=request.get("body"))
        out = {{"status": reply.status, "content_type": reply.headers.get("content-type", ""),
                "body": reply.text}}
    except Exception as exc:
        out = {{"exception": repr(exc)}}
    out["connects"] = connects
    print(json.dumps(out), flush=True)
"""


@dataclass
class AgentReply:
    status: int
    content_type: str
    body: str
    connects: int  # connections the agent's client has opened so far

    def json(self):
        return json.loads(self.body)


class UserAgent:
    """A client process running as ``account`` (setpriv: real+effective uid and gid, its
    groups from the user database), holding ONE keep-alive connection (a
    tests.support.client.Client) to ``address``; ``request()`` goes through it.
    ``clear_groups``: no supplementary groups at all (only the primary gid)."""

    def __init__(self, account: Account, address: str, *, primary_gid: int | None = None,
                 clear_groups: bool = False, timeout_s: float = 30.0) -> None:
        self.account = account
        self.timeout_s = timeout_s
        script = _AGENT.format(repo=str(REPO), address=address)
        gid = account.gid if primary_gid is None else primary_gid
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid", str(account.uid), "--regid", str(gid),
             "--clear-groups" if clear_groups else "--init-groups",
             user_python(), "-I", "-c", script],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.pid = self.proc.pid  # setpriv execs Python: the caller's pid
        self.ids = json.loads(self._read_line())

    def _read_line(self) -> str:
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise TimeoutError(f"client as {self.account.name} did not answer")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    err = self.proc.stderr.read()
                    raise RuntimeError(f"client as {self.account.name} exited: {err}")
                return line

    def request(self, method: str, path: str, body=None) -> AgentReply:
        self.proc.stdin.write(json.dumps({"method": method, "path": path, "body": body}) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self._read_line())
        if "exception" in out:
            raise ConnectionError(f"client as {self.account.name}: {out['exception']}")
        return AgentReply(out["status"], out["content_type"], out["body"], out["connects"])

    def get(self, path: str) -> AgentReply:
        return self.request("GET", path)

    def post(self, path: str, body=None) -> AgentReply:
        return self.request("POST", path, body)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


# Tests that run requests as real Unix users created for the test.
needs_real_users = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("useradd", "groupadd", "setpriv")),
    reason="needs root, useradd/groupadd and setpriv to run requests as real users")
