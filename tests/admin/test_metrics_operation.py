"""The policy's `metrics` operation (GET /metrics): parsed, decided machine-wide, shown by
`zeusd policy check` and `zeusd policy explain`."""

from __future__ import annotations

from zeusd import operations as ops
from zeusd.identity import Caller
from zeusd.policy.parse import parse_policy

from tests.admin.test_policy_cli import explain, run
from tests.support.policy_files import write_policy

POLICY = '''
[defaults]
operations = ["gpu-read"]

[[rule]]
name = "prometheus"
users = [1002]
operations = ["metrics"]

[[rule]]
name = "gpu0-team"
users = [1003]
gpus = [0]
operations = ["all-reads"]
'''


def unix(uid: int) -> Caller:
    return Caller(transport="unix", uid=uid, gid=uid, pid=1, groups=(uid,))


def test_metrics_is_decided_by_the_first_rule_covering_every_gpu():
    policy = parse_policy(POLICY.encode(), "test.toml")
    assert policy.decide_read(unix(1002), ops.METRICS, None).allowed
    denied = policy.decide_read(unix(1003), ops.METRICS, None)  # a rule for GPU 0 only
    assert (denied.allowed, denied.rule) == (False, "default")
    assert denied.message == ("no rule of policy test.toml matches uid 1003 on the daemon's "
                              "metrics, and the [defaults] do not allow metrics")
    assert "metrics" in policy.rules[1].grant.operations  # "all-reads" includes it


def test_explain_metrics(capsys, tmp_path):
    path = write_policy(tmp_path, POLICY)
    code, out, _ = explain(capsys, path, "--user", "1002", "metrics")
    assert code == 0
    assert "allow (rule 'prometheus'): uid 1002 may metrics on the daemon's metrics" in out
    code, out, _ = explain(capsys, path, "--user", "1001", "metrics")
    assert code == 1
    assert "deny (rule 'default')" in out


def test_check_describes_the_metrics_grant(capsys, tmp_path):
    code, out, _ = run(capsys, "--no-owner-check", "check", write_policy(tmp_path, POLICY))
    assert code == 0
    assert "rule 'prometheus' (line 5): users 1002, on every GPU, may scrape /metrics (metrics)" \
        in out
