"""`zeusctl` against the real daemon, run as real unprivileged users (setpriv).

Every subcommand, `--json` shapes, the exit codes, and each error path: the daemon's
message must reach the user verbatim, and a denied or malformed change must leave the
simulated GPUs untouched (their journal of NVML setters, and the getters).
"""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import time

import pytest

from tests.support.checks import query
from tests.support.ctl import _ENTRY, zeusctl_as
from tests.support.daemon import REPO
from tests.support.harness import short_dir
from tests.support.sim import (
    RESET_GPU_CLOCKS,
    RESET_MEM_CLOCKS,
    SET_GPU_CLOCKS,
    SET_MEM_CLOCKS,
    SET_PERSISTENCE,
    SET_POWER,
)
from tests.support.tokens import SIGNING_KEY, TOKEN_POLICY, sign
from tests.support.users import Accounts, UserAgent, needs_real_users, user_python

pytestmark = needs_real_users

POLICY = """\
version = 1

[defaults]                 # everybody else: reads only
operations = ["gpu-read"]

[[rule]]                   # may read nothing of GPU 0
name = "blind"
users = ["{blind}"]
gpus = [0]
operations = []

[[rule]]
name = "team"
groups = ["{team}"]
gpus = [0, 1]
operations = ["all"]
power_limit_w = [200, 450]
gpu_clock_mhz = [100, 3000]
mem_clock_mhz = [1000, 4000]
"""

STATUS_KEYS = {"id", "name", "power_mw", "power_limit_mw", "min_power_limit_mw",
               "max_power_limit_mw", "persistence_mode", "leases"}


class World:
    def __init__(self, daemon, users, team) -> None:
        self.daemon, self.users, self.team = daemon, users, team
        self.socket = daemon.socket_path
        self.agents: dict[str, UserAgent] = {}

    def ctl(self, user: str | None, *args: str, env: dict | None = None):
        account = None if user is None else self.users[user]
        return zeusctl_as(account, "--socket", self.socket, *args, env=env)

    def direct(self, user: str, method: str, path: str):
        """The same request without zeusctl, as the same user: what the daemon says."""
        if user not in self.agents:
            self.agents[user] = UserAgent(self.users[user], self.daemon.address)
        return self.agents[user].request(method, path)

    def limits(self) -> dict[str, int]:
        reply = self.daemon.get("/gpu/get_power_limit")
        assert reply.status == 200, reply.text
        return {k: v["power_limit_mw"] for k, v in reply.json().items()}

    def applied_since(self, mark: int) -> list:
        self.limits()  # a read on every GPU queues behind anything still pending there
        return self.daemon.gpus.since(mark)


@pytest.fixture(scope="module")
def world(start_zeusd):
    with Accounts() as accounts:
        team = accounts.group("ctl")
        users = {"mem": accounts.user("cmem", supplementary=(team,)),
                 "out": accounts.user("cout"), "blind": accounts.user("cbl")}
        daemon = start_zeusd(policy_text=POLICY.format(blind=users["blind"].name,
                                                       team=team.name),
                             enable="gpu-control,gpu-read")
        world = World(daemon, users, team)
        try:
            yield world
        finally:
            for agent in world.agents.values():
                agent.close()


def assert_unchanged(world: World, mark: int, limits: dict) -> None:
    assert world.applied_since(mark) == []
    assert world.limits() == limits


# -- status ------------------------------------------------------------------------------


def test_status_table_as_a_user(world):
    limits = world.limits()
    result = world.ctl("out", "status")
    assert (result.code, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["GPU", "NAME", "POWER", "LIMIT", "RANGE", "PERSISTENCE", "LEASES"]
    assert len(lines) == 5
    for index, line in enumerate(lines[1:]):
        assert line.startswith(f"{index}    NVIDIA H200  "), line
        assert f"  {limits[str(index)] // 1000} W  200 W - 700 W  on           -" in line, line


def test_status_json_shape_matches_the_daemons_reads(world):
    result = world.ctl("out", "--json", "status")
    assert result.code == 0, result.stderr
    body = result.json()
    assert set(body) == {"gpus", "errors"} and body["errors"] == []
    assert [g["id"] for g in body["gpus"]] == [0, 1, 2, 3]
    limits = world.limits()
    for gpu in body["gpus"]:
        assert set(gpu) == STATUS_KEYS
        assert gpu["name"] == "NVIDIA H200"
        assert gpu["power_limit_mw"] == limits[str(gpu["id"])]
        assert (gpu["min_power_limit_mw"], gpu["max_power_limit_mw"]) == (200_000, 700_000)
        assert gpu["persistence_mode"] is True
        assert isinstance(gpu["power_mw"], int) and gpu["power_mw"] > 0


def test_status_of_some_gpus(world):
    result = world.ctl("out", "status", "--gpu", "2", "--json")
    assert result.code == 0 and [g["id"] for g in result.json()["gpus"]] == [2]


def test_status_unknown_gpu_is_the_daemons_message(world):
    expected = world.direct("out", "GET", "/gpu/get_power?gpu_ids=0,9").json()["error"]
    assert expected == "GPU 9 not found"
    result = world.ctl("out", "status", "--gpu", "0,9")
    assert (result.code, result.stdout) == (5, "")
    assert result.stderr == f"zeusctl: error: {expected}\n"


def test_status_with_denied_reads_lists_them_and_exits_denied(world):
    expected = world.direct("blind", "GET", "/gpu/get_power_limit?gpu_ids=0").json()["error"]
    result = world.ctl("blind", "--json", "status", "--gpu", "0")
    assert result.code == 4, result.stderr
    body = result.json()
    assert body["gpus"][0]["power_limit_mw"] is None
    assert body["gpus"][0]["name"] == "NVIDIA H200"  # /discover still names it
    routes = ["/gpu/get_power", "/gpu/get_power_limit", "/gpu/get_power_limit_constraints",
              "/gpu/get_persistence_mode"]
    assert [e["route"] for e in body["errors"]] == routes
    assert all(e["status"] == 403 for e in body["errors"])
    limit_error = body["errors"][1]["message"]
    assert limit_error == expected and "blind" in limit_error
    assert f"zeusctl: /gpu/get_power_limit: {expected}\n" in result.stderr


def test_status_without_gpus_asked_leaves_out_what_the_policy_hides(world):
    result = world.ctl("blind", "--json", "status")
    assert result.code == 0, result.stderr
    gpus = {g["id"]: g for g in result.json()["gpus"]}
    assert gpus[0]["power_limit_mw"] is None and gpus[1]["power_limit_mw"] is not None


# -- whoami ------------------------------------------------------------------------------


def test_whoami_names_the_caller_and_its_rules(world):
    mem = world.users["mem"]
    result = world.ctl("mem", "whoami")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"caller: uid {mem.uid} gid {mem.gid} pid ")
    assert str(world.team.gid) in result.stdout.splitlines()[0]
    assert "API groups enabled: gpu-control, gpu-read\n" in result.stdout
    assert "  rule 'team' on GPUs 0,1: " in result.stdout
    assert "(limits: power 200 W-450 W; gpu 100 MHz-3000 MHz; mem 1000 MHz-4000 MHz)" \
        in result.stdout
    assert "  rule 'default' on GPUs all: gpu-read" in result.stdout


def test_whoami_json(world):
    out = world.users["out"]
    body = world.ctl("out", "whoami", "--json").json()
    assert set(body) == {"caller", "policy", "auth_required", "enabled_api_groups"}
    assert (body["caller"]["uid"], body["caller"]["gid"]) == (out.uid, out.gid)
    assert body["caller"]["transport"] == "unix"
    assert [g["rule"] for g in body["policy"]["applies"]] == ["default"]
    assert body["auth_required"] is False


# -- set / reset: allowed ----------------------------------------------------------------


def test_set_power_limit_on_two_gpus(world):
    mark = world.daemon.gpus.mark()
    result = world.ctl("mem", "set", "power-limit", "300W", "--gpu", "0,1")
    assert (result.code, result.stdout, result.stderr) == (0, "GPU 0,1: power limit 300 W\n", "")
    applied = sorted(world.daemon.gpus.since(mark))  # GPUs run in parallel: any order
    assert applied == [(0, SET_POWER, [300_000]), (1, SET_POWER, [300_000])]
    assert world.limits()["0"] == world.limits()["1"] == 300_000


def test_set_json_shape_and_units(world):
    mark = world.daemon.gpus.mark()
    result = world.ctl("mem", "--json", "set", "power-limit", "0.25kW", "--gpu", "1")
    assert result.code == 0, result.stderr
    assert result.json() == {"ok": True, "operation": "set_power_limit", "gpu_ids": [1],
                             "block": True, "params": {"power_limit_mw": 250_000}}
    assert world.daemon.gpus.since(mark) == [(1, SET_POWER, [250_000])]


def test_set_without_blocking(world):
    mark = world.daemon.gpus.mark()
    result = world.ctl("mem", "set", "power-limit", "260000mW", "--gpu", "0", "--no-block")
    assert result.code == 0, result.stderr
    assert result.stdout == "GPU 0: power limit 260 W (queued, not waited for)\n"
    assert world.applied_since(mark) == [(0, SET_POWER, [260_000])]


@pytest.mark.parametrize("args, text, applied", [
    (("set", "gpu-clocks", "900MHz-1.98GHz"), "GPU clocks locked to 900-1980 MHz",
     [SET_GPU_CLOCKS, [900, 1980]]),
    (("set", "mem-clocks", "3201MHz"), "memory clocks locked to 3201 MHz",
     [SET_MEM_CLOCKS, [3201, 3201]]),
    (("set", "persistence", "off"), "persistence mode off", [SET_PERSISTENCE, [False]]),
    (("set", "persistence", "on"), "persistence mode on", [SET_PERSISTENCE, [True]]),
    (("reset", "gpu-clocks"), "GPU clocks unlocked", [RESET_GPU_CLOCKS, []]),
    (("reset", "mem-clocks"), "memory clocks unlocked", [RESET_MEM_CLOCKS, []]),
])
def test_every_setting(world, args, text, applied):
    mark = world.daemon.gpus.mark()
    result = world.ctl("mem", *args, "--gpu", "1")
    assert (result.code, result.stdout, result.stderr) == (0, f"GPU 1: {text}\n", "")
    assert world.daemon.gpus.since(mark) == [(1, *applied)]


def test_reset_both_clocks(world):
    mark = world.daemon.gpus.mark()
    result = world.ctl("mem", "--json", "reset", "clocks", "--gpu", "0")
    assert result.json() == {"ok": True, "operation": "reset_locked_clocks", "gpu_ids": [0],
                             "block": True, "params": {}}
    assert world.daemon.gpus.since(mark) == [(0, RESET_GPU_CLOCKS, []), (0, RESET_MEM_CLOCKS, [])]


def test_root_without_gpu_changes_every_gpu(world):
    mark = world.daemon.gpus.mark()
    result = world.ctl(None, "set", "power-limit", "400W")
    assert result.stdout == "GPU 0,1,2,3: power limit 400 W\n", result.stderr
    assert sorted(g for g, _, _ in world.daemon.gpus.since(mark)) == [0, 1, 2, 3]


# -- set: refused ------------------------------------------------------------------------


def _expected_error(world, user, path) -> str:
    reply = world.direct(user, "POST", path)
    assert reply.status in (400, 403), reply.body
    return reply.json()["error"]


def test_denied_set_changes_nothing_and_shows_the_policy_message(world):
    path = query("/gpu/set_power_limit", gpu_ids=0, power_limit_mw=300_000, block=True)
    limits, mark = world.limits(), world.daemon.gpus.mark()
    expected = _expected_error(world, "out", path)
    result = world.ctl("out", "set", "power-limit", "300W", "--gpu", "0")
    assert (result.code, result.stdout) == (4, "")
    assert result.stderr == f"zeusctl: error: {expected}\n"
    assert_unchanged(world, mark, limits)


def test_denied_json_error_shape(world):
    path = query("/gpu/set_power_limit", gpu_ids=0, power_limit_mw=500_000, block=False)
    limits, mark = world.limits(), world.daemon.gpus.mark()
    expected = _expected_error(world, "mem", path)
    assert "rule 'team'" in expected and "200000-450000" in expected
    result = world.ctl("mem", "--json", "set", "power-limit", "500W", "--gpu", "0", "--no-block")
    assert result.code == 4
    assert result.json() == {"ok": False, "error": {"exit_code": 4, "message": expected,
                                                    "status": 403}}
    assert_unchanged(world, mark, limits)


def test_bad_unit_is_a_usage_error_and_sends_nothing(world):
    limits, mark = world.limits(), world.daemon.gpus.mark()
    result = world.ctl("mem", "set", "power-limit", "300", "--gpu", "0")
    assert (result.code, result.stdout) == (2, "")
    assert result.stderr == ("zeusctl: error: invalid power '300': give a unit (mW, W, kW), "
                             "e.g. 300W, 300000mW or 1.2kW\n")
    bad_list = world.ctl("mem", "set", "power-limit", "300W", "--gpu", "zero")
    assert bad_list.code == 2
    assert "invalid GPU list 'zero' (e.g. 0,1 or all)" in bad_list.stderr
    assert world.ctl("mem", "set", "clock-speed", "1GHz").code == 2
    assert_unchanged(world, mark, limits)


def test_unknown_gpu_is_the_daemons_400(world):
    path = query("/gpu/set_power_limit", gpu_ids=7, power_limit_mw=300_000, block=True)
    limits, mark = world.limits(), world.daemon.gpus.mark()
    expected = _expected_error(world, "mem", path)
    assert expected == "GPU index 7 does not exist."
    result = world.ctl("mem", "set", "power-limit", "300W", "--gpu", "7")
    assert (result.code, result.stderr) == (5, f"zeusctl: error: {expected}\n")
    assert_unchanged(world, mark, limits)


def test_nvml_400_is_shown_verbatim_per_gpu(world):
    path = query("/gpu/set_gpu_locked_clocks", gpu_ids=0, min_clock_mhz=100, max_clock_mhz=200,
                 block=True)
    reply = world.direct("mem", "POST", path)
    assert reply.status == 400
    per_gpu = reply.json()["errors"]
    mark = world.daemon.gpus.mark()
    result = world.ctl("mem", "--json", "set", "gpu-clocks", "100-200MHz", "--gpu", "0")
    assert result.code == 5
    assert result.stderr == f"zeusctl: error: GPU 0: {per_gpu['0']}\n"
    assert result.json()["error"] == {"exit_code": 5, "status": 400, "gpus": per_gpu,
                                      "message": f"GPU 0: {per_gpu['0']}"}
    assert world.applied_since(mark) == []


# -- cannot connect ----------------------------------------------------------------------


def test_no_socket(world):
    result = zeusctl_as(world.users["out"], "--socket", "/tmp/zeusd-none/zeusd.sock", "status")
    assert (result.code, result.stdout) == (3, "")
    assert result.stderr == ("zeusctl: error: cannot reach zeusd at /tmp/zeusd-none/zeusd.sock: "
                             "No such file or directory\n")


def test_socket_nobody_listens_on(world):
    directory = short_dir()
    path = str(directory / "stale.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.close()  # the file stays, nothing listens: what a crashed daemon leaves
    os.chmod(path, 0o666)
    result = zeusctl_as(world.users["out"], "--socket", path, "--json", "whoami")
    assert result.code == 3
    assert result.json()["error"]["message"] == f"cannot reach zeusd at {path}: Connection refused"


def test_socket_the_user_may_not_open(world):
    directory = short_dir()
    os.chmod(directory, 0o700)  # root's; the user cannot reach inside
    result = zeusctl_as(world.users["out"], "--socket", str(directory / "zeusd.sock"), "status")
    assert result.code == 3 and result.stderr.endswith(": Permission denied\n"), result.stderr


def test_invalid_url_is_a_usage_error():
    result = zeusctl_as(None, "--url", "ftp://x", "status")
    assert (result.code, result.stderr) == (
        2, "zeusctl: error: invalid --url 'ftp://x' (e.g. http://127.0.0.1:4938)\n")


# -- watch -------------------------------------------------------------------------------


def test_watch_plain_output_ends_after_count(world):
    result = world.ctl("mem", "watch", "--count", "6", "--gpu", "0,1")
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout  # not a terminal: no cursor movement
    last = result.stdout.strip().split("\n\n")[-1].splitlines()
    assert last[0].split() == ["GPU", "NAME", "POWER", "HISTORY"]
    assert [line.split()[0] for line in last[1:]] == ["0", "1"]
    for line in last[1:]:
        assert " W  " in line and line[-1] in "▁▂▃▄▅▆▇█", line


def test_watch_json_passes_the_events_through(world):
    result = world.ctl("mem", "--json", "watch", "--count", "5", "--gpu", "1")
    assert result.code == 0, result.stderr
    events = result.json_lines()
    assert len(events) == 5
    for event in events:
        assert set(event) == {"timestamp_ms", "gpu_id", "power_mw"} and event["gpu_id"] == 1


def test_watch_duration_ends_it(world):
    result = world.ctl("mem", "--json", "watch", "--duration", "1", "--gpu", "0")
    assert result.code == 0, result.stderr
    assert result.json_lines(), "no event within a second at the default 20 Hz"


def test_watch_denied_gpu(world):
    reply = world.direct("blind", "GET", "/gpu/stream_power?gpu_ids=0")
    assert reply.status == 403
    result = world.ctl("blind", "watch", "--gpu", "0", "--count", "1")
    assert (result.code, result.stdout) == (4, "")
    assert result.stderr == f"zeusctl: error: {reply.json()['error']}\n"


def test_watch_redraws_in_place_on_a_terminal(world):
    """Under a pseudo-terminal zeusctl moves the cursor back up and redraws the frame."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: zeusctl as the user, attached to the terminal
        account = world.users["mem"]
        os.execvp("setpriv", ["setpriv", "--reuid", str(account.uid), "--regid",
                              str(account.gid), "--init-groups", user_python(), "-I", "-c",
                              _ENTRY.format(repo=str(REPO)), "--socket", world.socket, "watch",
                              "--count", "30", "--interval", "0.05", "--gpu", "0"])
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"\x1b[2F\x1b[J" in output  # two lines up (header + GPU 0), clear, redraw


# -- TCP and tokens ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tcp_daemon(start_zeusd, module_tmp):
    key = module_tmp / "signing.key"
    key.write_bytes(SIGNING_KEY)
    return start_zeusd(tcp=True, policy_text=TOKEN_POLICY, enable="gpu-control,gpu-read",
                       args=("--signing-key-path", str(key)))


def test_tcp_with_token_from_the_environment(tcp_daemon):
    url = f"http://{tcp_daemon.address}"
    token = sign({"sub": "alice", "scopes": ["gpu-read", "gpu-control"]})
    mark = tcp_daemon.gpus.mark()
    result = zeusctl_as(None, "--url", url, "set", "power-limit", "333W", "--gpu", "2",
                        env={"ZEUSD_TOKEN": token})
    assert (result.code, result.stderr) == (0, ""), result.stderr
    assert tcp_daemon.gpus.since(mark) == [(2, SET_POWER, [333_000])]
    who = zeusctl_as(None, "--url", url, "--json", "whoami", env={"ZEUSD_TOKEN": token})
    assert who.json()["caller"] == {"transport": "tcp", "subject": "alice"}


def test_tcp_without_or_with_a_bad_token_is_denied(tcp_daemon):
    url = f"http://{tcp_daemon.address}"
    mark = tcp_daemon.gpus.mark()
    missing = zeusctl_as(None, "--url", url, "set", "power-limit", "300W", "--gpu", "0")
    assert missing.code == 4
    assert missing.stderr == ("zeusctl: error: Authentication required. Provide an "
                              "Authorization: Bearer <token> header.\n")
    bad = zeusctl_as(None, "--url", url, "status", env={"ZEUSD_TOKEN": "not.a.token"})
    assert bad.code == 4 and "Invalid token: " in bad.stderr
    scope = zeusctl_as(None, "--url", url, "set", "power-limit", "300W", "--gpu", "0",
                       env={"ZEUSD_TOKEN": sign({"sub": "alice", "scopes": ["gpu-read"]})})
    assert scope.code == 4
    assert scope.stderr == ("zeusctl: error: Token for user 'alice' lacks required scope "
                            "'gpu-control'. Token scopes: ['gpu-read']\n")
    assert tcp_daemon.gpus.since(mark) == []


def test_zeusctl_needs_only_the_standard_library():
    """What the .deb relies on: importing every zeusctl module pulls in nothing else."""
    code = ("import sys; sys.path.insert(0, {repo!r}); before = set(sys.modules); "
            "import zeusd.ctl.cli; new = {{m.split('.')[0] for m in set(sys.modules) - before}}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {{'zeusd'}}))")
    out = subprocess.run([user_python(), "-I", "-c", code.format(repo=str(REPO))],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
