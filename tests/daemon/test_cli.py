"""The `zeusd` command line: help, version, argument errors, privilege check, both spellings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.support.client import Client
from tests.support.daemon import Daemon, env_with_repo, zeusd_command
from tests.support.harness import short_dir
from zeusd import __version__


def zeusd(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *zeusd_command(*args)], capture_output=True, text=True,
                          env=env_with_repo(), timeout=60, cwd="/")


@pytest.fixture
def sock_dir():
    path = short_dir("zdc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_version():
    proc = zeusd("--version")
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, f"zeusd {__version__}", "")


def test_help_lists_the_subcommands():
    proc = zeusd("-h")
    assert proc.returncode == 0 and proc.stderr == ""
    for word in ("serve", "policy", "token", "--socket-path"):
        assert word in proc.stdout


def test_serve_help_lists_the_serve_flags():
    proc = zeusd("serve", "-h")
    assert proc.returncode == 0 and proc.stderr == ""
    for flag in ("--mode", "--socket-path", "--socket-permissions", "--enable",
                 "--signing-key-path", "--gpu-backend", "--simulated-gpus", "--nvml-timeout-s",
                 "--max-queue-per-gpu", "--policy"):
        assert flag in proc.stdout


@pytest.mark.parametrize("args,fragment", [
    (("--mode", "pipe"), "argument --mode: invalid choice: 'pipe'"),
    (("--socket-permissions", "999"), "invalid --socket-permissions '999'"),
    (("--socket-permissions", "rw-rw----"), "invalid --socket-permissions 'rw-rw----'"),
    (("--socket-permissions", "1777"), "must be 000-777"),
    (("--enable", "gpu-control,gpu-admin"), "unknown API group 'gpu-admin'"),
    (("--enable", ","), "--enable needs at least one API group"),
    (("--simulated-gpus", "h999x2"), "unknown GPU profile 'h999'"),
    (("--simulated-gpus", "h200x0"), "GPU count must be an integer 1-64"),
    (("--simulated-gpus", "/nonexistent/gpus.json"), "cannot read it"),
    (("--num-workers", "0"), "must be a whole number 1-1024, got '0'"),
    (("--num-workers", "9" * 5000), "must be a whole number 1-1024, got '99999999999999999999'"),
    (("--nvml-timeout-s", "-1"), "must be positive"),
    (("--nvml-timeout-s", "1e999"), "must be positive and finite, got 1e999"),
    (("--gpu-power-poll-hz", "inf"), "must be positive and finite, got inf"),
    (("--cpu-power-poll-hz", "nan"), "must be positive and finite, got nan"),
    (("--socket-uid", "-5"), "argument --socket-uid: invalid id '-5' (a number 0-4294967294)"),
    (("--socket-gid", "99999999999"), "argument --socket-gid: invalid id '99999999999'"),
    (("--socket-uid", "4294967295"), "invalid id '4294967295'"),
    (("--socket-gid", "\u0663"), "invalid id"),
    (("--socket-uid", "9" * 5000), "invalid id '99999999999999999999'"),
    (("--mode", "tcp", "--tcp-bind-address", "127.0.0.1:65536"), "port 0-65535"),
    (("--mode", "tcp", "--tcp-bind-address", "127.0.0.1:" + "9" * 5000), "port 0-65535"),
    (("--mode", "tcp", "--tcp-bind-address", ":4938"), "expected HOST:PORT"),
    (("--mode", "tcp", "--tcp-bind-address", "localhost"), "invalid address 'localhost'"),
    (("--max-queue-per-gpu", "lots"), "--max-queue-per-gpu"),
    (("--gpu-backend", "cuda"), "invalid choice: 'cuda'"),
    (("--cpu-backend", "msr"), "invalid choice: 'msr'"),
    (("--simulated-cpus", "0"), "must be a whole number 1-256, got '0'"),
    (("--max-connections", "0"), "must be a whole number 1-1000000, got '0'"),
    (("--max-waiting-per-gpu", "-1"), "must be a whole number 0-1000000, got '-1'"),
    (("--idle-timeout-s", "inf"), "must be positive and finite, got inf"),
    (("--frobnicate",), "unrecognized arguments: --frobnicate"),
])
@pytest.mark.parametrize("serve", [True, False], ids=["serve", "flags-only"])
def test_argument_errors_are_one_line_exit_2_and_bind_nothing(sock_dir, args, fragment, serve):
    sock = sock_dir / "z.sock"
    base = ["--gpu-backend", "simulated", "--policy", str(sock_dir / "none.toml"),
            "--socket-path", str(sock)]
    proc = zeusd(*(["serve"] if serve else []), *base, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(r"zeusd( serve)?: error: ", lines[0]), lines[0]
    assert fragment in lines[0]
    assert proc.stdout == ""
    assert not sock.exists()


@pytest.mark.parametrize("socket_path, fragment", [
    ("{dir}/file/z.sock", "--socket-path {dir}/file/z.sock: {dir}/file is not a directory"),
    ("{dir}/file/a/b/z.sock", "{dir}/file is not a directory"),
    ("{dir}/" + "s" * 120, "a Unix socket path holds at most 107"),
    ("", "--socket-path is empty"),
])
def test_socket_path_errors_are_caught_before_anything_is_bound(sock_dir, socket_path,
                                                                fragment):
    (sock_dir / "file").write_text("a regular file")
    before = sorted(os.listdir(sock_dir))
    proc = zeusd("serve", "--gpu-backend", "simulated", "--enable", "gpu-read", "--policy",
                 str(sock_dir / "none.toml"), "--socket-path", socket_path.format(dir=sock_dir))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zeusd: error: "), proc.stderr
    assert fragment.format(dir=sock_dir) in lines[0]
    assert sorted(os.listdir(sock_dir)) == before  # nothing bound, no directory made


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_nvml_control_without_cap_sys_admin_is_refused(sock_dir):
    sock = sock_dir / "z.sock"
    proc = zeusd("serve", "--gpu-backend", "nvml", "--socket-path", str(sock),
                 prefix=("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zeusd: error: ")
    assert "needs root or CAP_SYS_ADMIN" in lines[0] and "--enable gpu-read,cpu-read" in lines[0]
    assert "Traceback" not in proc.stderr and not sock.exists()


def test_start_up_errors_say_what_is_wrong_without_a_traceback(sock_dir):
    proc = zeusd("serve", "--gpu-backend", "simulated", "--mode", "tcp",
                 "--tcp-bind-address", "192.0.2.1:4938", "--policy",
                 str(sock_dir / "none.toml"), "--enable", "gpu-read")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == \
        "zeusd: error: cannot listen on 192.0.2.1:4938: Cannot assign requested address"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("serve", [True, False], ids=["zeusd-serve", "zeusd"])
def test_both_spellings_serve(tmp_path, sock_dir, serve):
    sock = sock_dir / "z.sock"
    args = ["--gpu-backend", "simulated", "--simulated-gpus", "h200x3", "--policy",
            str(tmp_path / "none.toml"), "--enable", "gpu-read", "--socket-path", str(sock)]
    daemon = Daemon(tmp_path, (["serve"] if serve else []) + args, wait_path=str(sock))
    try:
        reply = Client("unix:" + str(sock)).get("/discover")
        assert reply.status == 200 and reply.json()["gpu_ids"] == [0, 1, 2]
    finally:
        assert daemon.stop() == 0


def test_flags_before_serve_are_not_silently_dropped():
    from zeusd.cli import build_parser

    args = build_parser().parse_args(["--enable", "gpu-read", "--mode", "tcp", "serve"])
    assert (args.enable, args.mode) == (frozenset({"gpu-read"}), "tcp")
