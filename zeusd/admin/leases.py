"""`zeusd leases`: the leases the daemon holds, read from its lease directory (root only),
and `zeusd leases keep-on-restart`: the next stop keeps them (a restart for an upgrade)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..options import OneLineParser

DEFAULT_LEASE_DIR = "/var/lib/zeusd/leases"  # the unit's StateDirectory=zeusd, then leases/


def default_lease_dir() -> str:
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state, "leases") if state else DEFAULT_LEASE_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="zeusd leases", description="List the daemon's leases, or ask "
                           "it to keep them over its next restart.")
    parser.add_argument("--lease-dir", default=None, metavar="DIR",
                        help=f"the daemon's lease directory (default {DEFAULT_LEASE_DIR})")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("action", nargs="?", choices=("list", "keep-on-restart"), default="list")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    directory = args.lease_dir or default_lease_dir()
    try:
        if args.action == "keep-on-restart":
            return _keep(directory)
        return _list(directory, args.json)
    except OSError as exc:
        print(f"zeusd: error: {directory}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _keep(directory: str) -> int:
    from ..leases import request_keep

    if not os.path.isdir(directory):  # no daemon ever kept leases here: nothing to keep
        print(f"no lease directory {directory}: nothing to keep")
        return 0
    request_keep(directory)
    print(f"zeusd keeps its leases over its next stop (within 5 minutes): {directory}")
    return 0


def _list(directory: str, as_json: bool) -> int:
    from ..ctl.leases import format_leases
    from ..leases.records import RecordStore
    from ..service.lease_view import lease_json

    if not os.path.isdir(directory):
        records, rejected = [], []
    else:
        records, rejected = RecordStore(directory).load_all(remove_leftovers=False)
    now = time.time()
    views = [lease_json(_view(r, now)) for r in sorted(records, key=lambda r: (r.gpu_index,
                                                                              r.knob))]
    if as_json:
        print(json.dumps({"leases": views, "rejected_files": rejected}, indent=2))
        return 0
    print(format_leases(views))
    for name in rejected:
        print(f"zeusd: warning: lease file {name} could not be read", file=sys.stderr)
    return 0


def _view(record, now: float):
    from ..leases import LeaseView
    from ..leases.state import last

    return LeaseView(record.gpu_index, record.knob, record.captured, last(record.set),
                     tuple((h.owner, h.since_s) for h in record.holders), record.opened_s,
                     max(0.0, now - record.opened_s), "recorded")
