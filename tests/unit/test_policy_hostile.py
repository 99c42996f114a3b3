"""Hostile values in the policy file: refused with file:line and key path, never a traceback
(issue #8.7). `zeusd policy check` is run as the real command for the worst of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zeusd.policy.model import Range

from tests.support.policy_files import write_policy
from tests.unit.test_policy_parse import RULE, error_of, load_text

POWER_LINE = 15  # the {extra} line of RULE


@pytest.mark.parametrize("value, fragment", [
    ("[200, inf]", "power_limit_w: Infinity W is not a finite number of watts"),
    ("[-inf, 200]", "power_limit_w: -Infinity W is not a finite number of watts"),
    ("[nan, 200]", "power_limit_w: NaN W is not a finite number of watts"),
    ("[200, 1e999999]", "power_limit_w: 1E+999999 W is out of bounds (0 to 4294967295 mW)"),
    ("[1e-999999999, 200]",
     "power_limit_w: 1E-999999999 W is not a whole number of milliwatts"),
    ("[0.0001, 200]", "power_limit_w: 0.0001 W is not a whole number of milliwatts"),
    ("[-0.5, 200]", "power_limit_w: -0.5 W is out of bounds (0 to 4294967295 mW)"),
    ("[200, 4294967.296]", "power_limit_w: 4294967.296 W is out of bounds"),
])
def test_power_values_must_be_finite_whole_milliwatts_in_range(tmp_path, value, fragment):
    message = error_of(tmp_path, RULE.format(extra=f"power_limit_w = {value}"))
    assert message.startswith(f"{tmp_path}/policy.toml:{POWER_LINE}: rule \"ml-team\"."), message
    assert fragment in message, message


@pytest.mark.parametrize("value, expected", [
    ("[0, 4294967.295]", Range(0, 4294967295)),
    ("[1e2, 2.5e2]", Range(100000, 250000)),
    ("[0.001, 200.000000]", Range(1, 200000)),
    ("[0e999999, 1]", Range(0, 1000)),
])
def test_exact_watts_at_the_edges_are_read_exactly(tmp_path, value, expected):
    policy = load_text(tmp_path, RULE.format(extra=f"power_limit_w = {value}"))
    assert policy.rules[1].grant.power_limit_mw == expected


def test_gpu_indices_past_u32_are_refused(tmp_path):
    text = RULE.replace("gpus = [0, 1]", "gpus = [0, 4294967296]")
    message = error_of(tmp_path, text.format(extra=""))
    assert ':13: rule "ml-team".gpus: must be "all" or a non-empty list of GPU indices' in message


@pytest.mark.parametrize("text, line, fragment", [
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested more than 16 deep"),
    ('[defaults]\noperations = ["gpu-read"]\nx = ' + "{a=" * 3000 + "1" + "}" * 3000, 3,
     "nested more than 16 deep"),
    ("[[rule]]\nname = \"x\"\nusers = [" + "9" * 5000 + "]\n", 3,
     "a number of 5000 characters"),
    (RULE.format(extra="power_limit_w = [200, 1." + "0" * 5000 + "1]"), POWER_LINE,
     "a number of 5001 characters"),
])
def test_deep_nesting_and_long_numbers_are_refused_before_parsing(tmp_path, text, line,
                                                                 fragment):
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path}/policy.toml:{line}: refused: "), message
    assert fragment in message, message


def test_brackets_and_digits_inside_strings_and_comments_do_not_count(tmp_path):
    deep = "[" * 40 + "9" * 60
    text = (f'# {deep}\n[[rule]]\nname = "x"\ntokens = ["{deep}", \'{deep}\']\n'
            f'operations = []\n')
    assert load_text(tmp_path, text).rules[0].subjects.token_subjects == {deep}


@pytest.mark.parametrize("text", [
    "x = " + "[" * 5000 + "]" * 5000 + "\n",
    RULE.format(extra="power_limit_w = [nan, 1e999999]"),
    RULE.format(extra="power_limit_w = [1e-999999999, 1]"),
    "[[rule]]\nname = \"x\"\nusers = [" + "9" * 5000 + "]\n",
])
def test_policy_check_answers_without_a_traceback(tmp_path, text):
    path = write_policy(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "zeusd", "policy", "check", "--no-owner-check",
                           path], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(f"invalid: {path}:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
