"""Strict parsing of the policy TOML into a frozen Policy, in stages.

Stages: UTF-8 -> TOML syntax -> top-level keys -> [root] -> [defaults] ->
each [[rule]] (keys, name, who, GPUs, operations, ranges) -> cross-checks
(duplicate names) -> warnings. Every error names the file, the line when it
can be found, and the key path (`rule "ml-team".power_limit_w`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from decimal import Decimal

from zeusd import operations as ops
from zeusd.policy import fields
from zeusd.policy.model import Policy
from zeusd.policy.fields import FieldError
from zeusd.policy.locate import index_lines
from zeusd.policy.model import READ_GROUPS, Grant, PolicyError, Rule, Subjects
from zeusd.policy.scan import lexical_problem

log = logging.getLogger(__name__)

TOP_KEYS = ("version", "root", "defaults", "rule")
ROOT_KEYS = ("restore_on_exit",)
# Grant field (an operation's range_key) -> the file's key (the file gives power in watts).
_RANGE_KEYS = {"power_limit_mw": "power_limit_w", "gpu_clock_mhz": "gpu_clock_mhz",
               "mem_clock_mhz": "mem_clock_mhz"}
GRANT_KEYS = ("operations", "power_limit_w", "gpu_clock_mhz", "mem_clock_mhz", "restore_on_exit",
              "share_leases")
WHO_KEYS = ("users", "groups", "tokens", "anonymous", "everyone")
RULE_KEYS = ("name", *WHO_KEYS, "optional", "gpus", *GRANT_KEYS)
RESERVED_NAMES = frozenset({"root", "default", "no-policy", "unknown-caller"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
_TOML_LINE = re.compile(r"at line (\d+)")


class _Context:
    """File name, line index and collected warnings for one parse."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines = index_lines(text)
        self.warnings: list[str] = []

    def error(self, where: tuple, key_path: str, message: str) -> PolicyError:
        line = self.lines.get(where) or self.lines.get(where[:2] if where[:1] == ("rule",)
                                                       else where[:1])
        prefix = f"{self.source}:{line}" if line else self.source
        return PolicyError(f"{prefix}: {key_path}: {message}")


def parse_policy(data: bytes, source: str) -> Policy:
    """Parse the bytes of a policy file; raise PolicyError on the first problem."""
    document, context = _decode(data, source)
    _check_keys(document, TOP_KEYS, context, (), "")
    _check_version(document, context)
    root_restore = _parse_root(document, context)
    defaults = _parse_grant(document.get("defaults", {}), context, ("defaults",), "defaults")
    rules = _parse_rules(document.get("rule", []), context)
    _warn_shadowed_reads(rules, defaults, context)
    for warning in context.warnings:
        log.warning("%s: %s", source, warning)
    return Policy(hash=hashlib.sha256(data).hexdigest(), source=source, rules=rules,
                  defaults=defaults, root_restore_on_exit=root_restore, path=source,
                  warnings=tuple(context.warnings))


def _decode(data: bytes, source: str) -> tuple[dict, _Context]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(f"{source}: not UTF-8 text (bad byte at offset {error.start})") from None
    problem = lexical_problem(text)
    if problem is not None:
        raise PolicyError(f"{source}:{problem[0]}: refused: {problem[1]}")
    try:
        document = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        match = _TOML_LINE.search(str(error))
        if match:
            prefix = f"{source}:{match.group(1)}"
        elif "end of document" in str(error):  # tomllib names no line there: it is the last
            prefix = f"{source}:{max(text.count(chr(10)) + (not text.endswith(chr(10))), 1)}"
        else:
            prefix = source
        raise PolicyError(f"{prefix}: TOML syntax error: {error}") from None
    return document, _Context(source, text)


def _check_keys(table: object, known: tuple, context: _Context, where: tuple, path: str) -> None:
    if not isinstance(table, dict):
        raise context.error(where, path, f"must be a table, found {fields.found(table)}")
    for key in table:
        if key not in known:
            key_path = f"{path}.{key}" if path else key
            raise context.error(where + (key,), key_path,
                                f'unknown key "{key}"{_hint(key, known)}')


def _hint(key: str, known: tuple) -> str:
    if key == "power_limit_mw":
        return " (the file gives power in watts: power_limit_w = [min, max])"
    import difflib  # only for a misspelt key: not on the way to serving

    close = difflib.get_close_matches(key, known, n=1)
    suggestion = f'did you mean "{close[0]}"? ' if close else ""
    return f" ({suggestion}known keys: {', '.join(known)})"


def _field(context: _Context, where: tuple, key_path: str, reader, *args):
    """Run one typed reader, turning its FieldError into a located PolicyError."""
    try:
        return reader(*args)
    except FieldError as error:
        raise context.error(where, key_path, str(error)) from None


def _check_version(document: dict, context: _Context) -> None:
    version = document.get("version", 1)
    if not fields.is_int(version) or version != 1:
        raise context.error(("version",), "version",
                            f"only version 1 is understood, found {fields.found(version)}")


def _parse_root(document: dict, context: _Context) -> bool:
    table = document.get("root", {})
    _check_keys(table, ROOT_KEYS, context, ("root",), "root")
    if "restore_on_exit" not in table:
        return True
    return _field(context, ("root", "restore_on_exit"), "root.restore_on_exit",
                  fields.boolean, table["restore_on_exit"])


def _parse_grant(table: object, context: _Context, where: tuple, label: str,
                 known: tuple = GRANT_KEYS) -> Grant:
    _check_keys(table, known, context, where, label)
    readers = {"operations": fields.operations, "power_limit_w": fields.power_range_mw,
               "gpu_clock_mhz": fields.clock_range_mhz, "mem_clock_mhz": fields.clock_range_mhz,
               "restore_on_exit": fields.boolean, "share_leases": fields.boolean}
    values = {key: _field(context, where + (key,), f"{label}.{key}", reader, table[key])
              for key, reader in readers.items() if key in table}
    power = values.pop("power_limit_w", None)
    return Grant(power_limit_mw=power, **values)


def _parse_rules(rules: object, context: _Context) -> tuple[Rule, ...]:
    if not isinstance(rules, list):
        raise context.error(("rule",), "rule",
                            "rules must be [[rule]] tables (an array of tables), found a "
                            + ("single [rule] table" if isinstance(rules, dict)
                               else fields.found(rules)))
    parsed: list[Rule] = []
    first_line: dict[str, int | None] = {}
    for index, table in enumerate(rules):
        rule = _parse_rule(table, index, context)
        if rule.name in first_line:
            raise context.error(("rule", index, "name"), f'rule "{rule.name}".name',
                                f'duplicate rule name "{rule.name}" (first used on line '
                                f"{first_line[rule.name]}); rule names must be unique")
        first_line[rule.name] = rule.line
        parsed.append(rule)
    return tuple(parsed)


def _parse_rule(table: object, index: int, context: _Context) -> Rule:
    where = ("rule", index)
    name = _parse_name(table, index, context)
    label = f'rule "{name}"'
    grant = _parse_grant(table, context, where, label, RULE_KEYS)
    if "operations" not in table:
        raise context.error(where, f"{label}.operations",
                            'missing; say what the rule grants, e.g. operations = ["gpu-read"] '
                            "(an empty list denies everything)")
    optional = _field(context, where + ("optional",), f"{label}.optional", fields.boolean,
                      table.get("optional", False))
    subjects = _parse_subjects(table, context, where, label, optional)
    gpus = _field(context, where + ("gpus",), f"{label}.gpus", fields.gpus,
                  table.get("gpus", "all"))
    _warn_unused_ranges(name, grant, table, context)
    return Rule(name=name, subjects=subjects, gpus=gpus, grant=grant,
                line=context.lines.get(where))


def _parse_name(table: object, index: int, context: _Context) -> str:
    where, label = ("rule", index), f"rule #{index + 1}"
    if not isinstance(table, dict):
        raise context.error(where, label, f"must be a table, found {fields.found(table)}")
    if "name" not in table:
        raise context.error(where, f"{label}.name", 'missing; every rule needs a name = "..."')
    name = table["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise context.error(where + ("name",), f"{label}.name",
                            "must be 1-64 letters, digits or . _ @ + - (starting with a letter "
                            f"or digit), found {fields.found(name)}")
    if name in RESERVED_NAMES:
        raise context.error(where + ("name",), f"{label}.name",
                            f'"{name}" is reserved for the audit log; choose another name')
    return name


def _parse_subjects(table: dict, context: _Context, where: tuple, label: str,
                    optional: bool) -> Subjects:
    if not any(key in table for key in WHO_KEYS):
        raise context.error(where, label, "names nobody; give users, groups, tokens, "
                                          "anonymous = true or everyone = true")
    users = _field(context, where + ("users",), f"{label}.users", fields.id_list,
                   table.get("users", []), "user")
    groups = _field(context, where + ("groups",), f"{label}.groups", fields.id_list,
                    table.get("groups", []), "group")
    tokens = _field(context, where + ("tokens",), f"{label}.tokens", fields.string_list,
                    table.get("tokens", []), "token subjects")
    flags = {key: _field(context, where + (key,), f"{label}.{key}", fields.boolean,
                         table.get(key, False)) for key in ("anonymous", "everyone")}
    uids = _resolve(users, fields.resolve_user, "user", context, where, label, optional)
    gids = _resolve(groups, fields.resolve_group, "group", context, where, label, optional)
    if optional and not (uids or gids or tokens or any(flags.values())):
        context.warnings.append(f"{label} matches nobody on this machine")
    return Subjects(uids=frozenset(uids.values()), gids=frozenset(gids.values()),
                    token_subjects=frozenset(tokens), user_labels=_labels(uids),
                    group_labels=_labels(gids), **flags)


def _resolve(entries: list, resolver, kind: str, context: _Context, where: tuple, label: str,
             optional: bool) -> dict:
    resolved = {}
    for entry in entries:
        number = resolver(entry)
        if number is not None:
            resolved[entry] = number
        elif optional:
            context.warnings.append(f'{label}.{kind}s: no {kind} "{entry}" on this machine; '
                                    "skipped (optional = true)")
        else:
            raise context.error(where + (f"{kind}s",), f"{label}.{kind}s",
                                f'unknown {kind} "{entry}" (no such {kind} on this machine; '
                                f"use a numeric id, or optional = true to skip missing names)")
    return resolved


def _labels(resolved: dict) -> tuple[str, ...]:
    return tuple(str(entry) if fields.is_int(entry) else f"{entry} ({number})"
                 for entry, number in resolved.items())


def _warn_unused_ranges(name: str, grant: Grant, table: dict, context: _Context) -> None:
    for operation in ops.GPU_OPERATIONS.values():
        key = _RANGE_KEYS.get(operation.range_key)
        if key is not None and key in table and operation.name not in grant.operations:
            context.warnings.append(f'rule "{name}".{key} has no effect: the rule does not '
                                    f"grant {operation.name}")


def _warn_shadowed_reads(rules: tuple[Rule, ...], defaults: Grant, context: _Context) -> None:
    for rule in rules:
        # A rule for some GPUs decides GPU reads there, but never CPU reads.
        groups = READ_GROUPS if rule.gpus is None else (ops.GPU_READ,)
        for group in groups:
            if group in defaults.operations and group not in rule.grant.operations:
                context.warnings.append(
                    f'rule "{rule.name}" does not grant {group}, which the [defaults] grant: '
                    f"the callers it matches may not {group} (add it if that is unintended)")
