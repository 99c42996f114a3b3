"""Run the real `zeusctl` as a real unprivileged user (setpriv), the way a person types it.

The child runs the system's Python in isolated mode with only the repository on its path:
zeusctl must work with the standard library alone (as in the .deb).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from .daemon import REPO
from .users import Account, user_python

_ENTRY = ("import sys; sys.path.insert(0, {repo!r}); from zeusd.ctl.cli import main; "
          "sys.exit(main(sys.argv[1:]))")


@dataclass
class CtlResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def json_lines(self) -> list:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def zeusctl_as(account: Account | None, *args: str, env: dict | None = None,
               timeout_s: float = 60.0) -> CtlResult:
    """``zeusctl ARGS`` as ``account`` (None: as the test's own user, root)."""
    prefix = [] if account is None else [
        "setpriv", "--reuid", str(account.uid), "--regid", str(account.gid), "--init-groups"]
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    proc = subprocess.run(
        [*prefix, user_python(), "-I", "-c", _ENTRY.format(repo=str(REPO)), *args],
        capture_output=True, text=True, timeout=timeout_s, cwd="/", env=child_env, check=False)
    return CtlResult(proc.returncode, proc.stdout, proc.stderr)
