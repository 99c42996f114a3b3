"""Strict parsing: each class of error names file, line and key path."""

from __future__ import annotations

import glob
import os

import pytest

from zeusd.policy import PolicyError, load_policy
from zeusd.policy.model import Range

from tests.support.policy_files import write_policy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RULE = '''
[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "first"
users = [1001]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "ml-team"
users = [1002]
gpus = [0, 1]
operations = ["set_power_limit", "gpu-read"]
{extra}
'''


def load_text(tmp_path, text: str):
    return load_policy(write_policy(tmp_path, text), check_owner=False)


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_text(tmp_path, text)
    return str(info.value)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    message = error_of(tmp_path, '[defaults]\noperations = ["gpu-read"]\nbroken line\n')
    assert message.startswith(f"{tmp_path}/policy.toml:3: TOML syntax error:"), message


def test_unknown_key_names_line_and_key_path(tmp_path):
    message = error_of(tmp_path, RULE.format(extra="power_limit = [200, 400]"))
    assert message.startswith(f"{tmp_path}/policy.toml:15: "), message
    assert 'rule "ml-team".power_limit: unknown key "power_limit"' in message
    assert 'did you mean "power_limit_w"?' in message


def test_power_in_milliwatts_key_gets_a_hint(tmp_path):
    message = error_of(tmp_path, RULE.format(extra="power_limit_mw = [200000, 400000]"))
    assert "the file gives power in watts: power_limit_w" in message


def test_unknown_top_level_key(tmp_path):
    message = error_of(tmp_path, 'rules = []\n')
    assert message == (f'{tmp_path}/policy.toml:1: rules: unknown key "rules" (did you mean '
                       '"rule"? known keys: version, root, defaults, rule)')


def test_wrong_type_names_what_was_found(tmp_path):
    message = error_of(tmp_path, RULE.format(extra='power_limit_w = "200-400"'))
    assert message == (f'{tmp_path}/policy.toml:15: rule "ml-team".power_limit_w: must be a '
                       'range [min, max] in watts, found string "200-400"')


def test_wrong_type_boolean(tmp_path):
    message = error_of(tmp_path, RULE.format(extra='restore_on_exit = "yes"'))
    assert 'rule "ml-team".restore_on_exit: must be true or false, found string "yes"' in message
    assert ":15:" in message


def test_bool_is_not_a_number(tmp_path):
    message = error_of(tmp_path, RULE.format(extra="gpu_clock_mhz = [true, 1000]"))
    assert 'rule "ml-team".gpu_clock_mhz: must be a range' in message


def test_inverted_range(tmp_path):
    message = error_of(tmp_path, RULE.format(extra="power_limit_w = [450, 200]"))
    assert message == (f'{tmp_path}/policy.toml:15: rule "ml-team".power_limit_w: is an empty '
                       "range: min 450 W > max 200 W")


def test_inverted_clock_range_in_defaults(tmp_path):
    message = error_of(tmp_path, '[defaults]\noperations = []\nmem_clock_mhz = [9000, 5000]\n')
    assert message == (f"{tmp_path}/policy.toml:3: defaults.mem_clock_mhz: is an empty range: "
                       "min 9000 MHz > max 5000 MHz")


def test_unknown_user(tmp_path):
    text = RULE.replace("users = [1002]", 'users = ["no-such-user-zq9"]').format(extra="")
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path}/policy.toml:12: "), message
    assert 'rule "ml-team".users: unknown user "no-such-user-zq9"' in message
    assert "optional = true" in message


def test_unknown_group(tmp_path):
    message = error_of(tmp_path, RULE.format(extra='groups = ["no-such-group-zq9"]'))
    assert message.startswith(f"{tmp_path}/policy.toml:15: "), message
    assert 'rule "ml-team".groups: unknown group "no-such-group-zq9"' in message


def test_unknown_operation(tmp_path):
    text = RULE.replace('["set_power_limit", "gpu-read"]', '["set_power_limits"]')
    message = error_of(tmp_path, text.format(extra=""))
    assert message.startswith(f"{tmp_path}/policy.toml:14: "), message
    assert 'rule "ml-team".operations: unknown operation "set_power_limits" (known:' in message


def test_duplicate_rule_name(tmp_path):
    text = RULE.replace('name = "first"', 'name = "ml-team"').format(extra="")
    message = error_of(tmp_path, text)
    assert message == (f'{tmp_path}/policy.toml:11: rule "ml-team".name: duplicate rule name '
                       '"ml-team" (first used on line 5); rule names must be unique')


def test_rule_without_name(tmp_path):
    message = error_of(tmp_path, '[[rule]]\nusers = [1]\noperations = []\n')
    assert message == (f'{tmp_path}/policy.toml:1: rule #1.name: missing; every rule needs a '
                       'name = "..."')


def test_reserved_rule_name(tmp_path):
    message = error_of(tmp_path, '[[rule]]\nname = "root"\nusers = [1]\noperations = []\n')
    assert 'rule #1.name: "root" is reserved' in message


def test_rule_naming_nobody(tmp_path):
    message = error_of(tmp_path, '[[rule]]\nname = "x"\noperations = []\n')
    assert 'rule "x": names nobody' in message


def test_rule_without_operations(tmp_path):
    message = error_of(tmp_path, '[[rule]]\nname = "x"\neveryone = true\n')
    assert 'rule "x".operations: missing' in message


def test_single_rule_table_is_explained(tmp_path):
    message = error_of(tmp_path, '[rule]\nname = "x"\n')
    assert "rule: rules must be [[rule]] tables (an array of tables), found a single" in message


def test_bad_gpus(tmp_path):
    message = error_of(tmp_path, RULE.replace("gpus = [0, 1]", "gpus = [0, 0]").format(extra=""))
    assert 'rule "ml-team".gpus: lists a GPU index twice' in message
    message = error_of(tmp_path, RULE.replace("gpus = [0, 1]", 'gpus = "some"').format(extra=""))
    assert 'must be "all" or a non-empty list of GPU indices, found string "some"' in message


def test_unsupported_version(tmp_path):
    assert "version: only version 1 is understood, found integer 2" in error_of(
        tmp_path, "version = 2\n")


def test_watts_convert_exactly_to_milliwatts(tmp_path):
    policy = load_text(tmp_path, RULE.format(extra="power_limit_w = [200, 450.5]"))
    assert policy.rules[1].grant.power_limit_mw == Range(200000, 450500)


def test_watts_that_are_not_whole_milliwatts_are_refused(tmp_path):
    message = error_of(tmp_path, RULE.format(extra="power_limit_w = [200, 450.0001]"))
    assert "450.0001 W is not a whole number of milliwatts" in message


def test_clock_range_must_be_whole_mhz(tmp_path):
    message = error_of(tmp_path, RULE.format(extra="gpu_clock_mhz = [900.5, 1000]"))
    assert "clock bounds are whole MHz, found number 900.5" in message


def test_optional_skips_unknown_names_with_warning(tmp_path):
    text = RULE.format(extra='groups = ["no-such-group-zq9"]\noptional = true')
    policy = load_text(tmp_path, text)
    assert any('no group "no-such-group-zq9" on this machine; skipped' in w
               for w in policy.warnings)


def test_rule_shadowing_default_reads_warns(tmp_path):
    assert load_text(tmp_path, RULE.format(extra="")).warnings == ()
    text = RULE.replace('[1001]\noperations = ["gpu-read", "cpu-read"]',
                        '[1001]\noperations = ["gpu-read"]')
    text = text.replace('["set_power_limit", "gpu-read"]', '["set_power_limit"]')
    assert load_text(tmp_path, text.format(extra="")).warnings == (
        'rule "first" does not grant cpu-read, which the [defaults] grant: the callers it '
        "matches may not cpu-read (add it if that is unintended)",
        'rule "ml-team" does not grant gpu-read, which the [defaults] grant: the callers it '
        "matches may not gpu-read (add it if that is unintended)",
    )


def test_rules_keep_file_order_and_lines(tmp_path):
    policy = load_text(tmp_path, RULE.format(extra=""))
    assert [(rule.name, rule.line) for rule in policy.rules] == [("first", 5), ("ml-team", 10)]


def test_empty_file_denies_everybody_but_root(tmp_path):
    policy = load_text(tmp_path, "")
    assert policy.rules == () and policy.defaults.operations == frozenset()


@pytest.mark.parametrize("path", [os.path.join(REPO, "policy", "policy.toml")]
                         + sorted(glob.glob(os.path.join(REPO, "policy", "examples", "*.toml"))))
def test_shipped_and_example_files_load(path):
    policy = load_policy(path, check_owner=False)
    assert policy.source == path
