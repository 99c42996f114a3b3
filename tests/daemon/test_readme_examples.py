"""Every `curl` and `zeusctl` example of README.md, docs/ and `make demo`'s hints, run against
a daemon started with `make demo`'s own flags (read back with `make -s demo-args`, so the
two cannot drift): each must answer 200 (zeusctl: exit 0).

TCP examples (`$TOKEN`, port 4938) run against `make demo-tcp`'s flags with a fresh key
and a token for every API group; the only change is a free port instead of 4938, so the
test does not collide with a demo someone is running.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import REPO, Daemon
from tests.support.harness import short_dir
from tests.support.ctl import zeusctl_as
from tests.support.tokens import sign
from tests.support.users import Accounts, needs_real_users

# CI installs both (.ci/run), so there a missing tool fails instead of skipping.
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and (shutil.which("curl") is None or shutil.which("make") is None),
    reason="needs curl and make (the examples are curl lines; make holds the demo's flags)")

FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_FENCES = {"sh", "bash", "shell", "console"}
DEMO_PORT = "4938"


def example_lines(path: Path) -> list[tuple[str, int, str]]:
    """(file, line number, command) of each `curl ...`/`zeusctl ...` line in shell fences;
    a trailing backslash continues the command on the next line."""
    out, lang, pending = [], None, None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(raw.strip())
        if fence:
            lang = None if lang is not None else fence.group(1) or "sh"
            continue
        if lang not in SHELL_FENCES:
            continue
        line = raw.strip().split("  #")[0].strip()
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.rstrip("\\").strip())
            if not line.endswith("\\"):
                out.append((str(path.relative_to(REPO)), *pending))
                pending = None
            continue
        if line.startswith(("curl ", "zeusctl ")):
            if line.endswith("\\"):
                pending = (number, line.rstrip("\\").strip())
            else:
                out.append((str(path.relative_to(REPO)), number, line))
    return out


def makefile_hints() -> list[tuple[str, int, str]]:
    """The curl lines `make demo` prints, with its socket replaced by $S."""
    out = []
    for number, raw in enumerate((REPO / "Makefile").read_text().splitlines(), 1):
        match = re.match(r'\s*@echo "\s+(curl .*)"$', raw)
        if match:
            out.append(("Makefile", number, match.group(1).replace("$(DEMO_SOCKET)", "$S")))
    return out


def all_examples() -> list[tuple[str, int, str]]:
    docs = sorted((REPO / "docs").glob("**/*.md")) if (REPO / "docs").is_dir() else []
    examples = [e for path in [REPO / "README.md", *docs] for e in example_lines(path)]
    return examples + makefile_hints()


def make_vars(target: str, **overrides: str) -> list[str]:
    extra = [f"{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(["make", "-s", "-C", str(REPO), target, *extra], capture_output=True,
                         text=True, check=True).stdout
    return shlex.split(out)


def test_the_docs_have_examples():
    examples = all_examples()
    assert len(examples) >= 30, examples  # the README's API section alone has more
    assert any("$TOKEN" in cmd for _, _, cmd in examples)
    assert any(cmd.startswith("zeusctl ") for _, _, cmd in examples)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    sock_dir = short_dir()
    socket_path = str(sock_dir / "zeusd.sock")
    uds = Daemon(tmp, ["serve", *make_vars("demo-args", DEMO_LEASES=str(tmp / "leases-uds")),
                       "--socket-path", socket_path],
                 wait_path=socket_path)
    key = tmp / "signing.key"
    key.write_bytes(os.urandom(32))
    tcp_args = make_vars("demo-tcp-args", DEMO_KEY=str(key))
    assert f"127.0.0.1:{DEMO_PORT}" in tcp_args
    tcp_args[tcp_args.index(f"127.0.0.1:{DEMO_PORT}")] = "127.0.0.1:0"
    tcp = Daemon(tmp, ["serve", *make_vars("demo-args", DEMO_LEASES=str(tmp / "leases-tcp")),
                       *tcp_args])
    try:
        port = _wait_tcp_port(tcp)
        token = sign({"sub": "demo", "scopes": ["gpu-control", "gpu-read", "cpu-read"]},
                     key=key.read_bytes())
        yield {"S": socket_path, "TOKEN": token, "PORT": port, "ZEUSD_SOCK_PATH": socket_path}
    finally:
        for daemon in (uds, tcp):
            daemon.stop()
            assert "Traceback" not in daemon.log(), daemon.log()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _wait_tcp_port(daemon: Daemon) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"serving on tcp:[0-9.]+:(\d+)", daemon.log())
        if match:
            return match.group(1)
        assert daemon.proc.poll() is None, daemon.log()
        time.sleep(0.05)
    raise AssertionError(f"the TCP demo did not listen:\n{daemon.log()}")


def _run(command: str, env: dict) -> tuple[str, str]:
    """(outcome, output): curl's HTTP status, or zeusctl's exit code as "exit N"."""
    command = command.replace(f"127.0.0.1:{DEMO_PORT}", f"127.0.0.1:{env['PORT']}")
    if command.startswith("zeusctl "):
        if "watch" in command and "--count" not in command and "--duration" not in command:
            command += " --duration 1"
        argv = ["bash", "-c", f"{shlex.quote(str(REPO / '.venv/bin/zeusctl'))}"
                f"{command[len('zeusctl'):]}"] if (REPO / ".venv/bin/zeusctl").exists() else \
            ["bash", "-c", f"python3 -m zeusd.ctl{command[len('zeusctl'):]}"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(REPO),
                              timeout=60, check=False)
        return f"exit {proc.returncode}", proc.stdout + proc.stderr
    # Streams never end: --max-time stops them and -w still prints the status of the reply.
    proc = subprocess.run(["bash", "-c", f"{command} -s -o /dev/null -w '%{{http_code}}' "
                           "--max-time 2"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    return proc.stdout.strip(), proc.stderr


@pytest.mark.parametrize("where, number, command", all_examples(),
                         ids=[f"{w}:{n}" for w, n, _ in all_examples()])
def test_example_answers_200(demo, where, number, command):
    env = {**os.environ, **demo, "PYTHONPATH": str(REPO)}
    outcome, output = _run(command, env)
    expected = "exit 0" if command.startswith("zeusctl ") else "200"
    assert outcome == expected, f"{where}:{number}: {command}\n{output}"


def test_the_simulated_cpus_count_energy(demo):
    """`make demo` has CPUs without RAPL: their counters advance between two reads."""
    url = "'http://localhost/cpu/get_cumulative_energy?cpu=true&dram=true'"
    reads = [subprocess.run(["bash", "-c", f"curl -s --unix-socket {demo['S']} {url}"],
                            capture_output=True, text=True, check=True).stdout
             for _ in range(2)]
    first, second = (json.loads(r) for r in reads)
    assert set(first) == {"0", "1"}
    for cpu in ("0", "1"):
        assert second[cpu]["cpu_energy_uj"] > first[cpu]["cpu_energy_uj"]
        assert second[cpu]["dram_energy_uj"] > first[cpu]["dram_energy_uj"]


@needs_real_users
def test_the_demo_as_an_ordinary_user_shows_the_policy(tmp_path):
    """The README's recipe: `make demo DEMO_POLICY=.../deny-some.toml` run by an ordinary user,
    and that user's zeusctl: allowed within the range, denied outside it, with the reason."""
    policy = REPO / "policy" / "examples" / "deny-some.toml"
    with Accounts() as accounts:
        user = accounts.user("demo")
        sock_dir = short_dir()
        os.chown(sock_dir, user.uid, user.gid)  # the user's daemon creates its socket here
        socket_path = str(sock_dir / "zeusd.sock")
        args = ["serve", *make_vars("demo-args", DEMO_POLICY=str(policy),
                                    DEMO_LEASES=str(sock_dir / "leases")),
                "--socket-path", socket_path]
        prefix = ["setpriv", "--reuid", str(user.uid), "--regid", str(user.gid),
                  "--clear-groups"]
        daemon = Daemon(tmp_path, args, wait_path=socket_path, prefix=prefix)
        try:
            ctl = lambda *a: zeusctl_as(user, "--socket", socket_path, *a)  # noqa: E731
            who = ctl("--json", "whoami").json()
            assert who["caller"]["uid"] == user.uid
            assert [g["rule"] for g in who["policy"]["applies"]][-1] == "default"
            assert ctl("set", "power-limit", "300W", "--gpu", "0").code == 0
            over = ctl("set", "power-limit", "500W", "--gpu", "0")
            assert over.code == 4
            assert over.stderr == (
                "zeusctl: error: power_limit_mw 500000 is outside the range 250000-400000 that "
                f"the [defaults] allow uid {user.uid} on GPU 0\n")
            clocks = ctl("set", "gpu-clocks", "1980MHz", "--gpu", "0")
            assert clocks.code == 4 and "do not allow set_gpu_locked_clocks" in clocks.stderr
        finally:
            daemon.stop()
            shutil.rmtree(sock_dir, ignore_errors=True)
        assert "Traceback" not in daemon.log(), daemon.log()
