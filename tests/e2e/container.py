"""A booted Debian 12 container (systemd-nspawn --boot) driven with nsenter.

The host need not run systemd: the container is not registered with machined
(--register=no) and stays in the caller's cgroup (--keep-unit). Commands run
inside the container's namespaces through nsenter into its PID 1, with a
clean environment. Every wait has a deadline; stop() always tears down.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STATE_DIR = "/run/zeusd-e2e"  # pid files of running containers, for clean-up after a crash


class ContainerError(RuntimeError):
    """The container could not be started, driven or stopped."""


@dataclass
class Result:
    """What a command inside the container did."""

    cmd: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ {self.cmd}\n-> exit {self.returncode}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}")


class Container:
    """One container booted from a root file system tarball."""

    def __init__(self, tarball: str, name: str | None = None, workdir: str = "/var/tmp"):
        self.tarball = tarball
        self.name = name or f"zeusd-e2e-{os.getpid()}"
        self.workdir = workdir
        self.root: str | None = None
        self.log_path: str | None = None
        self._nspawn: subprocess.Popen | None = None
        self.leader: int | None = None

    # -- life cycle -------------------------------------------------------
    def unpack(self) -> str:
        """Unpack the tarball into a fresh directory; return it (files can be placed there before boot)."""
        reap_stale()
        self.root = tempfile.mkdtemp(prefix=f"{self.name}.", dir=self.workdir)
        subprocess.run(["tar", "-C", self.root, "--numeric-owner", "-xpf", self.tarball], check=True)
        self.log_path = self.root + ".console.log"
        return self.root

    def boot(self, timeout_s: float = 120) -> None:
        """Boot systemd in the container and wait until it is up (running or degraded)."""
        assert self.root, "unpack() first"
        cmd = ["systemd-nspawn", "--boot", "--quiet", "--register=no", "--keep-unit",
               "--link-journal=no", "--console=read-only", f"--machine={self.name}",
               "--directory", self.root]
        with open(self.log_path, "wb") as log:
            # A session of its own, so a Ctrl-C aimed at pytest does not reach it first.
            self._nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(f"{STATE_DIR}/{self.name}.pid", "w") as f:
            # The harness's own pid too: a container is stale only once the run that booted it
            # is gone (several runs, e.g. CI and a developer's, may share this host).
            f.write(f"{self._nspawn.pid} {os.getpid()} {self.root}\n")
        self.leader = self._wait_leader(deadline=time.monotonic() + 30)
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            res = self.sh("systemctl is-system-running", check=False, timeout=15)
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.sh("systemctl --failed --no-legend --plain", check=False).stdout
                    print(f"container booted degraded; failed units:\n{failed}")
                return
            time.sleep(0.5)
        raise ContainerError(f"container did not finish booting in {timeout_s}s (state {state!r});"
                             f" console:\n{self.console_tail()}")

    def _wait_leader(self, deadline: float) -> int:
        assert self._nspawn
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self._nspawn.returncode};"
                                     f" console:\n{self.console_tail()}")
            for child in _children(self._nspawn.pid):
                if _comm(child) == "systemd":
                    return child
            time.sleep(0.2)
        raise ContainerError(f"no systemd in the container after 30s; console:\n{self.console_tail()}")

    def stop(self, timeout_s: float = 45) -> None:
        """Power the container off (SIGTERM to nspawn = orderly halt), kill it if that hangs, remove it."""
        proc, self._nspawn = self._nspawn, None
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                print(f"container {self.name} did not halt in {timeout_s}s; killing it")
                if self.leader:
                    _kill(self.leader)  # PID 1 of the namespace: takes the whole container with it
                proc.kill()
                proc.wait(timeout=15)
        if os.path.exists(f"{STATE_DIR}/{self.name}.pid"):
            os.unlink(f"{STATE_DIR}/{self.name}.pid")
        if self.root and os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)
        if self.log_path and os.path.exists(self.log_path) and not os.environ.get("ZEUSD_E2E_KEEP_LOG"):
            os.unlink(self.log_path)
        self.root = None

    # -- driving ------------------------------------------------------------
    def sh(self, script: str, user: str | None = None, check: bool = True, timeout: float = 60,
           input: str | None = None) -> Result:
        """Run a shell script inside the container, as root or as USER (with USER's groups)."""
        if self.leader is None:
            raise ContainerError("container is not running")
        argv = ["nsenter", f"--target={self.leader}", "--mount", "--uts", "--ipc", "--net", "--pid",
                "--cgroup", "--root", "--wd", "--"]
        env = ["env", "-i", f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", "TERM=dumb",
               "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive"]
        if user:
            argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
            env.append(f"HOME=/home/{user}")
        else:
            env.append("HOME=/root")
        argv += env + ["/bin/sh", "-c", script]
        try:
            proc = subprocess.run(argv, check=False, input=input, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"timed out after {timeout}s: {script}\n"
                                 f"stdout so far: {exc.stdout}\nstderr so far: {exc.stderr}") from exc
        res = Result(script, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise ContainerError(f"command failed in the container{' as ' + user if user else ''}:\n{res}")
        return res

    def path(self, inside: str) -> str:
        """The host path of a file inside the container."""
        assert self.root
        return os.path.join(self.root, inside.lstrip("/"))

    def put(self, inside: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write a file into the container as root:root with MODE."""
        host = self.path(inside)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chown(host, 0, 0)
        os.chmod(host, mode)

    def console_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except (OSError, TypeError):
            return "(no console log)"


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap_stale() -> None:
    """Stop containers that an earlier, killed run of this harness left behind (by their pid files)."""
    if not os.path.isdir(STATE_DIR):
        return
    for entry in os.listdir(STATE_DIR):
        path = os.path.join(STATE_DIR, entry)
        try:
            with open(path) as f:
                pid_s, owner_s, root = f.read().split(maxsplit=2)
            pid, owner, root = int(pid_s), int(owner_s), root.strip()
        except (OSError, ValueError):
            os.unlink(path)
            continue
        if owner != os.getpid() and os.path.exists(f"/proc/{owner}"):
            continue  # another run's live container
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            cmdline = []
        if cmdline and cmdline[0].endswith(b"systemd-nspawn") and root.encode() in cmdline:
            print(f"stopping a stale e2e container (pid {pid}, {root})")
            for child in _children(pid):
                _kill(child)
            _kill(pid)
            time.sleep(1)
        if root.startswith(("/var/tmp/zeusd-e2e-", tempfile.gettempdir() + "/zeusd-e2e-")):
            shutil.rmtree(root, ignore_errors=True)
        os.unlink(path)


def quote(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)
