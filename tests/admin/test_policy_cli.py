"""`zeusd policy check|explain`: exit codes and what they print."""

from __future__ import annotations

import pytest

from zeusd.admin.policy_cli import UsageError, main, parse_clocks_mhz, parse_power_mw

from tests.support.policy_files import write_policy

POLICY = '''
[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "ml-team"
users = [1001]
gpus = [0, 1]
operations = ["set_power_limit", "set_persistence_mode", "set_gpu_locked_clocks",
              "reset_locked_clocks", "gpu-read"]
power_limit_w = [200, 450]
gpu_clock_mhz = [900, 1980]
restore_on_exit = false

[[rule]]
name = "bots"
tokens = ["ci"]
operations = ["gpu-read"]
'''


@pytest.fixture
def policy_path(tmp_path):
    return write_policy(tmp_path, POLICY)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def explain(capsys, policy_path, *argv):
    return run(capsys, "--policy", policy_path, "--no-owner-check", "explain", *argv)


def test_check_valid_file_prints_each_rule(capsys, policy_path):
    code, out, _ = run(capsys, "--no-owner-check", "check", policy_path)
    assert code == 0
    assert f"{policy_path}: valid (sha256 " in out
    assert "the first that matches the caller and the GPU decides" in out
    assert "root (uid 0): may do everything on every GPU" in out
    assert ("rule 'ml-team' (line 5): users 1001, on GPUs 0, 1, may set_power_limit, "
            "set_persistence_mode, set_gpu_locked_clocks, reset_locked_clocks; read GPUs "
            "(gpu-read), within power limit 200-450 W, GPU clocks 900-1980 MHz; changes stay "
            "after the caller exits") in out
    assert "rule 'bots' (line 15): token subjects ci, on every GPU, may read GPUs" in out
    assert "defaults (callers no rule matches): may read GPUs (gpu-read); read CPUs" in out
    assert "warning: rule \"bots\" does not grant cpu-read" in out


def test_check_invalid_file_exits_1_with_the_message(capsys, tmp_path):
    path = write_policy(tmp_path, "[defaults]\noperations = [\"gpu-read\"]\nx = 1\n")
    code, out, err = run(capsys, "--no-owner-check", "check", path)
    assert code == 1 and out == ""
    assert err.startswith(f'invalid: {path}:3: defaults.x: unknown key "x" (known keys: '
                          'operations, power_limit_w,'), err


def test_check_refuses_an_unsafe_file(capsys, tmp_path):
    path = write_policy(tmp_path, POLICY, mode=0o666)
    code, _, err = run(capsys, "--no-owner-check", "check", path)
    assert code == 1 and "group- and world-writable" in err


def test_check_of_a_named_missing_file_fails(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.toml"))
    assert code == 1 and "no such file" in err


def test_check_of_the_missing_default_path_shows_the_builtin_policy(capsys, monkeypatch,
                                                                     tmp_path):
    monkeypatch.setattr("zeusd.admin.policy_cli.DEFAULT_POLICY_PATH", str(tmp_path / "absent.toml"))
    code, out, _ = run(capsys, "check")
    assert code == 0 and "does not exist: zeusd uses its built-in policy" in out


def test_explain_allowed(capsys, policy_path):
    code, out, _ = explain(capsys, policy_path, "--user", "1001", "--gpu", "1",
                           "set_power_limit", "300W")
    assert code == 0
    assert "allow (rule 'ml-team'): uid 1001 may set_power_limit 300000 mW on GPU 1" in out
    assert "changes are kept after the caller exits" in out


def test_explain_denied_names_rule_and_range(capsys, policy_path):
    code, out, _ = explain(capsys, policy_path, "--user", "1001", "--gpu", "0",
                           "set_power_limit", "500000mW")
    assert code == 1
    assert ("deny (rule 'ml-team'): power_limit_mw 500000 is outside the range 200000-450000 "
            "that rule 'ml-team' allows uid 1001 on GPU 0") in out


def test_explain_default_gpu_is_0_and_clocks(capsys, policy_path):
    code, out, _ = explain(capsys, policy_path, "--user", "1001", "set_gpu_locked_clocks",
                           "1200-1800MHz")
    assert code == 0 and "1200-1800 MHz on GPU 0" in out


def test_explain_persistence_and_reset(capsys, policy_path):
    assert explain(capsys, policy_path, "--user", "1001", "set_persistence_mode", "on")[0] == 0
    assert explain(capsys, policy_path, "--user", "1001", "reset_locked_clocks")[0] == 0
    code, out, _ = explain(capsys, policy_path, "--user", "1001", "reset_mem_locked_clocks")
    assert code == 1 and "reset_mem_locked_clocks is not allowed to uid 1001 on GPU 0" in out


def test_explain_reads_and_tokens(capsys, policy_path):
    code, out, _ = explain(capsys, policy_path, "--token", "ci", "cpu-read")
    assert code == 1 and "by rule 'bots'" in out
    assert explain(capsys, policy_path, "--anonymous", "cpu-read")[0] == 0
    code, out, _ = explain(capsys, policy_path, "--user", "root", "--gpu", "5",
                           "set_power_limit", "900W")
    assert code == 0 and "allow (root may always act)" in out


def test_explain_says_everyone_does_not_match_anonymous_tcp(capsys, tmp_path):
    text = ('[defaults]\noperations = []\n[[rule]]\nname = "all-users"\neveryone = true\n'
            'operations = ["gpu-read"]\n')
    path = write_policy(tmp_path, text)
    code, out, _ = explain(capsys, path, "--anonymous", "gpu-read")
    assert code == 1
    assert ("note: rule 'all-users' (everyone = true) does not match anonymous TCP callers: "
            "everyone means identified callers (Unix peers, valid tokens); name anonymous "
            "callers with anonymous = true") in out
    code, out, _ = explain(capsys, path, "--token", "ci", "gpu-read")
    assert code == 0 and "note:" not in out
    code, out, _ = run(capsys, "--no-owner-check", "check", path)
    assert ("rule 'all-users' (line 3): every identified caller (Unix peers, valid tokens; "
            "not anonymous TCP), on every GPU") in out


def test_explain_with_real_user_and_extra_group(capsys, tmp_path, unix_ids):
    text = f'[[rule]]\nname = "g"\ngroups = ["{unix_ids.group_extra}"]\noperations = ["all"]\n'
    path = write_policy(tmp_path, text)
    # The user database says this user is in group_extra (supplementary).
    assert explain(capsys, path, "--user", unix_ids.supplementary, "set_power_limit",
                   "100W")[0] == 0
    assert explain(capsys, path, "--user", unix_ids.member, "set_power_limit", "100W")[0] == 1
    assert explain(capsys, path, "--user", unix_ids.member, "--group", unix_ids.group_extra,
                   "set_power_limit", "100W")[0] == 0


@pytest.mark.parametrize("argv, fragment", [
    (("--user", "1001", "set_power_limit"), "needs a value"),
    (("--user", "1001", "set_power_limit", "300"), "write it as 300W or 300000mW"),
    (("--user", "1001", "set_power_limit", "300.0001W"), "not a whole number of milliwatts"),
    (("--user", "1001", "set_gpu_locked_clocks", "fast"), "write them as MIN-MAX"),
    (("--user", "1001", "set_persistence_mode", "maybe"), "persistence mode is on or off"),
    (("--user", "1001", "reset_locked_clocks", "1"), "takes no value"),
    (("--user", "1001", "fly"), "unknown operation 'fly'"),
    (("--user", "no-such-user-zq9", "gpu-read"), "unknown user 'no-such-user-zq9'"),
    (("--user", "1001", "--group", "no-such-group-zq9", "gpu-read"), "unknown group"),
    (("--user", "9" * 5000, "gpu-read"), "uid '99999999999999999999' is out of range"),
    (("--user", "4294967295", "gpu-read"), "uid '4294967295' is out of range (0-4294967294)"),
    (("--user", "1001", "--group", "9" * 5000, "gpu-read"), "gid '9999"),
    (("--user", "1001", "set_power_limit", "9" * 5000 + "W"), "write it as 300W or 300000mW"),
    (("--user", "1001", "set_power_limit", "4294968W"), "is out of range (at most 4294967295"),
    (("--user", "1001", "set_gpu_locked_clocks", "1-" + "9" * 5000), "write them as MIN-MAX"),
    (("--user", "1001", "set_gpu_locked_clocks", "1-4294967296"), "out of range (0-4294967295"),
    (("--user", "1001", "--gpu", "9" * 5000, "gpu-read"), "invalid int value"),
    (("--user", "\u0663", "gpu-read"), "unknown user"),
])
def test_explain_usage_errors_exit_2(capsys, policy_path, argv, fragment):
    code, _, err = explain(capsys, policy_path, *argv)
    assert code == 2 and fragment in err, err


def test_argparse_errors_exit_2(capsys):
    assert run(capsys, "explain", "set_power_limit")[0] == 2  # no --user/--token/--anonymous
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "--help")[0] == 0


def test_explain_with_an_invalid_policy_exits_2(capsys, tmp_path):
    path = write_policy(tmp_path, "nonsense =\n")
    code, _, err = explain(capsys, path, "--user", "1001", "gpu-read")
    assert code == 2 and "cannot explain:" in err and "TOML syntax error" in err


def test_value_parsers():
    assert parse_power_mw("250.5W") == 250500
    assert parse_power_mw("300 w") == 300000
    assert parse_power_mw("300000mW") == 300000
    assert parse_clocks_mhz("1200-1800") == (1200, 1800)
    with pytest.raises(UsageError):
        parse_power_mw("1.5mW")


def test_file_options_work_after_the_command_too(capsys, policy_path):
    code, out, _ = run(capsys, "explain", "--policy", policy_path, "--no-owner-check",
                       "--user", "1001", "set_power_limit", "300W")
    assert code == 0 and f"policy: {policy_path}" in out
    assert run(capsys, "check", "--no-owner-check", policy_path)[0] == 0
    assert run(capsys, "check", "--no-owner-check", "--policy", policy_path)[0] == 0
