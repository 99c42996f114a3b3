"""`zeusd token issue`: print a bearer token signed with the daemon's key, for a TCP caller."""

from __future__ import annotations

import argparse
import sys

from ..auth.tokens import issue, parse_duration_s
from ..options import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="zeusd token", description="Issue bearer tokens.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    issue_cmd = commands.add_parser("issue", help="print a signed token")
    issue_cmd.add_argument("--signing-key-path", required=True)
    issue_cmd.add_argument("--user", required=True)
    issue_cmd.add_argument("--scope", required=True, help="e.g. gpu-read,gpu-control")
    issue_cmd.add_argument("--expires", default="never", help="1h, 7d, 30d or never")
    return parser


def main(argv: list[str]) -> int:
    """Run `zeusd token ARGV`; return the exit code (2 for any error, one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        with open(args.signing_key_path, "rb") as f:
            key = f.read()
        scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
        print(issue(key, args.user, scopes, parse_duration_s(args.expires)))
    except (OSError, ValueError) as exc:
        print(f"zeusd: error: {exc}", file=sys.stderr)
        return 2
    return 0
