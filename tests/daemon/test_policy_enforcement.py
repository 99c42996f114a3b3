"""The access policy, enforced by the real daemon on its real Unix socket.

Real Unix users and groups are created for the module (random names, removed afterwards);
each request is made by a client process running as one of them (setpriv), so the daemon
decides from SO_PEERCRED / SO_PEERGROUPS exactly as in production. Every denial is checked
twice for "nothing changed": the simulated GPUs' journal of NVML setters, and the getters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field

import pytest

from tests.support.checks import query
from tests.support.client import Client
from tests.support.daemon import Daemon
from tests.support.policy_daemon import (
    PolicyDaemon,
    serve_expecting_failure,
    traversable_dir,
)
from tests.support.sim import (
    RESET_GPU_CLOCKS,
    SET_GPU_CLOCKS,
    SET_MEM_CLOCKS,
    SET_PERSISTENCE,
    SET_POWER,
)
from tests.support.users import Account, Accounts, Group, UserAgent, needs_real_users
from zeusd.audit_flood import WINDOW_S
from zeusd.devices.loader import open_backend

pytestmark = needs_real_users

POLICY = """\
version = 1

[defaults]                          # callers no rule matches: reads only
operations = ["gpu-read"]

[[rule]]                            # one user may not read GPU 3 (first match decides)
name = "no-read-3"
users = ["{blind}"]
gpus = [3]
operations = []

[[rule]]
name = "team"
groups = ["{team}"]
gpus = [0, 1]
operations = ["set_power_limit", "set_gpu_locked_clocks", "reset_gpu_locked_clocks",
              "set_mem_locked_clocks", "gpu-read"]
power_limit_w = [200, 450]
gpu_clock_mhz = [900, 1500]
mem_clock_mhz = [2201, 2201]

[[rule]]
name = "persist"
groups = ["{persist}"]
operations = ["set_persistence_mode", "gpu-read"]
"""

RANGE_MW = "200000-450000"
H200_MAX_MW = 700_000  # the simulated H200's hardware range is 200000-700000 mW


@dataclass
class World:
    daemon: PolicyDaemon
    team: Group
    persist: Group
    users: dict[str, Account]
    uuids: list[str]
    root: Client
    agents: dict[tuple, UserAgent] = field(default_factory=dict)

    def agent(self, key: str, *, clear_groups: bool = False) -> UserAgent:
        """A client process (one keep-alive connection) as user ``key``, kept for the module."""
        slot = (key, clear_groups)
        if slot not in self.agents:
            self.agents[slot] = UserAgent(self.users[key], self.daemon.address,
                                          clear_groups=clear_groups)
        return self.agents[slot]

    # -- what the GPUs look like -------------------------------------------

    def limits(self) -> dict[str, int]:
        reply = self.root.get("/gpu/get_power_limit")
        assert reply.status == 200, reply.text
        return {k: v["power_limit_mw"] for k, v in reply.json().items()}

    def persistence(self) -> dict[str, bool]:
        reply = self.root.get("/gpu/get_persistence_mode")
        assert reply.status == 200, reply.text
        return {k: v["enabled"] for k, v in reply.json().items()}

    def mark(self) -> int:
        return self.daemon.gpus.mark()

    def applied(self, mark: int) -> list[tuple[int, str, list]]:
        """Setters applied since ``mark``, after a barrier: a read on every GPU runs behind
        anything a request may have queued there (per-GPU FIFO), so a deferred change
        would be in the journal by now."""
        self.limits()
        return self.daemon.gpus.since(mark)


@pytest.fixture(scope="module")
def world():
    with Accounts() as accounts:
        team = accounts.group("team")
        persist = accounts.group("pers")
        users = {
            "sup": accounts.user("sup", supplementary=(team,)),   # team via supplementary
            "pri": accounts.user("pri", primary=team),            # team as primary group
            "out": accounts.user("out"),                          # in no rule
            "pm": accounts.user("pm", supplementary=(persist,)),
            "blind": accounts.user("bl"),
        }
        daemon = PolicyDaemon(POLICY.format(blind=users["blind"].name, team=team.name,
                                            persist=persist.name))
        world = None
        try:
            backend = open_backend("simulated", "h200x4")
            uuids = [device.uuid() for device in backend.devices()]
            backend.close()
            world = World(daemon, team, persist, users, uuids, daemon.root_client())
            yield world
        finally:
            for agent in (world.agents.values() if world else ()):
                agent.close()
            daemon.stop()
            assert "Traceback" not in daemon.log(), daemon.log()


def set_power(gpu_ids, mw: int, block: bool = True) -> str:
    return query("/gpu/set_power_limit", gpu_ids=gpu_ids, power_limit_mw=mw, block=block)


def assert_denied(reply, rule: str, *fragments: str) -> dict:
    """A policy 403: JSON ``{"error": ..., "rule": rule}`` whose message has ``fragments``."""
    assert reply.status == 403, reply.body
    assert reply.content_type.startswith("application/json"), reply.content_type
    body = reply.json()
    assert body["rule"] == rule, body
    assert isinstance(body["error"], str) and body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], body
    return body


def assert_ok(reply) -> None:
    assert (reply.status, reply.body) == (200, ""), reply.body


# -- who the caller is: groups from the kernel -------------------------------------------


def test_supplementary_member_sets_power_limit_in_range(world):
    sup = world.agent("sup")
    assert world.team.gid in sup.ids["groups"] and sup.ids["gid"] != world.team.gid
    mark = world.mark()
    assert_ok(sup.post(set_power(0, 250_000)))
    assert world.daemon.gpus.since(mark) == [(0, SET_POWER, [250_000])]
    reply = sup.get("/gpu/get_power_limit?gpu_ids=0")
    assert reply.status == 200 and reply.json() == {"0": {"power_limit_mw": 250_000}}


def test_primary_group_member_sets_power_limit_in_range(world):
    pri = world.agent("pri")
    assert pri.ids["gid"] == world.team.gid
    mark = world.mark()
    assert_ok(pri.post(set_power(1, 260_000)))
    assert world.daemon.gpus.since(mark) == [(1, SET_POWER, [260_000])]
    reply = pri.get("/gpu/get_power_limit?gpu_ids=1")
    assert reply.status == 200 and reply.json() == {"1": {"power_limit_mw": 260_000}}


def test_primary_gid_alone_grants_membership(world):
    """No supplementary groups at all: the team gid is only the process's primary gid."""
    pri = world.agent("pri", clear_groups=True)
    assert pri.ids["gid"] == world.team.gid and pri.ids["groups"] == []
    mark = world.mark()
    assert_ok(pri.post(set_power(1, 265_000)))
    assert world.daemon.gpus.since(mark) == [(1, SET_POWER, [265_000])]
    assert world.limits()["1"] == 265_000


def test_membership_is_what_the_kernel_reports_not_the_user_database(world):
    """The user database says 'sup' is in the team; its process dropped that group."""
    sup = world.agent("sup", clear_groups=True)
    assert world.team.gid not in sup.ids["groups"] and sup.ids["gid"] != world.team.gid
    before, mark = world.limits(), world.mark()
    assert_denied(sup.post(set_power(0, 251_000)), "default")
    assert world.applied(mark) == [] and world.limits() == before


# -- values, GPUs, multi-GPU, non-blocking ------------------------------------------------


@pytest.mark.parametrize("mw", [200_000, 450_000])
def test_range_bounds_are_inclusive(world, mw):
    mark = world.mark()
    assert_ok(world.agent("sup").post(set_power(0, mw)))
    assert world.daemon.gpus.since(mark) == [(0, SET_POWER, [mw])]
    assert world.limits()["0"] == mw


@pytest.mark.parametrize("mw", [150_000, 450_001, 500_000, H200_MAX_MW])
def test_power_limit_outside_the_range_is_denied_and_nothing_changes(world, mw):
    sup = world.agent("sup")
    before, mark = world.limits(), world.mark()
    body = assert_denied(sup.post(set_power(0, mw)), "team",
                         f"power_limit_mw {mw}", RANGE_MW, "'team'", "GPU 0")
    assert set(body) <= {"error", "rule", "allowed_range"}, body
    assert world.applied(mark) == []
    assert world.limits() == before


def test_gpu_outside_the_rule_is_denied_by_the_defaults(world):
    sup = world.agent("sup")
    before, mark = world.limits(), world.mark()
    assert_denied(sup.post(set_power(2, 250_000)), "default", "GPU 2", "set_power_limit")
    assert world.applied(mark) == [] and world.limits() == before


@pytest.mark.parametrize("gpu_ids", ["0,2", "2,0", "0,1,2"])
def test_multi_gpu_write_with_one_denied_gpu_changes_none(world, gpu_ids):
    sup = world.agent("sup")
    assert_ok(sup.post(set_power("0,1", 240_000)))  # a known state different from the request
    before, mark = world.limits(), world.mark()
    assert_denied(sup.post(set_power(gpu_ids, 333_000)), "default", "GPU 2")
    assert world.applied(mark) == []
    assert world.limits() == before and before["0"] == 240_000


def test_multi_gpu_write_all_allowed_changes_all(world):
    mark = world.mark()
    assert_ok(world.agent("pri").post(set_power("0,1", 345_000)))
    assert sorted(world.daemon.gpus.since(mark)) == [(0, SET_POWER, [345_000]),
                                                    (1, SET_POWER, [345_000])]
    limits = world.limits()
    assert (limits["0"], limits["1"]) == (345_000, 345_000)


@pytest.mark.parametrize("gpu_ids,mw,rule", [("0", 500_000, "team"), ("0,2", 270_000, "default"),
                                             ("3", 270_000, "default")])
def test_non_blocking_denial_is_answered_at_once_and_nothing_is_queued(world, gpu_ids, mw, rule):
    sup = world.agent("sup")
    before, mark = world.limits(), world.mark()
    assert_denied(sup.post(set_power(gpu_ids, mw, block=False)), rule)
    assert world.applied(mark) == []  # after a barrier on every GPU
    assert world.limits() == before


def test_non_blocking_allowed_write_is_applied(world):
    """The barrier used above does see deferred changes."""
    mark = world.mark()
    assert_ok(world.agent("sup").post(set_power(1, 275_000, block=False)))
    assert world.applied(mark) == [(1, SET_POWER, [275_000])]


# -- defaults, root ------------------------------------------------------------------------


def test_user_in_no_rule_gets_the_defaults(world):
    out = world.agent("out")
    for path in ("/gpu/get_power_limit", "/gpu/get_power_limit?gpu_ids=0,1,2,3",
                 "/gpu/get_power?gpu_ids=2", "/gpu/get_persistence_mode",
                 "/gpu/get_power_limit_constraints?gpu_ids=3"):
        reply = out.get(path)
        assert reply.status == 200, (path, reply.body)
    before, mark = world.limits(), world.mark()
    for path in (set_power(0, 250_000), set_power("0,1,2,3", 250_000),
                 query("/gpu/set_persistence_mode", gpu_ids=0, enabled=False, block=True),
                 query("/gpu/reset_locked_clocks", gpu_ids=1, block=True)):
        assert_denied(out.post(path), "default", "[defaults]")
    assert world.applied(mark) == [] and world.limits() == before


def test_root_is_allowed_outside_every_rule_range(world):
    mark = world.mark()
    root = Client(world.daemon.address)  # a fresh connection as uid 0
    try:
        reply = root.post(set_power("0,3", 600_000))
        assert (reply.status, reply.body) == (200, b""), reply.text
        assert sorted(world.daemon.gpus.since(mark)) == [(0, SET_POWER, [600_000]),
                                                        (3, SET_POWER, [600_000])]
        limits = world.limits()
        assert (limits["0"], limits["3"]) == (600_000, 600_000)
        # the hardware's own range still applies to root: NVML refuses, not the policy
        reply = root.post(set_power(0, H200_MAX_MW + 1000))
        assert reply.status == 400 and "rule" not in reply.json(), reply.text
    finally:
        root.close()


# -- the legacy path-style API -------------------------------------------------------------


def test_legacy_route_is_enforced_the_same(world):
    sup = world.agent("sup")
    before, mark = world.limits(), world.mark()
    reply = sup.post("/gpu/0/set_power_limit", {"power_limit_mw": 500_000, "block": True})
    assert reply.status == 403 and reply.content_type.startswith("text/plain"), reply
    assert "power_limit_mw 500000" in reply.body and RANGE_MW in reply.body, reply.body
    assert "'team'" in reply.body, reply.body
    reply = sup.post("/gpu/2/set_power_limit", {"power_limit_mw": 250_000, "block": False})
    assert reply.status == 403 and reply.content_type.startswith("text/plain"), reply
    assert "GPU 2" in reply.body and "[defaults]" in reply.body, reply.body
    for op, body in (("set_persistence_mode", {"enabled": False, "block": True}),
                     ("set_persistent_mode", {"enabled": False, "block": True}),
                     ("set_gpu_locked_clocks",
                      {"min_clock_mhz": 600, "max_clock_mhz": 1500, "block": True}),
                     ("reset_mem_locked_clocks", {"block": True})):
        reply = sup.post(f"/gpu/0/{op}", body)
        assert reply.status == 403 and reply.content_type.startswith("text/plain"), (op, reply)
        assert "'team'" in reply.body, (op, reply.body)
    assert world.applied(mark) == [] and world.limits() == before
    assert_ok(sup.post("/gpu/0/set_power_limit", {"power_limit_mw": 280_000, "block": True}))
    assert world.daemon.gpus.since(mark) == [(0, SET_POWER, [280_000])]
    assert world.limits()["0"] == 280_000


# -- clocks and persistence mode -----------------------------------------------------------


def clocks(op: str, gpu: int, low: int, high: int) -> str:
    return query(f"/gpu/{op}", gpu_ids=gpu, min_clock_mhz=low, max_clock_mhz=high, block=True)


@pytest.mark.parametrize("low,high,field_name", [(600, 1500, "min_clock_mhz 600"),
                                                 (900, 1980, "max_clock_mhz 1980"),
                                                 (345, 1980, "min_clock_mhz 345")])
def test_gpu_clock_range_is_enforced(world, low, high, field_name):
    mark = world.mark()
    assert_denied(world.agent("sup").post(clocks("set_gpu_locked_clocks", 0, low, high)),
                  "team", field_name, "GPU clock range 900-1500", "'team'")
    assert world.applied(mark) == []


def test_gpu_clocks_inside_the_range_and_listed_reset_are_allowed(world):
    sup = world.agent("sup")
    mark = world.mark()
    assert_ok(sup.post(clocks("set_gpu_locked_clocks", 1, 900, 1500)))
    assert_ok(sup.post(query("/gpu/reset_gpu_locked_clocks", gpu_ids=1, block=True)))
    assert world.daemon.gpus.since(mark) == [(1, SET_GPU_CLOCKS, [900, 1500]),
                                             (1, RESET_GPU_CLOCKS, [])]


def test_mem_clock_range_and_unlisted_resets_are_enforced(world):
    sup = world.agent("sup")
    mark = world.mark()
    assert_denied(sup.post(clocks("set_mem_locked_clocks", 0, 2201, 3201)), "team",
                  "max_clock_mhz 3201", "memory clock range 2201-2201")
    for op in ("reset_mem_locked_clocks", "reset_locked_clocks"):
        assert_denied(sup.post(query(f"/gpu/{op}", gpu_ids=0, block=True)), "team",
                      f"{op} is not allowed", "'team'")
    assert world.applied(mark) == []
    assert_ok(sup.post(clocks("set_mem_locked_clocks", 0, 2201, 2201)))
    assert world.daemon.gpus.since(mark) == [(0, SET_MEM_CLOCKS, [2201, 2201])]


def test_persistence_mode_needs_its_permission(world):
    persistence = query("/gpu/set_persistence_mode", gpu_ids=2, enabled=False, block=True)
    before, mark = world.persistence(), world.mark()
    assert before["2"] is True
    # 'sup' may set power limits and clocks on GPUs 0-1, not persistence mode; GPU 2: defaults
    assert_denied(world.agent("sup").post(persistence.replace("gpu_ids=2", "gpu_ids=0")),
                  "team", "set_persistence_mode is not allowed")
    assert_denied(world.agent("sup").post(persistence), "default")
    assert world.applied(mark) == [] and world.persistence() == before
    pm = world.agent("pm")
    assert_ok(pm.post(persistence))
    assert world.daemon.gpus.since(mark) == [(2, SET_PERSISTENCE, [False])]
    assert pm.get("/gpu/get_persistence_mode?gpu_ids=2").json() == {"2": {"enabled": False}}
    # the persistence rule grants nothing else
    assert_denied(pm.post(set_power(2, 300_000)), "persist", "set_power_limit is not allowed")
    assert_ok(pm.post(persistence.replace("enabled=false", "enabled=true")))
    assert world.persistence() == before


# -- reads ----------------------------------------------------------------------------------


def test_denied_read_is_403_for_the_denied_gpu(world):
    blind = world.agent("blind")
    for path in ("/gpu/get_power_limit?gpu_ids=3", "/gpu/get_power_limit?gpu_ids=0,3",
                 "/gpu/get_power?gpu_ids=3", "/gpu/get_persistence_mode?gpu_ids=3",
                 "/gpu/get_cumulative_energy?gpu_ids=3"):
        assert_denied(blind.get(path), "no-read-3", "gpu-read", "GPU 3")
    reply = blind.get("/gpu/get_power_limit?gpu_ids=0")
    assert reply.status == 200 and set(reply.json()) == {"0"}, reply.body
    # "all GPUs" never shows the denied one
    reply = blind.get("/gpu/get_power_limit")
    assert reply.status == 403 or (reply.status == 200 and "3" not in reply.json()), reply.body


# -- the audit ----------------------------------------------------------------------------


def test_each_change_decision_is_one_audit_record(world):
    daemon, sup = world.daemon, world.agent("sup")
    uid = str(world.users["sup"].uid)
    time.sleep(WINDOW_S)  # past the burst window of sup's earlier denials: one record each
    old = world.limits()["1"]
    new = 305_000 if old != 305_000 else 306_000
    since = daemon.log_mark()
    assert_ok(sup.post(set_power(1, new)))
    assert_denied(sup.post(set_power(1, 600_000)), "team")
    assert_denied(sup.post(set_power(2, 300_000)), "default")
    sup.get("/gpu/get_power_limit?gpu_ids=1")  # allowed reads are not recorded
    daemon.wait_for_log(r"decision=deny .*gpu_index=2 ", since)
    # One record per decision; the counted summaries of an earlier test's burst of denials
    # (ZEUSD_COALESCED, see test_audit_flood.py) may land here too.
    records = [r for r in daemon.audit(since, caller_uid=uid) if "coalesced" not in r]
    assert len(records) == 3, records
    allow, deny_range, deny_gpu = records
    common = {"event": "change", "operation": "set_power_limit", "caller_uid": uid,
              "caller_pid": str(sup.pid), "caller_transport": "unix",
              "policy_hash": daemon.policy_hash}
    assert allow == {**allow, **common, "decision": "allow", "rule": "team", "gpu_index": "1",
                     "gpu_uuid": world.uuids[1], "old_value": f"{old} mW",
                     "new_value": f"{new} mW", "outcome": "applied"}
    assert deny_range == {**deny_range, **common, "decision": "deny", "rule": "team",
                          "gpu_index": "1", "gpu_uuid": world.uuids[1],
                          "new_value": "600000 mW", "outcome": "denied"}
    assert RANGE_MW in deny_range["message"]
    assert deny_gpu == {**deny_gpu, **common, "decision": "deny", "rule": "default",
                        "gpu_index": "2", "gpu_uuid": world.uuids[2],
                        "new_value": "300000 mW", "outcome": "denied"}


def test_root_and_clock_decisions_are_audited_too(world):
    daemon = world.daemon
    since = daemon.log_mark()
    root = Client(daemon.address)
    try:
        reply = root.post(set_power(3, 650_000))
        assert reply.status == 200, reply.text
    finally:
        root.close()
    assert_denied(world.agent("sup").post(clocks("set_gpu_locked_clocks", 0, 600, 1500)), "team")
    daemon.wait_for_log(r"operation=set_gpu_locked_clocks", since)
    root_records = daemon.audit(since, caller_uid="0", operation="set_power_limit")
    assert [(r["decision"], r["rule"], r["gpu_index"], r["new_value"]) for r in root_records] \
        == [("allow", "root", "3", "650000 mW")], root_records
    assert root_records[0]["gpu_uuid"] == world.uuids[3]
    clock = daemon.audit(since, operation="set_gpu_locked_clocks")
    assert [(r["decision"], r["rule"], r["new_value"], r["caller_uid"]) for r in clock] \
        == [("deny", "team", "600-1500 MHz", str(world.users["sup"].uid))], clock


def test_denied_reads_are_audited_and_allowed_reads_are_not(world):
    daemon, blind = world.daemon, world.agent("blind")
    uid = str(world.users["blind"].uid)
    since = daemon.log_mark()
    assert blind.get("/gpu/get_power_limit?gpu_ids=0").status == 200
    assert blind.get("/gpu/get_power?gpu_ids=1").status == 200
    assert_denied(blind.get("/gpu/get_power_limit?gpu_ids=3"), "no-read-3")
    daemon.wait_for_log(rf"caller_uid={uid}\b", since)
    records = daemon.audit(since, caller_uid=uid)
    assert len(records) == 1, records
    assert records[0] == {**records[0], "decision": "deny", "rule": "no-read-3",
                          "operation": "gpu-read", "gpu_index": "3",
                          "policy_hash": daemon.policy_hash, "caller_pid": str(blind.pid)}


def test_denied_change_record_has_the_old_value(world):
    daemon = world.daemon
    since = daemon.log_mark()
    old = world.limits()["0"]
    assert_denied(world.agent("sup").post(set_power(0, 600_000)), "team")
    daemon.wait_for_log(r"decision=deny", since)
    (record,) = daemon.audit(since, caller_uid=str(world.users["sup"].uid))
    assert record.get("old_value") == f"{old} mW", record


# -- fail closed at start-up ----------------------------------------------------------------


GOOD_POLICY = '[defaults]\noperations = ["gpu-read"]\n'


@pytest.fixture
def workdir():
    path = traversable_dir("zdf-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def assert_refused(policy_path, workdir, *fragments: str) -> str:
    result = serve_expecting_failure(policy_path, workdir)
    assert result.returncode != 0, result.stdout
    assert str(policy_path) in result.stdout, result.stdout
    for fragment in fragments:
        assert fragment in result.stdout, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    assert not (workdir / "never.sock").exists()
    return result.stdout


@pytest.mark.parametrize("mode,check", [(0o666, "world-writable"), (0o646, "world-writable"),
                                        (0o664, "group-writable")])
def test_start_refuses_a_writable_policy(workdir, mode, check):
    path = workdir / "policy.toml"
    path.write_text(GOOD_POLICY)
    os.chmod(path, mode)
    assert_refused(path, workdir, check, "chmod go-w")


def test_start_refuses_a_symlinked_policy(workdir):
    target = workdir / "real.toml"
    target.write_text(GOOD_POLICY)
    os.chmod(target, 0o644)
    link = workdir / "policy.toml"
    link.symlink_to(target)
    assert_refused(link, workdir, "symbolic link")


def test_start_refuses_a_policy_not_owned_by_root(workdir, world):
    path = workdir / "policy.toml"
    path.write_text(GOOD_POLICY)
    os.chmod(path, 0o644)
    os.chown(path, world.users["out"].uid, world.users["out"].gid)
    assert_refused(path, workdir, "owned by", "not root", "chown root:root")


def test_start_refuses_a_syntax_error_naming_file_and_line(workdir):
    path = workdir / "policy.toml"
    path.write_text('version = 1\n\n[defaults\noperations = ["gpu-read"]\n')
    os.chmod(path, 0o644)
    assert_refused(path, workdir, f"{path}:3: TOML syntax error")


def test_start_refuses_an_unclosed_array_naming_a_line(workdir):
    path = workdir / "policy.toml"
    path.write_text('version = 1\n\n[defaults]\noperations = ["gpu-read"\n')
    os.chmod(path, 0o644)
    out = assert_refused(path, workdir, "TOML syntax error")
    assert re.search(rf"{re.escape(str(path))}:\d+:", out), out


def test_start_refuses_a_strict_parse_error_naming_file_line_and_key(workdir):
    path = workdir / "policy.toml"
    path.write_text('version = 1\n\n[[rule]]\nname = "x"\neveryone = true\n'
                    'operations = ["set_power_limit"]\npower_limit_w = [450, 200]\n')
    os.chmod(path, 0o644)
    assert_refused(path, workdir, f"{path}:7", 'rule "x".power_limit_w')


def test_a_good_file_in_the_same_setup_does_start(workdir):
    """The refusals above come from the policy: the same command serves with a good file."""
    path = workdir / "policy.toml"
    path.write_text(GOOD_POLICY)
    os.chmod(path, 0o644)
    spec = workdir / "gpus.json"
    spec.write_text(json.dumps({"profile": "h200", "count": 1}))
    sock = str(workdir / "ok.sock")
    daemon = Daemon(workdir, ["serve", "--gpu-backend", "simulated", "--simulated-gpus",
                              str(spec), "--socket-path", sock, "--socket-permissions", "666",
                              "--policy", str(path), "--enable", "gpu-control,gpu-read"])
    try:
        daemon.wait_for_socket(sock)
        assert os.stat(sock).st_mode & 0o777 == 0o666
    finally:
        daemon.stop()
