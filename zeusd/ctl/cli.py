"""`zeusctl`: command line, dispatch, and exit codes that scripts can test.

Exit codes (documented in docs/zeusctl.md; keep them stable):
  0 ok; 2 usage error (bad flag, bad unit, bad GPU list) -- nothing was sent;
  3 cannot connect to the daemon; 4 denied (401 token missing/invalid, 403 policy or scope);
  5 the daemon refused the request (other 4xx: bad value, unknown GPU, disabled group, 429);
  6 the daemon failed (5xx: NVML error, timeout), or answered something that is not JSON.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import change, leases, status
from .output import print_json
from .transport import DEFAULT_SOCKET_PATH, CannotConnect, Daemon, DaemonError, resolve_address
from .units import UnitError, parse_gpu_ids
from .watch import watch

EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_DENIED, EXIT_REFUSED, EXIT_FAILED = 0, 2, 3, 4, 5, 6


def exit_code_for(status_code: int) -> int:
    if status_code in (401, 403):
        return EXIT_DENIED
    return EXIT_FAILED if status_code >= 500 else EXIT_REFUSED


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - one line, exit 2, like zeusd
        self.exit(EXIT_USAGE, f"zeusctl: error: {message}\n")


def _gpus(text: str):
    try:
        return parse_gpu_ids(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind):
    def convert(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return convert


def _common_flags(defaults: bool) -> argparse.ArgumentParser:
    """Accepted before and after the subcommand; the subcommand's copy has no defaults so
    that it does not overwrite a flag given before it (`zeusctl --json status`)."""
    def d(value):
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=d(None),
                        help=f"zeusd's Unix socket (default $ZEUSD_SOCK_PATH or {DEFAULT_SOCKET_PATH})")
    common.add_argument("--url", default=d(None),
                        help="zeusd over TCP, e.g. http://127.0.0.1:4938 (default $ZEUSD_HOST_PORT; "
                        "bearer token from $ZEUSD_TOKEN)")
    common.add_argument("--json", action="store_true", default=d(False),
                        help="machine-readable output (one JSON document)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_flags(defaults=False)
    gpu = argparse.ArgumentParser(add_help=False)
    gpu.add_argument("--gpu", type=_gpus, default=None, metavar="IDS",
                     help="comma-separated GPU indices or 'all' (default: all)")
    parser = _Parser(prog="zeusctl", parents=[_common_flags(defaults=True)],
                     description="Read and change GPU settings through zeusd.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("status", parents=[common, gpu], help="power, limits, persistence per GPU")
    sub.add_parser("whoami", parents=[common], help="who the daemon thinks you are, what you may do")
    set_p = sub.add_parser("set", parents=[common, gpu], help="change a setting")
    set_p.add_argument("knob", choices=sorted(change.SETTERS))
    set_p.add_argument("value", help="300W, 900-1980MHz, 1.98GHz, on/off ...")
    set_p.add_argument("--no-block", action="store_true",
                       help="return once the daemon accepted it, do not wait for the GPU")
    reset = sub.add_parser("reset", parents=[common, gpu], help="unlock clocks")
    reset.add_argument("knob", choices=sorted(change.RESETTERS))
    reset.add_argument("--no-block", action="store_true",
                       help="return once the daemon accepted it, do not wait for the GPU")
    sub.add_parser("leases", parents=[common, gpu], help="who holds which knob, what comes back")
    rel = sub.add_parser("release", parents=[common, gpu],
                         help="end your leases now: their values are put back")
    rel.add_argument("--knob", choices=("power_limit", "gpu_locked_clocks", "mem_locked_clocks",
                                        "persistence_mode"), help="only this knob")
    rel.add_argument("--pid", default="any", help="only this process's leases (default: "
                     "every process of yours; root: everybody's)")
    w = sub.add_parser("watch", parents=[common, gpu], help="live power per GPU (Ctrl-C stops)")
    w.add_argument("--count", type=_positive(int), help="stop after this many power samples")
    w.add_argument("--duration", type=_positive(float), metavar="SECONDS", help="stop after this long")
    w.add_argument("--interval", type=_positive(float), default=0.5, metavar="SECONDS",
                   help="redraw at most this often (default 0.5)")
    return parser


def _run(daemon: Daemon, args: argparse.Namespace) -> int:
    if args.command == "status":
        result = status.collect_status(daemon, args.gpu)
        _emit(args, result, status.render_status(result))
        for err in result["errors"]:
            print(f"zeusctl: {err['route']}: {err['message']}", file=sys.stderr)
        return max([exit_code_for(e["status"]) for e in result["errors"]], default=EXIT_OK)
    if args.command == "whoami":
        result = status.collect_whoami(daemon)
        _emit(args, result, status.render_whoami(result))
        return EXIT_OK
    if args.command == "leases":
        result = daemon.get("/leases", _gpu_param(args))
        _emit(args, result, leases.format_leases(result["leases"]))
        return EXIT_OK
    if args.command == "release":
        params = {"pid": args.pid, **({"knob": args.knob} if args.knob else {}),
                  **(_gpu_param(args) or {})}
        result = daemon.post("/leases/release", params)
        _emit(args, result, leases.describe_released(result["released"]))
        return EXIT_OK
    if args.command == "watch":
        watch(daemon, args.gpu, args.count, args.duration, args.interval, args.json)
        return EXIT_OK
    return _change(daemon, args)


def _gpu_param(args: argparse.Namespace) -> dict | None:
    return {"gpu_ids": ",".join(map(str, args.gpu))} if args.gpu is not None else None


def _change(daemon: Daemon, args: argparse.Namespace) -> int:
    block = not args.no_block
    if args.command == "set":
        route, _, describe = change.SETTERS[args.knob]
        params = change.parse_setting(args.knob, args.value)
        text = describe(params)
    else:
        route, text = change.RESETTERS[args.knob]
        params = {}
    gpu_ids = change.apply(daemon, route, args.gpu, params, block)
    _emit(args, change.result(route.rsplit("/", 1)[1], gpu_ids, params, block),
          change.describe(text, gpu_ids, block))
    return EXIT_OK


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    if args.json:
        print_json(data)
    else:
        print(text)


def _fail(args, code: int, message: str, status_code: int | None = None,
          gpus: dict | None = None) -> int:
    print(f"zeusctl: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        error = {"exit_code": code, "message": message, "status": status_code}
        if gpus:
            error["gpus"] = gpus
        print_json({"ok": False, "error": error})
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "set":  # a bad unit is a usage error: check it before connecting
            change.parse_setting(args.knob, args.value)
        socket_path, url = resolve_address(args.socket, args.url)
        daemon = Daemon(socket_path=socket_path, url=url)
    except (UnitError, ValueError) as exc:
        return _fail(args, EXIT_USAGE, str(exc))
    try:
        return _run(daemon, args)
    except CannotConnect as exc:
        return _fail(args, EXIT_CONNECT, str(exc))
    except DaemonError as exc:
        return _fail(args, exit_code_for(exc.status), exc.message, exc.status, exc.gpus)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `zeusctl watch --json | head`: the reader has had enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush does not fail
        return EXIT_OK
    finally:
        daemon.close()
