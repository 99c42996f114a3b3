"""Every socket systemd passes is served: Unix and TCP together, several of each.

Real `systemd-socket-activate` binds the sockets and execs the real daemon with them, the
way zeusd.socket plus a `ListenStream=127.0.0.1:4938` drop-in does. Each socket must answer,
and the caller's identity must come from that socket: SO_PEERCRED on Unix, tokens or
anonymous on TCP. A TCP caller without a token must not be able to change anything.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from tests.support.checks import assert_json, query
from tests.support.client import Client
from tests.support.daemon import REPO, Daemon, write_policy
from tests.support.harness import short_dir
from tests.support.sim import SET_POWER, SimGpus
from tests.support.tokens import SIGNING_KEY, TOKEN_POLICY, bearer, sign

ACTIVATE = shutil.which("systemd-socket-activate")
pytestmark = pytest.mark.skipif(ACTIVATE is None,
                                reason="systemd-socket-activate is not installed")

# Root on the Unix socket may change power limits; TCP callers: "alice" (token) may too,
# anonymous callers only read.
POLICY = TOKEN_POLICY + """
[[rule]]
name = "root-on-socket"
users = ["root"]
operations = ["gpu-read", "cpu-read", "set_power_limit"]
"""


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def activated(tmp_path):
    """start(n_unix, n_tcp, signed) -> (daemon, unix paths, tcp addresses, gpus)."""
    started = []
    directory = short_dir("zmx-")

    def start(n_unix: int, n_tcp: int, signed: bool = False):
        unix = [str(directory / f"s{i}.sock") for i in range(n_unix)]
        tcp = [f"127.0.0.1:{free_tcp_port()}" for _ in range(n_tcp)]
        gpus = SimGpus(tmp_path, count=2, name="mixed")
        policy = write_policy(tmp_path / "policy.toml", POLICY)
        args = ["serve", "--gpu-backend", "simulated", "--simulated-gpus", str(gpus.spec_path),
                "--policy", str(policy), "--enable", "gpu-control,gpu-read"]
        if signed:
            key = tmp_path / "key"
            key.write_bytes(SIGNING_KEY)
            args += ["--signing-key-path", str(key)]
        listen = [arg for address in unix + tcp for arg in ("-l", address)]
        daemon = Daemon(tmp_path, args,
                        prefix=[ACTIVATE, *listen, "-E", f"PYTHONPATH={REPO}"])
        started.append(daemon)
        daemon.wait_for_socket(unix[0])  # the first connection makes it exec zeusd
        return daemon, unix, tcp, gpus

    yield start
    for daemon in started:
        assert daemon.stop() == 0, daemon.log()
    shutil.rmtree(directory, ignore_errors=True)


def discover_caller(address: str, headers=None) -> dict:
    client = Client(address)
    try:
        return assert_json(client.get("/discover", headers=headers), 200)["caller"]
    finally:
        client.close()


def set_limit(address: str, gpu: int, power_limit_mw: int, headers=None) -> int:
    client = Client(address)
    try:
        return client.post(query("/gpu/set_power_limit", gpu_ids=str(gpu),
                                 power_limit_mw=power_limit_mw, block=True),
                           headers=headers).status
    finally:
        client.close()


@pytest.mark.parametrize("n_unix,n_tcp", [(1, 1), (2, 2)])
def test_every_socket_answers_with_its_own_identity(activated, n_unix, n_tcp):
    daemon, unix, tcp, gpus = activated(n_unix, n_tcp)
    for path in unix:
        caller = discover_caller("unix:" + path)
        assert caller["transport"] == "unix"
        assert (caller["uid"], caller["pid"]) == (os.getuid(), os.getpid())
    for address in tcp:
        assert discover_caller(address) == {"transport": "tcp", "subject": None}
    log = daemon.log()
    for i, path in enumerate(unix):
        assert f"systemd fd {3 + i} (unix:{path})" in log
    for i, address in enumerate(tcp):
        assert f"systemd fd {3 + n_unix + i} (tcp:{address})" in log
    assert "WITHOUT --signing-key-path: every TCP caller is anonymous" in log


def test_anonymous_tcp_cannot_change_while_root_on_unix_can(activated):
    daemon, unix, tcp, gpus = activated(2, 2)
    mark = gpus.mark()
    for address in tcp:
        assert set_limit(address, 0, 301_000) == 403
    assert gpus.since(mark) == []  # the denied requests changed nothing
    assert set_limit("unix:" + unix[1], 1, 302_000) == 200
    assert gpus.since(mark) == [(1, SET_POWER, [302000])]


def test_tokens_on_tcp_and_peercred_on_unix_in_one_daemon(activated):
    daemon, unix, tcp, gpus = activated(1, 2, signed=True)
    alice = bearer(sign({"sub": "alice", "scopes": ["gpu-read", "gpu-control"]}))
    for address in tcp:
        assert discover_caller(address, alice) == {"transport": "tcp", "subject": "alice"}
    assert discover_caller("unix:" + unix[0])["uid"] == os.getuid()
    mark = gpus.mark()
    assert set_limit(tcp[1], 0, 303_000, alice) == 200
    assert gpus.since(mark) == [(0, SET_POWER, [303000])]
    assert "WITHOUT --signing-key-path" not in daemon.log()
