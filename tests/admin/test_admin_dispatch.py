"""`zeusd` dispatches the admin's commands to zeusd/admin/; their argument errors stay one line."""

from __future__ import annotations

import pytest

from zeusd import cli
from zeusd.admin import token


@pytest.mark.parametrize("command", ["policy", "token", "doctor"])
def test_an_admin_command_after_serve_flags_is_refused(command, capsys):
    assert cli.main(["--enable", "gpu-read", command]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"zeusd: error: `{command}` must come first: zeusd {command} ...\n"
    assert captured.out == ""


def test_token_argument_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["token", "issue", "--user", "alice"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("zeusd token issue: error: the following arguments are "
                                       "required: --signing-key-path, --scope\n")


def test_token_issue_prints_one_token(tmp_path, capsys):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    assert token.main(["issue", "--signing-key-path", str(key), "--user", "alice",
                       "--scope", "gpu-read", "--expires", "1h"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and printed.count(".") == 2  # header.payload.signature
