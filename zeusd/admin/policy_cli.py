"""`zeusd policy check [FILE]` and `zeusd policy explain ...`: the admin's view of the policy.

Exit codes: check 0 valid / 1 invalid; explain 0 allowed / 1 denied / 2 usage
error or a policy that cannot be loaded (the answer is unknown, not "deny").
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import pwd
import re
import sys
from decimal import Decimal, InvalidOperation

from zeusd import operations as ops
from zeusd.admin.policy_text import describe_policy
from zeusd.identity import Caller
from zeusd.operations import GpuChange
from zeusd.policy.decide import who
from zeusd.policy.fields import MAX_ID, MAX_U32
from zeusd.policy.load import DEFAULT_POLICY_PATH, is_builtin, load_policy
from zeusd.policy.model import READ_GROUPS, PolicyError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
# Bounded digit counts: the numbers are then within what int() and Decimal read exactly.
_POWER = re.compile(r"^\s*([0-9]{1,13}(?:\.[0-9]{1,13})?)\s*(w|mw)\s*$", re.IGNORECASE)
_CLOCKS = re.compile(r"^\s*([0-9]{1,10})\s*-\s*([0-9]{1,10})\s*(mhz)?\s*$", re.IGNORECASE)
_ID = re.compile(r"^[0-9]{1,10}$")
_SWITCH = {"on": True, "true": True, "enabled": True, "off": False, "false": False,
           "disabled": False}


class UsageError(Exception):
    """Bad command line; exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeusd policy", description="Check or explain the "
                                     "zeusd access policy.")
    _file_options(parser, default=None)
    # Accepted after the command too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _file_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", parents=[common],
                                help="validate a policy and say what each rule grants")
    check.add_argument("file", nargs="?", help="policy file (default: --policy or "
                                               f"{DEFAULT_POLICY_PATH})")
    explain = commands.add_parser("explain", parents=[common],
                                  help="would this request be allowed, and why")
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="Unix user name or uid")
    who.add_argument("--token", metavar="SUBJECT", help="TCP caller with this token subject")
    who.add_argument("--anonymous", action="store_true", help="TCP caller without a token")
    explain.add_argument("--group", action="append", default=[],
                         help="extra group (name or gid) the caller is in; repeatable")
    explain.add_argument("--gpu", type=int, default=None, help="GPU index (writes: default 0)")
    explain.add_argument("operation", help="operation name, gpu-read or cpu-read")
    explain.add_argument("value", nargs="?", help="300W, 300000mW, 1200-1800MHz, on/off")
    return parser


def _file_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--policy", default=default,
                        help=f"policy file (default {DEFAULT_POLICY_PATH})")
    parser.add_argument("--no-owner-check", action="store_true",
                        default=False if default is None else default,
                        help="do not require the file to be owned by root (drafts)")


def main(argv: list[str]) -> int:
    """Run `zeusd policy ARGV`; return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # argparse has printed the usage already
        return EXIT_OK if exit_request.code == 0 else EXIT_USAGE
    # The commands print the policy's warnings themselves; keep logging's
    # last-resort handler from printing them a second time.
    logging.getLogger("zeusd.policy").addHandler(logging.NullHandler())
    if args.command == "check":
        return _check(args)
    try:
        return _explain(args)
    except UsageError as error:
        print(f"zeusd policy explain: {error}", file=sys.stderr)
        return EXIT_USAGE


def _check(args) -> int:
    path = args.file or args.policy or DEFAULT_POLICY_PATH
    missing_ok = args.file is None and args.policy is None
    try:
        policy = load_policy(path, check_owner=not args.no_owner_check, missing_ok=missing_ok)
    except PolicyError as error:
        print(f"invalid: {error}", file=sys.stderr)
        return EXIT_FAIL
    if is_builtin(policy):
        print(f"{path} does not exist: zeusd uses its built-in policy")
    else:
        print(f"{path}: valid (sha256 {policy.hash})")
    print("Rules are read top to bottom; the first that matches the caller and the GPU decides.")
    for line in describe_policy(policy):
        print(f"  {line}")
    for warning in policy.warnings:
        print(f"warning: {warning}")
    return EXIT_OK


# What a machine-wide read covers, as `explain` names it (gpu-read names its GPU).
_READ_TARGETS = {ops.CPU_READ: "the CPUs", ops.METRICS: "the daemon's metrics"}


def _explain(args) -> int:
    operation = args.operation
    if operation not in ops.GPU_WRITE_OPERATIONS and operation not in READ_GROUPS:
        known = ", ".join(ops.GPU_WRITE_OPERATIONS + READ_GROUPS)
        raise UsageError(f"unknown operation {operation!r} (known: {known})")
    caller = _caller(args)
    try:
        policy = load_policy(args.policy or DEFAULT_POLICY_PATH,
                             check_owner=not args.no_owner_check)
    except PolicyError as error:
        print(f"cannot explain: {error}", file=sys.stderr)
        return EXIT_USAGE
    if operation in READ_GROUPS:
        if args.value is not None:
            raise UsageError(f"{operation} takes no value")
        gpu_index = args.gpu if operation == ops.GPU_READ else None
        decision = policy.decide_read(caller, operation, gpu_index)
        target = _READ_TARGETS.get(operation) or (
            "all GPUs" if gpu_index is None else f"GPU {gpu_index}")
        subject = operation
    else:
        change = _change(operation, 0 if args.gpu is None else args.gpu, args.value)
        decision = policy.decide_change(caller, change)
        target = f"GPU {change.gpu_index}"
        subject = operation if not ops.GPU_OPERATIONS[operation].params else (
            f"{operation} {change.value_text()}")
    return _report(decision, caller, subject, target, policy)


def _report(decision, caller, subject: str, target: str, policy) -> int:
    print(f"policy: {policy.source} (sha256 {policy.hash})")
    for warning in policy.warnings:
        print(f"warning: {warning}")
    if not decision.allowed:
        print(f"deny (rule '{decision.rule}'): {decision.message}")
        _note_everyone(caller, policy)
        return EXIT_FAIL
    undo = ("put back when the changing process exits (restore_on_exit)"
            if decision.restore_on_exit else "kept after the caller exits")
    rule = "root may always act" if decision.rule == "root" else f"rule '{decision.rule}'"
    print(f"allow ({rule}): {who(caller)} may {subject} on {target}")
    _note_everyone(caller, policy)
    if subject.startswith("set_") or subject.startswith("reset_"):
        print(f"changes are {undo}")
    return EXIT_OK


def _note_everyone(caller: Caller, policy) -> None:
    """Say why an `everyone` rule did not apply to an anonymous TCP caller."""
    if not caller.is_anonymous:
        return
    for rule in policy.rules:
        if rule.subjects.everyone and not rule.subjects.anonymous:
            print(f"note: rule '{rule.name}' (everyone = true) does not match anonymous TCP "
                  f"callers: everyone means identified callers (Unix peers, valid tokens); "
                  f"name anonymous callers with anonymous = true")


def _caller(args) -> Caller:
    extra = tuple(_group_id(group) for group in args.group)
    if args.token is not None:
        return Caller(transport="tcp", token_subject=args.token)
    if args.anonymous:
        return Caller(transport="tcp")
    uid, gid, groups = _user(args.user)
    return Caller(transport="unix", uid=uid, gid=gid, groups=tuple(sorted(set(groups + extra))))


def _user(text: str) -> tuple[int, int | None, tuple[int, ...]]:
    """uid, primary gid and groups of a user name or uid, from the user database."""
    numeric = _numeric_id(text, "uid")
    try:
        entry = pwd.getpwuid(numeric) if numeric is not None else pwd.getpwnam(text)
    except KeyError:
        if numeric is not None:
            return numeric, None, ()
        raise UsageError(f"unknown user {text!r}") from None
    return entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))


def _numeric_id(text: str, what: str) -> int | None:
    """A uid/gid written as a number (ASCII digits), or None for a name."""
    if not text.isascii() or not text.isdigit():
        return None
    if not _ID.match(text) or int(text) > MAX_ID:
        raise UsageError(f"{what} {text[:20]!r} is out of range (0-{MAX_ID})")
    return int(text)


def _group_id(text: str) -> int:
    numeric = _numeric_id(text, "gid")
    if numeric is not None:
        return numeric
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise UsageError(f"unknown group {text!r}") from None


def _change(operation: str, gpu_index: int, value: str | None) -> GpuChange:
    spec = ops.GPU_OPERATIONS[operation]
    if not spec.params:
        if value is not None:
            raise UsageError(f"{operation} takes no value")
        return GpuChange(operation, gpu_index)
    if value is None:
        raise UsageError(f"{operation} needs a value (e.g. 300W, 1200-1800MHz, on)")
    values = _VALUE_PARSERS[spec.value_kind](value)
    return GpuChange(operation, gpu_index, **dict(zip(spec.params, values)))


def _parse_switch(text: str) -> tuple[bool]:
    if text.lower() not in _SWITCH:
        raise UsageError(f"persistence mode is on or off, not {text!r}")
    return (_SWITCH[text.lower()],)


def parse_power_mw(text: str) -> int:
    """'300W' -> 300000, '250.5W' -> 250500, '300000mW' -> 300000."""
    match = _POWER.match(text)
    if not match:
        raise UsageError(f"power {text!r}: write it as 300W or 300000mW")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise UsageError(f"power {text!r} is not a number") from None
    milliwatts = number * 1000 if match.group(2).lower() == "w" else number
    if milliwatts != milliwatts.to_integral_value():
        raise UsageError(f"power {text!r} is not a whole number of milliwatts")
    if milliwatts > MAX_U32:
        raise UsageError(f"power {text!r} is out of range (at most {MAX_U32} mW)")
    return int(milliwatts)


def parse_clocks_mhz(text: str) -> tuple[int, int]:
    """'1200-1800MHz' -> (1200, 1800)."""
    match = _CLOCKS.match(text)
    if not match:
        raise UsageError(f"clocks {text!r}: write them as MIN-MAX, e.g. 1200-1800MHz")
    low, high = int(match.group(1)), int(match.group(2))
    if max(low, high) > MAX_U32:
        raise UsageError(f"clocks {text!r} are out of range (0-{MAX_U32} MHz)")
    return low, high


# How a command line writes each kind of value (see operations.Operation.value_kind).
_VALUE_PARSERS = {ops.POWER_MW: lambda text: (parse_power_mw(text),),
                  ops.SWITCH: _parse_switch,
                  ops.CLOCK_RANGE_MHZ: parse_clocks_mhz}
