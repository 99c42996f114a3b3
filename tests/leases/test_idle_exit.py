"""--exit-idle-after: the daemon exits when it has no lease, no stream and no request for that
long, and a socket kept listening (as zeusd.socket does) starts it again on the next
connection. A lease keeps it running until the lease is restored."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.support.client import Client
from tests.support.daemon import REPO, env_with_repo, zeusd_command
from tests.support.policy_daemon import traversable_dir
from tests.support.sim import SimGpus
from tests.support.users import Accounts, needs_real_users

from .daemon_world import POLICY, WAIT_S, Job, set_power

IDLE = "0.5s"


def activated(listener: socket.socket, argv: list[str], log) -> subprocess.Popen:
    """Start zeusd as systemd does for a .socket: the listening socket as fd 3, LISTEN_FDS=1,
    LISTEN_PID the child's own pid (set by the shell that execs it)."""
    fd = listener.fileno()

    def as_fd_3():  # runs before the child closes the fds not in pass_fds: keep 3
        os.dup2(fd, 3)

    env = {**env_with_repo(), "LISTEN_FDS": "1"}
    return subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *zeusd_command(*argv)],
                            env=env, preexec_fn=as_fd_3, pass_fds=tuple({fd, 3}), stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(REPO))


@pytest.fixture
def world(tmp_path):
    directory = traversable_dir("zdi-")
    path = str(directory / "zeusd.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o666)
    listener.listen(16)
    gpus = SimGpus(directory, count=1)
    yield directory, path, listener, gpus
    listener.close()
    shutil.rmtree(directory, ignore_errors=True)


def argv(directory, gpus, policy) -> list[str]:
    return ["serve", "--gpu-backend", "simulated", "--simulated-gpus", str(gpus.spec_path),
            "--policy", str(policy), "--lease-dir", str(directory / "leases"),
            "--exit-idle-after", IDLE]


def test_idle_exit_and_the_next_connection_starts_it_again(world):
    directory, path, listener, gpus = world
    log = open(directory / "zeusd.log", "wb")
    first = activated(listener, argv(directory, gpus, directory / "none.toml"), log)
    assert Client("unix:" + path).get("/time").status == 200
    assert first.wait(WAIT_S) == 0  # idle: it exits by itself, cleanly
    assert "idle for" in (directory / "zeusd.log").read_text()
    waiting = Client("unix:" + path)  # systemd's socket still listens: the connection waits
    second = activated(listener, argv(directory, gpus, directory / "none.toml"), log)
    try:
        assert waiting.get("/time").status == 200  # answered by the new process
    finally:
        second.terminate()
        second.wait(WAIT_S)
        log.close()


@needs_real_users
def test_a_lease_keeps_the_daemon_until_it_is_restored(world):
    directory, path, listener, gpus = world
    with Accounts() as made:
        group = made.group("idle")
        user = made.user("i", supplementary=(group,))
        policy = directory / "policy.toml"
        policy.write_text(POLICY.format(group=group.name, extra=""))
        log = open(directory / "zeusd.log", "wb")
        daemon = activated(listener, argv(directory, gpus, policy), log)
        job = Job(user, path, [set_power(0, 300)])
        try:
            assert job.replies[0][0] == 200
            time.sleep(2.0)  # four idle periods with nothing but the lease
            assert daemon.poll() is None, (directory / "zeusd.log").read_text()
            job.kill()
            assert daemon.wait(WAIT_S) == 0  # restored, then idle: gone
            log_text = (directory / "zeusd.log").read_text()
            assert log_text.index("lease restored") < log_text.index("idle for")
        finally:
            job.kill()
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            log.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_under_systemd_socket_activate_it_serves_then_exits_cleanly_when_idle(world):
    directory, _, _, gpus = world
    path = str(directory / "activated.sock")
    log = open(directory / "activate.log", "wb")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", path, "-E", f"PYTHONPATH={REPO}",
                             *zeusd_command(*argv(directory, gpus, directory / "none.toml"))],
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        deadline = time.monotonic() + WAIT_S
        while not os.path.exists(path):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert Client("unix:" + path).get("/time").status == 200  # activation starts it
        assert proc.wait(WAIT_S) == 0
        assert "idle for" in (directory / "activate.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
