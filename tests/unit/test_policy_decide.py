"""Decisions: first match, defaults, root, unknown callers, tokens, ranges, real groups."""

from __future__ import annotations

import time

import pytest

from zeusd import operations as ops
from zeusd.identity import UNKNOWN_UNIX, Caller
from zeusd.operations import GpuChange
from zeusd.policy import Decision, load_policy
from zeusd.policy.load import builtin_policy

from tests.support.policy_files import unix_caller, write_policy

POLICY = '''
[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "no-gpu-7"
everyone = true
gpus = [7]
operations = ["gpu-read"]

[[rule]]
name = "ml-team"
users = [1001]
groups = [3000]
gpus = [0, 1]
operations = ["set_power_limit", "set_gpu_locked_clocks", "reset_locked_clocks", "gpu-read"]
power_limit_w = [200, 450]
gpu_clock_mhz = [900, 1980]

[[rule]]
name = "ml-team-anywhere"
users = [1001]
operations = ["all-reads", "set_persistence_mode"]
restore_on_exit = false

[[rule]]
name = "scheduler"
tokens = ["slurm"]
operations = ["gpu-control"]
mem_clock_mhz = [5000, 9000]

[[rule]]
name = "anon"
anonymous = true
operations = ["cpu-read"]
'''


@pytest.fixture
def policy(tmp_path):
    return load_policy(write_policy(tmp_path, POLICY), check_owner=False)


def power(mw: int, gpu: int = 0) -> GpuChange:
    return GpuChange(ops.SET_POWER_LIMIT, gpu, power_limit_mw=mw)


def test_value_in_range_is_allowed_by_the_rule(policy):
    assert policy.decide_change(unix_caller(1001), power(300000)) == Decision(
        True, "ml-team", "", True)


def test_value_out_of_range_names_rule_and_range(policy):
    decision = policy.decide_change(unix_caller(1001), power(650000))
    assert not decision.allowed and decision.rule == "ml-team"
    assert decision.message == ("power_limit_mw 650000 is outside the range 200000-450000 that "
                                "rule 'ml-team' allows uid 1001 on GPU 0")
    assert decision.allowed_range == {"min_power_limit_mw": 200000, "max_power_limit_mw": 450000}


def test_range_bounds_are_inclusive(policy):
    caller = unix_caller(1001)
    assert policy.decide_change(caller, power(200000)).allowed
    assert policy.decide_change(caller, power(450000)).allowed
    assert not policy.decide_change(caller, power(199999)).allowed
    assert not policy.decide_change(caller, power(450001)).allowed


def test_clock_range_checks_both_ends(policy):
    caller = unix_caller(1001)
    ok = GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 1, min_clock_mhz=900, max_clock_mhz=1980)
    assert policy.decide_change(caller, ok).allowed
    high = GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 1, min_clock_mhz=900, max_clock_mhz=2100)
    decision = policy.decide_change(caller, high)
    assert decision.message == ("max_clock_mhz 2100 is outside the GPU clock range 900-1980 "
                                "that rule 'ml-team' allows uid 1001 on GPU 1")
    assert decision.allowed_range == {"min_clock_mhz": 900, "max_clock_mhz": 1980}


def test_a_missing_value_is_denied_when_a_range_applies(policy):
    decision = policy.decide_change(unix_caller(1001), GpuChange(ops.SET_POWER_LIMIT, 0))
    assert not decision.allowed and "no value" in decision.message


def test_resets_are_allowed_when_granted(policy):
    caller = unix_caller(1001)
    assert policy.decide_change(caller, GpuChange(ops.RESET_LOCKED_CLOCKS, 0)).allowed
    denied = policy.decide_change(caller, GpuChange(ops.RESET_GPU_LOCKED_CLOCKS, 0))
    assert denied.message == ("reset_gpu_locked_clocks is not allowed to uid 1001 on GPU 0 by "
                              "rule 'ml-team'")


def test_first_matching_rule_decides_even_if_a_later_one_would_allow(policy):
    # ml-team matches GPU 0 and does not grant persistence mode; ml-team-anywhere would.
    denied = policy.decide_change(unix_caller(1001), GpuChange(ops.SET_PERSISTENCE_MODE, 0,
                                                               enabled=True))
    assert (denied.allowed, denied.rule) == (False, "ml-team")
    # On GPU 2 ml-team does not match, so the next rule decides.
    allowed = policy.decide_change(unix_caller(1001), GpuChange(ops.SET_PERSISTENCE_MODE, 2,
                                                                enabled=True))
    assert allowed == Decision(True, "ml-team-anywhere", "", False)


def test_an_earlier_rule_for_everyone_shadows_on_its_gpu(policy):
    decision = policy.decide_change(unix_caller(1001), power(300000, gpu=7))
    assert (decision.allowed, decision.rule) == (False, "no-gpu-7")


def test_caller_no_rule_matches_gets_defaults(policy):
    decision = policy.decide_change(unix_caller(1500), power(300000))
    assert decision.rule == "default" and not decision.allowed
    assert decision.message.startswith("no rule of policy ")
    assert decision.message.endswith("matches uid 1500 on GPU 0, and the [defaults] do not "
                                     "allow set_power_limit")
    assert policy.decide_read(unix_caller(1500), ops.GPU_READ, 3).allowed


def test_root_is_always_allowed(policy):
    root = Caller(transport="unix", pid=1, uid=0, gid=0)
    assert policy.decide_change(root, power(10**9, gpu=7)) == Decision(True, "root", "", True)
    assert policy.decide_read(root, ops.CPU_READ, None).rule == "root"


def test_uid_0_over_tcp_is_not_root(policy):
    assert not policy.decide_change(Caller(transport="tcp", uid=0), power(300000)).allowed


def test_unknown_caller_is_always_denied(policy):
    for decision in (policy.decide_change(UNKNOWN_UNIX, power(300000)),
                     policy.decide_read(UNKNOWN_UNIX, ops.GPU_READ, 0)):
        assert decision.rule == "unknown-caller" and not decision.allowed
        assert "could not tell who the caller is (no peer credentials)" in decision.message


def test_unix_caller_without_uid_is_denied(policy):
    decision = policy.decide_read(Caller(transport="unix"), ops.CPU_READ, None)
    assert decision.rule == "unknown-caller"


def test_token_subject_matches_its_rule(policy):
    slurm = Caller(transport="tcp", token_subject="slurm", token_scopes=("gpu-control",))
    mem = GpuChange(ops.SET_MEM_LOCKED_CLOCKS, 3, min_clock_mhz=5000, max_clock_mhz=9500)
    decision = policy.decide_change(slurm, mem)
    assert decision.message == ("max_clock_mhz 9500 is outside the memory clock range 5000-9000 "
                                "that rule 'scheduler' allows token subject 'slurm' on GPU 3")
    other = Caller(transport="tcp", token_subject="eve")
    assert policy.decide_change(other, mem).rule == "default"


def test_anonymous_tcp_caller(policy):
    anonymous = Caller(transport="tcp")
    assert policy.decide_read(anonymous, ops.CPU_READ, None) == Decision(True, "anon", "", True)
    denied = policy.decide_read(anonymous, ops.GPU_READ, None)
    assert denied.message == "gpu-read is not allowed to anonymous TCP callers on all GPUs by " \
                             "rule 'anon'"


def test_everyone_means_identified_callers_not_anonymous_tcp(policy):
    # "no-gpu-7" (everyone = true, GPU 7) matches a Unix peer and a token holder...
    assert policy.decide_read(unix_caller(4242), ops.GPU_READ, 7).rule == "no-gpu-7"
    token = Caller(transport="tcp", token_subject="eve", token_scopes=("gpu-read",))
    assert policy.decide_read(token, ops.GPU_READ, 7).rule == "no-gpu-7"
    # ...but never an anonymous TCP caller: only "anon" (anonymous = true) names it.
    denied = policy.decide_read(Caller(transport="tcp"), ops.GPU_READ, 7)
    assert denied == Decision(False, "anon", "gpu-read is not allowed to anonymous TCP callers "
                                             "on GPU 7 by rule 'anon'", True)


def test_everyone_alone_leaves_anonymous_tcp_to_the_defaults(tmp_path):
    text = ('[defaults]\noperations = []\n[[rule]]\nname = "all"\neveryone = true\n'
            'operations = ["gpu-read"]\n')
    policy = load_policy(write_policy(tmp_path, text), check_owner=False)
    assert policy.decide_read(unix_caller(4242), ops.GPU_READ, 0).allowed
    denied = policy.decide_read(Caller(transport="tcp"), ops.GPU_READ, 0)
    assert (denied.allowed, denied.rule) == (False, "default")


def test_unix_rules_do_not_match_tcp_callers(policy):
    tcp = Caller(transport="tcp", token_subject="1001")
    assert policy.decide_change(tcp, power(300000)).rule == "default"


def test_cpu_reads_ignore_rules_limited_to_some_gpus(policy):
    # ml-team (GPUs 0, 1) does not grant cpu-read but says nothing about CPUs.
    assert policy.decide_read(unix_caller(1001), ops.CPU_READ, None).rule == "ml-team-anywhere"
    assert policy.decide_read(unix_caller(1001), ops.GPU_READ, 0).rule == "ml-team"
    assert policy.decide_read(unix_caller(1001), ops.GPU_READ, None).rule == "ml-team-anywhere"


def test_read_of_an_unknown_group_is_a_programming_error(policy):
    with pytest.raises(ValueError):
        policy.decide_read(unix_caller(1001), ops.GPU_CONTROL, 0)


def test_group_membership_primary_and_supplementary(policy):
    assert policy.decide_change(unix_caller(2000, gid=3000), power(300000)).rule == "ml-team"
    assert policy.decide_change(unix_caller(2000, gid=5, groups=(5, 3000)),
                                power(300000)).rule == "ml-team"
    assert policy.decide_change(unix_caller(2000, gid=5, groups=(5,)), power(300000)).rule == \
        "default"


def test_real_users_and_groups_resolved_by_name(tmp_path, unix_ids):
    text = f'''
[[rule]]
name = "by-primary-group"
groups = ["{unix_ids.group_primary}"]
operations = ["set_power_limit"]
power_limit_w = [100, 200]

[[rule]]
name = "by-supplementary-group"
groups = ["{unix_ids.group_extra}"]
operations = ["set_power_limit"]

[[rule]]
name = "by-user"
users = ["{unix_ids.supplementary}"]
operations = ["gpu-read"]
'''
    policy = load_policy(write_policy(tmp_path, text), check_owner=False)
    member = unix_caller(unix_ids.member_uid, unix_ids.gid_primary, (unix_ids.gid_primary,))
    assert policy.decide_change(member, power(150000)).rule == "by-primary-group"
    sup = unix_caller(unix_ids.supplementary_uid, unix_ids.supplementary_gid,
                      (unix_ids.supplementary_gid, unix_ids.gid_extra))
    assert policy.decide_change(sup, power(300000)) == Decision(
        True, "by-supplementary-group", "", True)
    # Without the supplementary group (e.g. an old session), only the user rule matches.
    alone = unix_caller(unix_ids.supplementary_uid, unix_ids.supplementary_gid)
    assert policy.decide_change(alone, power(300000)).rule == "by-user"


def test_builtin_policy_reads_for_all_changes_for_root_only():
    policy = builtin_policy("/etc/zeusd/policy.toml")
    user = unix_caller(1001)
    assert policy.decide_read(user, ops.GPU_READ, 0) == Decision(True, "no-policy", "", True)
    denied = policy.decide_change(user, power(300000))
    assert denied.rule == "no-policy"
    assert denied.message == ("set_power_limit is allowed only to root: /etc/zeusd/policy.toml "
                              "does not exist, so zeusd uses its built-in policy (everybody may "
                              "read, only root may change)")
    assert policy.decide_change(Caller("unix", pid=1, uid=0, gid=0), power(1)).allowed


def test_summary_lists_matching_rules_in_order(policy):
    summary = policy.summary_for(unix_caller(1001))
    assert [entry["rule"] for entry in summary["applies"]] == ["no-gpu-7", "ml-team",
                                                                "ml-team-anywhere"]
    ml = summary["applies"][1]
    assert ml["gpus"] == [0, 1]
    assert ml["power_limit_mw"] == {"min_power_limit_mw": 200000, "max_power_limit_mw": 450000}
    assert summary["policy_hash"] == policy.hash
    import json

    json.dumps(summary)


def test_summary_for_root_unknown_and_defaults(policy):
    assert policy.summary_for(Caller("unix", pid=1, uid=0, gid=0))["applies"][0]["rule"] == "root"
    assert policy.summary_for(UNKNOWN_UNIX)["applies"] == []
    assert [e["rule"] for e in policy.summary_for(unix_caller(1500))["applies"]] == [
        "no-gpu-7", "default"]


def test_fifty_rules_decide_well_under_50_microseconds(tmp_path):
    rules = "".join(f'''
[[rule]]
name = "r{i}"
users = [{10000 + i}]
groups = [{20000 + i}, {30000 + i}]
operations = ["set_power_limit"]
power_limit_w = [100, 400]
''' for i in range(50))
    policy = load_policy(write_policy(tmp_path, rules), check_owner=False)
    # Worst case: every rule covers every GPU and none matches the caller's 16 groups.
    caller = unix_caller(1001, gid=100, groups=tuple(range(100, 116)))
    change = power(300000, gpu=3)
    count = 20000
    start = time.perf_counter()
    for _ in range(count):
        policy.decide_change(caller, change)
    per_decision_us = (time.perf_counter() - start) / count * 1e6
    assert per_decision_us < 50, f"{per_decision_us:.1f} us per decision"


def test_kept_read_decisions_are_exact_per_caller_and_still_counted(policy):
    """Read decisions are kept per policy object; each is still counted for /metrics, and
    callers that differ in anything the policy looks at get their own decision."""
    from zeusd.tally import DECISIONS

    alice, bob = unix_caller(1001), unix_caller(1002)
    before = DECISIONS.snapshot().get(("no-gpu-7", "allow"), 0)
    first = policy.decide_read(alice, ops.GPU_READ, 7)
    assert policy.decide_read(alice, ops.GPU_READ, 7) is first
    assert DECISIONS.snapshot()[("no-gpu-7", "allow")] == before + 2
    assert policy.decide_read(alice, ops.GPU_READ, 0).rule == "ml-team"
    assert policy.decide_read(bob, ops.GPU_READ, 0).rule == "default"
    unknown = [Caller(transport="unix", known=False, error=why) for why in ("one", "two")]
    assert [policy.decide_read(c, ops.GPU_READ, 0).message for c in unknown] == [
        f"zeusd could not tell who the caller is ({why}), so it denies the request"
        for why in ("one", "two")]


def test_a_kept_change_decision_still_checks_every_value_against_the_range(policy):
    alice = unix_caller(1001)
    decisions = [policy.decide_change(alice, power(mw)) for mw in
                 (300000, 650000, 450000, 199999, 300000)]
    assert [d.allowed for d in decisions] == [True, False, True, False, True]
    assert {d.rule for d in decisions} == {"ml-team"}
    assert decisions[3].message == ("power_limit_mw 199999 is outside the range 200000-450000 "
                                    "that rule 'ml-team' allows uid 1001 on GPU 0")
    # Another GPU, operation or caller is decided on its own.
    assert policy.decide_change(alice, power(300000, gpu=2)).rule == "ml-team-anywhere"
    assert not policy.decide_change(alice, power(300000, gpu=2)).allowed
    assert not policy.decide_change(unix_caller(1002), power(300000)).allowed
