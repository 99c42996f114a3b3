"""Command line: `zeusd [serve] ...`, and the admin's `zeusd policy|token|doctor ...`.

Compatible with both released zeusd command lines (0.1: flags only; newer:
`serve` subcommand). This module only dispatches: the serve options are the table in
config.py, the admin commands live in zeusd/admin/. ``main(argv) -> int`` so exit codes
are testable.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .config import ALL_SERVE_OPTIONS, check_socket_path, serve_config
from .options import OneLineParser, add_options

# The admin commands parse their own arguments (so they must come first).
ADMIN_COMMANDS = {
    "policy": ("policy_cli", "check or explain the access policy"),
    "token": ("token", "issue bearer tokens"),
    "doctor": ("doctor", "check this node for zeusd"),
    "leases": ("leases", "list the leases, or keep them over the next restart"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="zeusd",
                           description="Privileged GPU-control daemon (Zeus zeusd API)")
    parser.add_argument("-V", "--version", action="version", version=f"zeusd {__version__}")
    add_options(parser, ALL_SERVE_OPTIONS)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    add_options(sub.add_parser("serve", help="serve the API (the default)"), ALL_SERVE_OPTIONS,
                defaults=False)
    for name, (_, text) in ADMIN_COMMANDS.items():
        sub.add_parser(name, help=f"{text} (must come first)", add_help=False)
    return parser


def _admin(name: str, argv: list[str]) -> int:
    from importlib import import_module

    module = import_module(f".admin.{ADMIN_COMMANDS[name][0]}", __package__)
    return module.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in ADMIN_COMMANDS:
        return _admin(argv[0], argv[1:])
    args, rest = build_parser().parse_known_args(argv)
    if args.command in ADMIN_COMMANDS:
        print(f"zeusd: error: `{args.command}` must come first: zeusd {args.command} ...",
              file=sys.stderr)
        return 2
    if rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        config = serve_config(args)
        if config.mode == "uds" and "LISTEN_FDS" not in os.environ:
            # under socket activation systemd binds, and the path is not ours to check
            check_socket_path(config.socket_path)
    except ValueError as exc:
        print(f"zeusd: error: {exc}", file=sys.stderr)
        return 2
    from .daemon import run

    return run(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
