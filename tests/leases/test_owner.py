"""Pinning the calling process: SO_PEERPIDFD on a real Unix connection, pidfd_open + start time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from zeusd.leases.owner import (CMDLINE_MAX, OwnerGone, SO_PEERPIDFD, is_exited, pin_pid,
                                pin_unix_peer)
from zeusd.transport.peercred import unix_peer

from .support import CONNECT_AND_SLEEP, wait_until

@pytest.fixture
def peer(tmp_path):
    """(accepted socket, child process) for a real child connected to a real Unix socket."""
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    child = subprocess.Popen([sys.executable, "-c", CONNECT_AND_SLEEP, path])
    conn, _ = listener.accept()
    yield conn, child
    conn.close()
    listener.close()
    child.kill()
    child.wait()


def _has_peerpidfd(sock) -> bool:
    try:
        os.close(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
        return True
    except OSError:
        return False


def test_unix_peer_is_pinned_and_its_exit_is_seen(peer):
    conn, child = peer
    caller = unix_peer(conn)
    pinned = pin_unix_peer(conn, caller.uid, caller.pid, caller.start_time_ticks)
    try:
        assert (pinned.owner.pid, pinned.owner.uid) == (child.pid, os.getuid())
        assert pinned.owner.start_ticks == caller.start_time_ticks
        assert not is_exited(pinned.pidfd)
        child.kill()
        child.wait()
        assert is_exited(pinned.pidfd)
    finally:
        pinned.close()


def test_so_peerpidfd_names_the_connecting_process(peer):
    conn, child = peer
    if not _has_peerpidfd(conn):
        pytest.skip("this kernel has no SO_PEERPIDFD (Linux < 6.5); the pidfd_open path is tested")
    fd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            assert f"Pid:\t{child.pid}\n" in f.read()
    finally:
        os.close(fd)


def test_pidfd_open_path_without_a_socket(children):
    child = children()
    pinned = pin_unix_peer(None, os.getuid(), child.pid, child.start_ticks)
    try:
        with open(f"/proc/self/fdinfo/{pinned.pidfd}") as f:
            assert f"Pid:\t{child.pid}\n" in f.read()
    finally:
        pinned.close()
    assert pinned.pidfd == -1


def test_a_reused_pid_is_not_the_owner(children):
    child = children()
    with pytest.raises(OwnerGone) as err:
        pin_pid(os.getuid(), child.pid, child.start_ticks - 1)
    assert str(err.value) == (f"pid {child.pid} now names another process "
                              f"(start {child.start_ticks}, expected {child.start_ticks - 1})")


def test_an_exited_process_is_gone_even_as_a_zombie(children):
    child = children()
    os.kill(child.pid, 9)
    wait_until(lambda: open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] == "Z")
    with pytest.raises(OwnerGone) as err:
        child.pin()
    assert str(err.value) == f"pid {child.pid} has exited"
    child.kill()
    with pytest.raises(OwnerGone):
        child.pin()


def test_no_start_time_at_accept_is_refused():
    with pytest.raises(OwnerGone) as err:
        pin_unix_peer(None, 0, os.getpid(), None)
    assert str(err.value) == f"pid {os.getpid()}: no start time was read at accept"


def test_command_line_is_bounded(children):
    child = children("y" * 5000)
    pinned = child.pin()
    pinned.close()
    assert len(pinned.owner.cmdline) == CMDLINE_MAX and pinned.owner.cmdline.endswith("...")
    assert len(pinned.owner.comm) <= 15
