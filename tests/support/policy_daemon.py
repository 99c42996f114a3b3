"""A real zeusd with an access policy, for the policy tests: socket other users can reach,
a simulated-GPU journal, the policy file swapped in place and SIGHUP, and the audit lines
of the daemon's log (stderr: there is no journald in the test environment) parsed back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .client import Client
from .daemon import Daemon, env_with_repo, zeusd_command
from .sim import SimGpus

AUDIT_PREFIX = "zeusd-audit: "
_PAIR = re.compile(r'([a-z0-9_]+)=("(?:[^"\\]|\\.)*"|\S+)')


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_audit(log: str) -> list[dict]:
    """Every ``zeusd-audit:`` line of ``log`` as a dict (quoted values unquoted)."""
    records = []
    for line in log.splitlines():
        at = line.find(AUDIT_PREFIX)
        if at < 0:
            continue
        record = {}
        for key, value in _PAIR.findall(line[at + len(AUDIT_PREFIX):]):
            record[key] = json.loads(value) if value.startswith('"') else value
        records.append(record)
    return records


def traversable_dir(prefix: str) -> Path:
    """A fresh directory under /tmp (short socket paths) that every user can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def install_policy(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a new file next to ``path`` and rename it over ``path`` (what an editor or
    config management does), so the daemon never reads a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".policy-")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class PolicyDaemon:
    """``zeusd serve`` on simulated H200s with ``policy_text`` at ``self.policy_path``."""

    def __init__(self, policy_text: str, *, gpus: int = 4,
                 enable: str = "gpu-control,gpu-read", policy_subdir: str = "",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.dir = traversable_dir("zdp-")
        self.socket_path = str(self.dir / "zeusd.sock")
        self.address = "unix:" + self.socket_path
        self.policy_path = self.dir / policy_subdir / "policy.toml"
        self.policy_path.parent.mkdir(mode=0o755, exist_ok=True)
        install_policy(self.policy_path, policy_text)
        self.policy_hash = sha256(policy_text)
        self.gpus = SimGpus(self.dir, count=gpus)
        self.argv = ["serve", "--gpu-backend", "simulated", "--simulated-gpus",
                     str(self.gpus.spec_path), "--socket-path", self.socket_path,
                     "--socket-permissions", "666", "--policy", str(self.policy_path),
                     "--enable", enable, *extra_args]
        self._clients: list[Client] = []
        self.final_log: str | None = None  # the whole log, kept once stopped
        self.daemon = Daemon(self.dir, self.argv)
        try:
            self.daemon.wait_for_socket(self.socket_path)
        except BaseException:
            self.stop()
            raise

    # -- talking to it ------------------------------------------------------

    def root_client(self) -> Client:
        client = Client(self.address, timeout=30)
        self._clients.append(client)
        return client

    # -- its log ---------------------------------------------------------------

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        return self.daemon.log()

    def log_mark(self) -> int:
        return len(self.log())

    def wait_for_log(self, pattern: str, since: int = 0, timeout_s: float = 10.0) -> str:
        """The log after ``since`` once it matches the regex ``pattern`` (else AssertionError)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log()[since:]
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r}; log since mark:\n{text}")
            time.sleep(0.02)

    def audit(self, since: int = 0, **match: str) -> list[dict]:
        """Audit records after log offset ``since`` whose fields equal ``match``."""
        return [r for r in parse_audit(self.log()[since:])
                if all(r.get(k) == v for k, v in match.items())]

    # -- the policy ------------------------------------------------------------

    def replace_policy(self, text: str, mode: int = 0o644) -> None:
        install_policy(self.policy_path, text, mode)

    def sighup(self) -> None:
        self.daemon.proc.send_signal(signal.SIGHUP)

    def reload(self, text: str, *, expect_ok: bool = True, mode: int = 0o644) -> str:
        """Install ``text``, SIGHUP, wait for the daemon to say it reloaded or rejected it;
        returns the log written meanwhile."""
        mark = self.log_mark()
        self.replace_policy(text, mode)
        self.sighup()
        if expect_ok:
            self.policy_hash = sha256(text)
            return self.wait_for_log(rf"policy {self.policy_hash} in force.*reloaded", mark)
        return self.wait_for_log(r"policy reload rejected", mark)

    # -- stopping ----------------------------------------------------------------

    def stop(self) -> int:
        for client in self._clients:
            client.close()
        try:
            return self.daemon.stop()
        finally:
            if self.final_log is None:
                self.final_log = self.daemon.log()
            shutil.rmtree(self.dir, ignore_errors=True)


def serve_expecting_failure(policy_path: Path, workdir: Path,
                            timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``zeusd serve`` with ``policy_path`` and return once it exits (it must not serve).

    The socket path is one that would work, so a refusal can only come from the policy."""
    spec = SimGpus(workdir, count=1, name="failing-gpus")
    argv = zeusd_command("serve", "--gpu-backend", "simulated", "--simulated-gpus",
                         str(spec.spec_path), "--socket-path", str(workdir / "never.sock"),
                         "--socket-permissions", "666", "--policy", str(policy_path),
                         "--enable", "gpu-control,gpu-read")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_with_repo())
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"zeusd kept running with policy {policy_path}:\n{out}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")
