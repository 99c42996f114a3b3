"""zeusd.transport: binding the socket safely, systemd activation and notification, peer
credentials. Unit tests of the functions, plus the daemon process where only it can tell."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.daemon import REPO, Daemon, env_with_repo
from tests.support.harness import short_dir
from zeusd.transport import sdnotify
from zeusd.transport.listen import (ListenError, Listener, _listen_fds_fallback, bind_tcp,
                                    bind_unix, parse_host_port, remove_owned)
from zeusd.transport.peercred import process_start_ticks, unix_peer

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def sock_dir():
    path = short_dir("zdl-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock


def accepts(path: Path, listener: socket.socket) -> bool:
    """A connection to ``path`` reaches ``listener``."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    listener.settimeout(5)
    try:
        client.connect(str(path))
        conn, _ = listener.accept()
        conn.close()
        return True
    finally:
        client.close()


# ----- bind_unix: what may and may not be replaced ------------------------------------------

def test_stale_socket_file_is_removed_and_rebound(sock_dir):
    path = sock_dir / "z.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listens
    listener = bind_unix(str(path), 0o666, None, None)
    try:
        assert listener.owned_path == str(path) and listener.description == f"unix:{path}"
        assert accepts(path, listener.sock)
    finally:
        listener.sock.close()


def test_live_socket_is_not_stolen(sock_dir):
    path = sock_dir / "z.sock"
    live = listening(path)
    try:
        with pytest.raises(ListenError, match="is in use by a running server; is zeusd already "
                                              "running"):
            bind_unix(str(path), 0o666, None, None)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert accepts(path, live)  # still the old server's socket
    finally:
        live.close()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink", "fifo"])
def test_non_socket_at_the_path_is_refused_and_untouched(sock_dir, kind):
    path = sock_dir / "z.sock"
    target = sock_dir / "target"
    if kind == "file":
        path.write_text("precious\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        live = listening(target)
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    before = os.lstat(path)
    with pytest.raises(ListenError, match="exists and is not a socket; refusing to replace it"):
        bind_unix(str(path), 0o666, None, None)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (before.st_ino, before.st_mode,
                                                                before.st_mtime_ns)
    if kind == "file":
        assert path.read_text() == "precious\n"
    if kind == "symlink":
        assert accepts(target, live)
        live.close()


_PROBE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from zeusd.transport.listen import ListenError, bind_unix
    try:
        bind_unix({path!r}, 0o666, None, None)
    except ListenError as exc:
        print("ListenError:", exc)
    else:
        print("bound")
""")


def bind_as_nobody(path: Path) -> str:
    """Root may connect to any socket, so the permission case runs as nobody."""
    proc = subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
         sys.executable, "-c", _PROBE.format(repo=str(REPO), path=str(path))],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@as_root
@pytest.mark.parametrize("live", [True, False], ids=["live", "stale"])
def test_unconnectable_socket_is_preserved(sock_dir, live):
    os.chmod(sock_dir, 0o777)  # nobody *could* delete the file; it must choose not to
    path = sock_dir / "z.sock"
    server = listening(path) if live else socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if not live:
        server.bind(str(path))
        server.close()
    os.chmod(path, 0)
    try:
        out = bind_as_nobody(path)
        assert out.startswith("ListenError: ") and "we cannot connect to" in out, out
        assert "refusing to replace it" in out
        assert stat.S_ISSOCK(os.lstat(path).st_mode) and stat.S_IMODE(os.lstat(path).st_mode) == 0
        if live:
            assert accepts(path, server)
    finally:
        server.close()


@as_root
@pytest.mark.parametrize("mode,uid,gid", [(0o660, NOBODY, NOBODY), (0o600, None, NOBODY),
                                          (0o640, NOBODY, None), (0o666, None, None)])
def test_permissions_and_owner_are_applied(sock_dir, mode, uid, gid):
    path = sock_dir / "z.sock"
    listener = bind_unix(str(path), mode, uid, gid)
    try:
        info = os.lstat(path)
        assert stat.S_IMODE(info.st_mode) == mode
        assert (info.st_uid, info.st_gid) == (os.getuid() if uid is None else uid,
                                              os.getgid() if gid is None else gid)
    finally:
        listener.sock.close()


def test_missing_parent_directory_is_created(sock_dir):
    path = sock_dir / "run" / "zeusd" / "z.sock"
    listener = bind_unix(str(path), 0o666, None, None)
    try:
        assert stat.S_IMODE(os.stat(path.parent).st_mode) & 0o755 == 0o755
        assert accepts(path, listener.sock)
    finally:
        listener.sock.close()


def test_remove_owned_removes_only_what_we_created(sock_dir):
    path = sock_dir / "z.sock"
    other = sock_dir / "inherited.sock"
    other.write_text("")
    listener = bind_unix(str(path), 0o666, None, None)
    listener.sock.close()
    tcp = Listener(socket.socket(), "tcp")
    inherited = Listener(socket.socket(), "systemd fd 3")
    remove_owned([listener, tcp, inherited])
    remove_owned([listener])  # already gone: no error
    tcp.sock.close()
    inherited.sock.close()
    assert not path.exists() and other.exists()


# ----- TCP ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("127.0.0.1:4938", ("127.0.0.1", 4938)),
                                           ("[::1]:80", ("::1", 80)),
                                           ("0.0.0.0:0", ("0.0.0.0", 0)),
                                           ("localhost:65535", ("localhost", 65535))])
def test_parse_host_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["4938", "host:", ":4938", "host:65536", "host:port",
                                  "host:-1", ""])
def test_parse_host_port_rejects(text):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_host_port(text)


def test_bind_tcp_reports_the_bound_port_and_refuses_a_taken_one():
    first = bind_tcp("127.0.0.1:0")
    try:
        port = first.sock.getsockname()[1]
        assert first.description == f"tcp:127.0.0.1:{port}" and first.owned_path is None
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: "):
            bind_tcp(f"127.0.0.1:{port}")
    finally:
        first.sock.close()


# ----- socket activation: LISTEN_PID / LISTEN_FDS ----------------------------------------------

def test_listen_fds_are_ours_only_when_listen_pid_is_us():
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b",
           "OTHER": "x"}
    assert _listen_fds_fallback(env) == [3, 4]
    assert env == {"OTHER": "x"}  # unset so that children do not inherit them


@pytest.mark.parametrize("env", [
    {"LISTEN_PID": "1", "LISTEN_FDS": "1"},                      # meant for another process
    {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"},
    {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "-2"},
    {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"},
    {"LISTEN_PID": "", "LISTEN_FDS": "1"},
    {"LISTEN_FDS": "1"},
    {},
])
def test_listen_fds_are_ignored_otherwise(env):
    env = dict(env, LISTEN_FDNAMES="x")
    assert _listen_fds_fallback(env) == []
    assert env == {}


# ----- sd_notify ------------------------------------------------------------------------------

def datagram(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    return sock


def test_notify_sends_the_state(sock_dir):
    with datagram(str(sock_dir / "notify")) as sock:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(sock_dir / "notify")})
        assert sock.recv(256) == b"READY=1"


def test_notify_to_an_abstract_socket():
    name = f"zeusd-test-{os.getpid()}"
    with datagram("\0" + name) as sock:
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(256) == b"STOPPING=1"


def test_notify_without_systemd_is_a_no_op(sock_dir):
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(sock_dir / "absent")}) is False


# ----- peer credentials -------------------------------------------------------------------------

def test_unix_peer_of_a_socketpair_is_this_process():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        caller = unix_peer(left)
    finally:
        left.close()
        right.close()
    assert (caller.transport, caller.known) == ("unix", True)
    assert (caller.pid, caller.uid, caller.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert set(os.getgroups()) | {os.getgid()} == set(caller.groups)
    assert caller.start_time_ticks == process_start_ticks(os.getpid()) is not None


def test_unix_peer_of_a_socket_without_peer_is_unknown():
    lonely = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        caller = unix_peer(lonely)
    finally:
        lonely.close()
    assert caller.known is False and caller.is_root is False


def test_process_start_ticks_of_a_gone_process_is_none():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert process_start_ticks(proc.pid) is None


# ----- the daemon process ---------------------------------------------------------------------

def serve(tmp: Path, sock: Path, *extra: str, env: dict | None = None) -> Daemon:
    return Daemon(tmp, ["serve", "--gpu-backend", "simulated", "--simulated-gpus", "h200",
                        "--policy", str(tmp / "none.toml"), "--enable", "gpu-read",
                        "--socket-path", str(sock), *extra], env=env)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_daemon_removes_its_socket_on_signal(tmp_path, sock_dir, signum):
    sock = sock_dir / "z.sock"
    daemon = serve(tmp_path, sock)
    try:
        daemon.wait_for_socket(str(sock))
        daemon.proc.send_signal(signum)
        assert daemon.proc.wait(20) == 0
    finally:
        daemon.stop()
    assert not sock.exists()
    assert "zeusd stopped" in daemon.log()


@as_root
def test_daemon_applies_socket_permissions_and_owner(tmp_path, sock_dir):
    sock = sock_dir / "z.sock"
    daemon = serve(tmp_path, sock, "--socket-permissions", "660", "--socket-uid", str(NOBODY),
                   "--socket-gid", str(NOBODY))
    try:
        daemon.wait_for_socket(str(sock))
        info = os.lstat(sock)
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o660, NOBODY, NOBODY)
    finally:
        daemon.stop()


@as_root
def test_socket_permissions_keep_other_users_out(tmp_path, sock_dir):
    sock = sock_dir / "z.sock"
    daemon = serve(tmp_path, sock, "--socket-permissions", "600")
    probe = ("import socket; s = socket.socket(socket.AF_UNIX); "
             f"s.connect({str(sock)!r}); print('connected')")
    try:
        daemon.wait_for_socket(str(sock))
        proc = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY),
                               "--clear-groups", sys.executable, "-c", probe],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert proc.returncode != 0 and "PermissionError" in proc.stderr
        assert Client("unix:" + str(sock)).get("/time").status == 200  # root still gets in
    finally:
        daemon.stop()


def test_daemon_notifies_ready_then_stopping(tmp_path, sock_dir):
    sock = sock_dir / "z.sock"
    notify_path = str(sock_dir / "notify")
    with datagram(notify_path) as notify:
        env = env_with_repo()
        env["NOTIFY_SOCKET"] = notify_path
        daemon = serve(tmp_path, sock, env=env)
        try:
            assert notify.recv(256) == b"READY=1"
            # Ready means serving: no waiting for the socket.
            assert Client("unix:" + str(sock)).get("/time").status == 200
            daemon.proc.terminate()
            assert notify.recv(256) == b"STOPPING=1"
            assert daemon.proc.wait(20) == 0
        finally:
            daemon.stop()


def test_daemon_refuses_a_live_socket_and_leaves_it(tmp_path, sock_dir):
    sock = sock_dir / "z.sock"
    live = listening(sock)
    try:
        daemon = serve(tmp_path, sock)
        try:
            assert daemon.proc.wait(20) == 1
        finally:
            daemon.stop()
        assert "is in use by a running server" in daemon.log()
        assert "Traceback" not in daemon.log()
        assert accepts(sock, live)
    finally:
        live.close()
