"""The `serve` options are one table: argparse, ServeConfig, the man page and the README's
option table all say what it says."""

from __future__ import annotations

import dataclasses
import re
import shlex

import pytest

from tests.support.daemon import REPO
from zeusd.cli import build_parser
from zeusd.config import ALL_SERVE_OPTIONS, SERVE_OPTIONS, ServeConfig, serve_config
from zeusd.limits import LIMIT_OPTIONS, ServeLimits

BY_FLAG = {option.flag_name: option for option in ALL_SERVE_OPTIONS}
# Two-letter font macros alternate fonts with no space between their arguments.
_ALTERNATING = {".BI", ".BR", ".IB", ".IR", ".RB", ".RI"}


def roff_text(line: str) -> str:
    """A man page line as it reads: macros and font escapes gone, \\- a hyphen."""
    line = line.replace("\\-", "-")
    if line.startswith("."):
        macro, _, rest = line.partition(" ")
        words = shlex.split(rest) if rest else []
        line = ("" if macro in _ALTERNATING else " ").join(words)
    return re.sub(r"\\f[BIRP]", "", line)


def man_options() -> dict[str, tuple[str, str]]:
    """flag -> (what its .TP header shows after the flag, its paragraph's text)."""
    text = (REPO / "packaging/man/zeusd.8").read_text()
    section = text.split(".SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
    entries = {}
    for entry in section.split(".TP\n")[1:]:
        header, *body = entry.split("\n")
        paragraph = " ".join(roff_text(line) for line in body if line != ".PP")
        paragraph = paragraph.split(" .PP")[0]
        shown = roff_text(header)
        for flag, argument in re.findall(r"(--[a-z-]+)(?: ([^,\s]+))?", shown):
            entries[flag] = (argument, re.sub(r"\s+", " ", paragraph))
    return entries


def readme_options() -> dict[str, str]:
    """flag -> the default column of the README's command line table."""
    text = (REPO / "README.md").read_text()
    table = text.split("| flag | default | |\n", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for row in table.splitlines()[1:]:
        flags_cell, default_cell = row.split(" | ")[:2]
        flags = re.findall(r"`(--[a-z-]+)", flags_cell)
        defaults = default_cell.split(", ") if len(flags) > 1 else [default_cell]
        for flag, default in zip(flags, defaults):
            rows[flag] = default.strip("` ").replace("`", "")
    return rows


def test_each_table_row_is_one_config_field_in_order():
    assert [f.name for f in dataclasses.fields(ServeConfig)] == \
        [o.field for o in SERVE_OPTIONS] + ["limits"]
    assert [f.name for f in dataclasses.fields(ServeLimits)] == [o.field for o in LIMIT_OPTIONS]
    assert len(BY_FLAG) == len(ALL_SERVE_OPTIONS)


@pytest.mark.parametrize("argv", [[], ["serve"]], ids=["flags-only", "serve"])
def test_the_parsers_defaults_are_the_configs_defaults(argv):
    assert serve_config(build_parser().parse_args(argv)) == ServeConfig()


def test_both_spellings_give_the_same_config():
    flags = ["--mode", "tcp", "--enable", "gpu-read", "--socket-permissions", "660",
             "--policy", "/tmp/p.toml", "--max-connections", "99", "--idle-timeout-s", "2.5"]
    serve = serve_config(build_parser().parse_args(["serve", *flags]))
    assert serve == serve_config(build_parser().parse_args(flags))
    assert (serve.mode, serve.enabled_groups, serve.socket_permissions, serve.policy_path) == \
        ("tcp", frozenset({"gpu-read"}), 0o660, "/tmp/p.toml")
    assert (serve.limits.max_connections, serve.limits.idle_timeout_s) == (99, 2.5)


def test_help_shows_each_default_from_the_table(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside a default
    text = re.sub(r"\s+", " ", build_parser().format_help())
    for option in ALL_SERVE_OPTIONS:
        if option.shown_default is not None:
            assert f"(default {option.shown_default})" in text, option.flag_name


def test_the_man_page_lists_every_option_with_its_argument_and_default():
    man = man_options()
    assert set(man) - {"--version"} == set(BY_FLAG), "man page and table differ"
    del man["--version"]
    for flag, (argument, paragraph) in man.items():
        option = BY_FLAG[flag]
        assert argument == ("|".join(option.choices) if option.choices else option.metavar), flag
        shown = option.shown_default
        if shown is None:
            assert "(default" not in paragraph, flag
        else:
            assert re.search(r"\(default " + re.escape(shown) + r"[),;]", paragraph), \
                (flag, paragraph)


def test_the_readme_table_shows_the_tables_defaults():
    readme = readme_options()
    assert set(readme) == {o.flag_name for o in SERVE_OPTIONS}, "README table and table differ"
    for flag, default in readme.items():
        assert default == (BY_FLAG[flag].shown_default or "none"), flag
