"""Command line: `zeusd [serve] ...`, `zeusd policy ...`, `zeusd token issue ...`.

Compatible with both released zeusd command lines (0.1: flags only; newer:
`serve` subcommand). ``main(argv) -> int`` so exit codes are testable.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, limits
from .config import (DEFAULT_POLICY_PATH, DEFAULT_SOCKET_PATH, DEFAULT_TCP_ADDRESS,
                     ServeConfig, bounded_int, check_socket_path, parse_groups, parse_id,
                     parse_permissions, parse_tcp_address, positive_float)

MAX_WORKERS = 1024
MAX_QUEUE_PER_GPU = 1_000_000


class _Parser(argparse.ArgumentParser):
    """Argument errors: one clear line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def _typed(converter):
    def convert(text: str):
        try:
            return converter(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def _simulated_spec(text: str) -> str:
    """Checked while parsing, so a typo is an argument error (exit 2), not a failed start."""
    from .devices.profiles import parse_spec

    parse_spec(text)
    return text


def _add_serve_flags(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The serve flags. ``defaults=False`` (the `serve` subcommand) leaves flags it was
    not given unset, so `zeusd --enable gpu-read serve` keeps the flag given before it."""

    def d(value):
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--mode", choices=("uds", "tcp"), default=d("uds"),
                   help="listen on a Unix socket (default) or TCP; ignored under socket activation")
    p.add_argument("--socket-path", default=d(DEFAULT_SOCKET_PATH))
    p.add_argument("--socket-permissions", type=_typed(parse_permissions), default=d(0o666),
                   help="octal mode of the socket file (default 666)")
    p.add_argument("--socket-uid", type=_typed(parse_id), default=d(None))
    p.add_argument("--socket-gid", type=_typed(parse_id), default=d(None))
    p.add_argument("--tcp-bind-address", type=_typed(parse_tcp_address),
                   default=d(DEFAULT_TCP_ADDRESS))
    p.add_argument("--num-workers", type=_typed(bounded_int(MAX_WORKERS)), default=d(8),
                   help="HTTP worker threads")
    p.add_argument("--enable", type=_typed(parse_groups),
                   default=d(parse_groups("gpu-control,gpu-read,cpu-read")),
                   help="API groups to serve: gpu-control,gpu-read,cpu-read (default all)")
    p.add_argument("--gpu-power-poll-hz", type=_typed(positive_float), default=d(20.0))
    p.add_argument("--cpu-power-poll-hz", type=_typed(positive_float), default=d(10.0))
    p.add_argument("--signing-key-path", default=d(None),
                   help="require HS256 bearer tokens signed with this file's bytes")
    p.add_argument("--gpu-backend", choices=("nvml", "simulated"), default=d("nvml"))
    p.add_argument("--simulated-gpus", type=_typed(_simulated_spec), default=d(None),
                   metavar="SPEC",
                   help="e.g. h200x4, a100x8, or a JSON profile path (simulated backend)")
    p.add_argument("--policy", default=d(DEFAULT_POLICY_PATH), metavar="PATH")
    p.add_argument("--rapl-root", default=d(None), metavar="DIR",
                   help="RAPL powercap directory (default /zeus_sys/... or /sys/...)")
    p.add_argument("--cpu-backend", choices=("rapl", "simulated"), default=d("rapl"))
    p.add_argument("--simulated-cpus", type=_typed(bounded_int(256)), default=d(2), metavar="N",
                   help="CPU packages of the simulated CPU backend (default 2)")
    p.add_argument("--nvml-timeout-s", type=_typed(positive_float), default=d(10.0),
                   help="an NVML call running longer answers 504 (default 10)")
    p.add_argument("--max-queue-per-gpu", type=_typed(bounded_int(MAX_QUEUE_PER_GPU)),
                   default=d(1024),
                   help="queued commands per GPU before 429 (default 1024)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=d("info"))
    limits.add_flags(p, d)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zeusd", description="Privileged GPU-control daemon (Zeus zeusd API)")
    parser.add_argument("-V", "--version", action="version", version=f"zeusd {__version__}")
    _add_serve_flags(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_serve_flags(sub.add_parser("serve", help="serve the API (the default)"), defaults=False)
    sub.add_parser("policy", help="check or explain the access policy (must come first)",
                   add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("doctor", help="check this node for zeusd (must come first)", add_help=False)
    token = sub.add_parser("token", help="issue bearer tokens").add_subparsers(
        dest="token_command", required=True, parser_class=_Parser)
    issue = token.add_parser("issue", help="print a signed token")
    issue.add_argument("--signing-key-path", required=True)
    issue.add_argument("--user", required=True)
    issue.add_argument("--scope", required=True, help="e.g. gpu-read,gpu-control")
    issue.add_argument("--expires", default="never", help="1h, 7d, 30d or never")
    return parser


def serve_config(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        mode=args.mode, socket_path=args.socket_path,
        socket_permissions=args.socket_permissions, socket_uid=args.socket_uid,
        socket_gid=args.socket_gid, tcp_bind_address=args.tcp_bind_address,
        num_workers=args.num_workers, enabled_groups=args.enable,
        gpu_power_poll_hz=args.gpu_power_poll_hz, cpu_power_poll_hz=args.cpu_power_poll_hz,
        signing_key_path=args.signing_key_path, gpu_backend=args.gpu_backend,
        simulated_gpus=args.simulated_gpus, policy_path=args.policy,
        rapl_root=args.rapl_root, cpu_backend=args.cpu_backend,
        simulated_cpus=args.simulated_cpus, nvml_timeout_s=args.nvml_timeout_s,
        max_queue_per_gpu=args.max_queue_per_gpu, log_level=args.log_level,
        limits=limits.from_args(args),
    )


def _token_issue(args: argparse.Namespace) -> int:
    from .auth.tokens import issue, parse_duration_s

    try:
        with open(args.signing_key_path, "rb") as f:
            key = f.read()
        scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
        print(issue(key, args.user, scopes, parse_duration_s(args.expires)))
    except (OSError, ValueError) as exc:
        print(f"zeusd: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doctor"]:
        from .admin.doctor import main as doctor_main

        return doctor_main(argv[1:])
    if argv[:1] == ["policy"]:
        from .policy.cli import main as policy_main

        return policy_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "token":
        return _token_issue(args)
    if args.command == "policy":
        print("zeusd: error: `policy` must come first: zeusd policy check|explain ...",
              file=sys.stderr)
        return 2
    config = serve_config(args)
    if config.mode == "uds" and "LISTEN_FDS" not in os.environ:
        try:  # under socket activation systemd binds, and the path is not ours to check
            check_socket_path(config.socket_path)
        except ValueError as exc:
            print(f"zeusd: error: {exc}", file=sys.stderr)
            return 2
    from .daemon import run

    return run(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
