"""The bash completion offers what zeusctl's parser accepts (run in a real bash)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.daemon import REPO
from zeusd.ctl import change
from zeusd.ctl.cli import build_parser

COMPLETION = REPO / "packaging" / "completion" / "zeusctl"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash completion needs bash")


def complete(line: str) -> list[str]:
    """COMPREPLY for the command line ``line`` with the cursor at its end."""
    words = line.split(" ")
    script = (f"source {COMPLETION}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _zeusctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    return sorted(filter(None, out.splitlines()))


def test_subcommands_match_the_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    offered = [w for w in complete("zeusctl ") if not w.startswith("-")]
    assert offered == sorted(sub.choices)


def test_knobs_match_the_parser():
    assert complete("zeusctl set ") == sorted(change.SETTERS)
    assert complete("zeusctl --json reset ") == sorted(change.RESETTERS)
    assert complete("zeusctl set p") == ["persistence", "power-limit"]


def test_values_and_flags():
    assert complete("zeusctl set persistence o") == ["off", "on"]
    assert "--no-block" in complete("zeusctl set power-limit 300W --")
    assert "--count" in complete("zeusctl watch --gpu 0 --")
    assert complete("zeusctl status --gpu a") == ["all"]
