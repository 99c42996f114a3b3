"""Start the real zeusd process on a real socket, the way an administrator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .client import Client

REPO = Path(__file__).resolve().parents[2]


def zeusd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "zeusd", *args]


def env_with_repo() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(name, None)
    return env


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def write_sim_profile(path: Path, journal: Path, profile="h200", count=4, **extra) -> Path:
    path.write_text(json.dumps({"profile": profile, "count": count,
                                "journal": str(journal), **extra}))
    return path


def read_journal(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def wait_serving(path: str, proc: subprocess.Popen, timeout_s: float = 20.0,
                 log=lambda: "") -> None:
    """Until a server process answers GET /time on the Unix socket ``path``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log()}")
        if os.path.exists(path):
            try:
                Client("unix:" + path, timeout=2).get("/time")
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on {path}:\n{log()}")


class Daemon:
    """A running `zeusd serve` with its log captured to a file."""

    def __init__(self, tmp: Path, args: list[str], wait_path: str | None = None,
                 env: dict | None = None, prefix: list[str] | None = None) -> None:
        self.tmp = tmp
        self.log_path = tmp / f"zeusd-{time.monotonic_ns()}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen((prefix or []) + zeusd_command(*args),
                                     stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=env or env_with_repo(), cwd=str(REPO))
        if wait_path:
            self.wait_for_socket(wait_path)

    def wait_for_socket(self, path: str, timeout_s: float = 20.0) -> None:
        wait_serving(path, self.proc, timeout_s, log=self.log)

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode
