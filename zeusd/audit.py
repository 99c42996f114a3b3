"""Audit records: one structured journal entry per decision, else one line on a stream.

Every change decision (allowed or denied), every denied read and every policy
event is recorded. ``journalctl -u zeusd ZEUSD_DECISION=deny`` finds denials.
Repeated denials of one kind are coalesced into counted records (audit_flood.py)
so that a denial flood cannot make journald drop records; every record carries
``ZEUSD_COUNT``, the number of decisions it stands for.
The journal is spoken to through its native datagram protocol, so no
systemd-python is needed (ours is also the faster: bench/bench_audit.py). Recording
never raises into the request: a broken journal falls back to the stream, a broken
stream is given up on.

Cost: an allowed change, the record of every write, is assembled from a template
per (caller, GPU, operation, rule, policy), already encoded for the journal and
for a stream line, so only the values, the outcome and the message are encoded
per record. Records are written without a lock: one datagram per record is atomic
on the journal's socket, one ``os.write`` of one line on a stream's descriptor.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys

from .audit_flood import DenialCoalescer

JOURNAL_SOCKET = "/run/systemd/journal/socket"
PRIORITY_WARNING = 4
PRIORITY_INFO = 6
_PLAIN_VALUE = re.compile(r"^[^\s\"'=\\]+$")
_FIELD_NAME = re.compile(r"[^A-Z0-9_]")
_UNIT_SUFFIXES = (".service", ".scope")
_LINE_SKIP = frozenset(("PRIORITY", "SYSLOG_IDENTIFIER", "OBJECT_PID"))
_LINE_NAMES: dict[str, str] = {}  # journal field name -> its name on a stream line
_CGROUP_CACHE_SIZE = 4096
_TEMPLATE_CACHE_SIZE = 4096
_QUOTED_CACHE_SIZE = 1024
_QUOTED: dict[str, str] = {}
_MISSING = object()


def encode_journal(fields: dict[str, str]) -> bytes:
    """The native journal protocol: KEY=value lines; values with newlines length-prefixed."""
    return b"".join([_journal_field(key, value) for key, value in fields.items()])


def _journal_field(key: str, value: str) -> bytes:
    if "\n" in value:  # the binary-safe form: KEY\n, 64-bit little-endian length, data\n
        data = value.encode("utf-8", "replace")
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return f"{key}={value}\n".encode("utf-8", "replace")


def format_line(fields: dict[str, str]) -> str:
    """One line of key=value pairs; values quoted (JSON style) unless plain."""
    return "zeusd-audit: " + " ".join([_line_field(key, value) for key, value in fields.items()
                                       if key not in _LINE_SKIP])


def _line_field(key: str, value: str) -> str:
    name = _LINE_NAMES.get(key)
    if name is None:
        name = _LINE_NAMES.setdefault(key, key.removeprefix("ZEUSD_").lower())
    return f"{name}={_quote(value)}"


def _quote_short(value: str) -> str:
    """``_quote`` of a short, oft-repeated value (a knob value, an outcome), remembered."""
    quoted = _QUOTED.get(value)
    if quoted is None:
        quoted = _quote(value)
        if len(value) > 64:  # a failure's text: seldom repeated, not worth keeping
            return quoted
        if len(_QUOTED) >= _QUOTED_CACHE_SIZE:
            _QUOTED.clear()
        _QUOTED[value] = quoted
    return quoted


def _quote(value: str) -> str:
    if _PLAIN_VALUE.match(value):
        return value
    if value.isprintable():  # the common case, without json's machinery
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return json.dumps(value, ensure_ascii=False)


def caller_cgroup(pid: int | None, proc_root: str = "/proc") -> str | None:
    """The caller's cgroup v2 path from /proc/PID/cgroup (one small read), or None."""
    if pid is None:
        return None
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as file:
            lines = file.read(4096).splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or None
    named = [line.split(":", 2)[2] for line in lines if ":name=systemd:" in line]
    return named[0] if named else None


def unit_of(cgroup: str | None) -> str | None:
    """The innermost systemd unit (.service/.scope) in a cgroup path."""
    for part in reversed((cgroup or "").split("/")):
        if part.endswith(_UNIT_SUFFIXES):
            return part
    return None


def _field_name(key: str) -> str:
    name = _FIELD_NAME.sub("_", key.upper())
    return name if name.startswith("ZEUSD_") else f"ZEUSD_{name}"


class JournalSender:
    """Sends records to journald's native socket (path injectable for tests)."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self._socket = None  # connected on first use: send() is cheaper than sendto()

    def send(self, fields: dict[str, str]) -> None:
        self.send_bytes(encode_journal(fields))

    def send_bytes(self, datagram: bytes) -> None:
        """One datagram is one whole record: concurrent senders need no lock."""
        sock = self._socket
        if sock is not None:
            try:
                sock.send(datagram)
                return
            except OSError:
                pass  # journald restarted or went away: connect afresh, once
        self._socket = sock = self._connect()
        sock.send(datagram)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock  # the one it replaces is left to the GC: another thread may be in send()


class _ChangeTemplate:
    """The parts of an allowed change's record that are the same for every value written,
    encoded once for the journal and for a stream line (see _change_record)."""

    __slots__ = ("journal_head", "journal_tail", "line_head", "line_tail", "message_head",
                 "message_tail")

    def __init__(self, head: dict[str, str], tail: dict[str, str], message_head: str,
                 message_tail: str) -> None:
        self.journal_head = encode_journal(head)
        self.journal_tail = encode_journal(tail)
        self.line_head = format_line(head) + " "
        self.line_tail = " " + format_line(tail).removeprefix("zeusd-audit: ")
        self.message_head = message_head
        self.message_tail = message_tail


class Auditor:
    """Writes audit records; see the module docstring."""

    def __init__(self, *, use_journal: bool | None = None, stream=None,
                 journal_socket: str = JOURNAL_SOCKET, proc_root: str = "/proc",
                 coalescer: DenialCoalescer | None = None):
        """use_journal None: the journal if its socket exists. stream None: sys.stderr
        as it is when a record is written (so redirecting stderr later still works).
        coalescer None: denials are coalesced over audit_flood.WINDOW_S."""
        if use_journal is None:
            use_journal = os.path.exists(journal_socket)
        self._journal = JournalSender(journal_socket) if use_journal else None
        self._stream = stream
        self._proc_root = proc_root
        self._cgroups: dict = {}
        self._templates: dict = {}
        self._journal_failed = False
        self._coalescer = coalescer if coalescer is not None else DenialCoalescer(self._write)

    def flush(self) -> None:
        """Write every pending denial count now (e.g. before exit)."""
        self._coalescer.flush(everything=True)

    @property
    def uses_journal(self) -> bool:
        return self._journal is not None and not self._journal_failed

    def change(self, *, caller, change, gpu_uuid: str, decision, policy_hash: str,
               old_value: str | None, outcome: str, old_source: str | None = None) -> None:
        """Record one change decision on one GPU and what came of it. ``old_source`` says
        where ``old_value`` came from (read from the GPU, or zeusd's own last write)."""
        try:
            if decision.allowed:  # never coalesced: straight from its template
                self._write_change(caller, change, gpu_uuid, decision, policy_hash,
                                   old_value, outcome, old_source)
                return
            self._emit(self._change_fields(caller, change, gpu_uuid, decision, policy_hash,
                                           old_value, outcome, old_source))
        except Exception:  # noqa: BLE001 - auditing must never break a request
            pass

    def read_denied(self, *, caller, group: str, gpu_index, decision, policy_hash: str) -> None:
        """Record a denied read (allowed reads are not recorded)."""
        try:
            where = "all GPUs" if gpu_index is None else f"GPU {gpu_index}"
            message = f"denied {caller.describe()} {group} on {where}: {decision.message}"
            fields = self._base(message, PRIORITY_WARNING, "read")
            fields.update(ZEUSD_DECISION="deny", ZEUSD_RULE=decision.rule,
                          ZEUSD_OPERATION=group, ZEUSD_OUTCOME="denied",
                          ZEUSD_GPU_INDEX="all" if gpu_index is None else str(gpu_index),
                          ZEUSD_POLICY_HASH=policy_hash)
            self._emit({**fields, **self._caller_fields(caller)})
        except Exception:  # noqa: BLE001
            pass

    def event(self, message: str, **fields) -> None:
        """Record a policy or lease event; extra fields become ZEUSD_<NAME>."""
        try:
            priority = int(fields.pop("priority", PRIORITY_INFO))
            kind = str(fields.pop("event", "event"))
            record = self._base(message, priority, kind)
            record.update({_field_name(key): str(value) for key, value in fields.items()
                           if value is not None})
            self._emit(record)
        except Exception:  # noqa: BLE001
            pass

    # -- building records ---------------------------------------------------

    def _base(self, message: str, priority: int, kind: str) -> dict[str, str]:
        return {"MESSAGE": message, "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": "zeusd",
                "ZEUSD_EVENT": kind}

    def _change_fields(self, caller, change, gpu_uuid, decision, policy_hash, old_value,
                       outcome, old_source=None) -> dict[str, str]:
        allowed = decision.allowed
        failed = outcome.startswith(("failed", "dropped"))
        priority = PRIORITY_INFO if allowed and not failed else PRIORITY_WARNING
        fields = self._base(_change_message(caller, change, gpu_uuid, decision, old_value,
                                            outcome), priority, "change")
        fields.update(_change_head(change, gpu_uuid, decision))
        if old_value is not None:
            fields["ZEUSD_OLD_VALUE"] = old_value
            if old_source is not None:
                fields["ZEUSD_OLD_VALUE_SOURCE"] = old_source
        fields.update(ZEUSD_NEW_VALUE=change.value_text(), ZEUSD_OUTCOME=outcome)
        return {**fields, **self._change_tail(caller, decision, policy_hash)}

    def _change_tail(self, caller, decision, policy_hash) -> dict[str, str]:
        return {"ZEUSD_POLICY_HASH": policy_hash,
                "ZEUSD_RESTORE_ON_EXIT": "true" if decision.restore_on_exit else "false",
                **self._caller_fields(caller)}

    def _change_template(self, caller, change, gpu_uuid, decision,
                         policy_hash) -> _ChangeTemplate:
        """The cached template of an allowed change; the key holds all that goes into it
        (the caller's cgroup is cached per process by _cgroup_of the same way)."""
        key = (caller, caller.error, change.operation, change.gpu_index, gpu_uuid,
               decision.rule, decision.restore_on_exit, policy_hash)
        template = self._templates.get(key)
        if template is None:
            template = _ChangeTemplate(
                {"SYSLOG_IDENTIFIER": "zeusd", "ZEUSD_EVENT": "change",
                 **_change_head(change, gpu_uuid, decision)},
                {**self._change_tail(caller, decision, policy_hash), "ZEUSD_COUNT": "1"},
                f"{caller.describe()} {change.operation} on GPU {change.gpu_index} "
                f"({gpu_uuid}): ", f", allowed by rule '{decision.rule}', ")
            if caller.start_time_ticks is not None or caller.transport != "unix":
                if len(self._templates) >= _TEMPLATE_CACHE_SIZE:
                    self._templates.clear()
                self._templates[key] = template
        return template

    def _write_change(self, caller, change, gpu_uuid, decision, policy_hash, old_value,
                      outcome, old_source=None) -> None:
        """An allowed change's record, byte for byte what _change_fields + _write make."""
        template = self._change_template(caller, change, gpu_uuid, decision, policy_hash)
        new_value = change.value_text()
        message = (f"{template.message_head}{'?' if old_value is None else old_value} -> "
                   f"{new_value}{template.message_tail}{outcome}")
        failed = outcome.startswith(("failed", "dropped"))
        priority = "4" if failed else "6"
        if self.uses_journal:
            datagram = b"".join((
                _journal_field("MESSAGE", message), b"PRIORITY=", priority.encode(), b"\n",
                template.journal_head,
                b"" if old_value is None else _journal_field("ZEUSD_OLD_VALUE", old_value),
                b"" if old_value is None or old_source is None else
                _journal_field("ZEUSD_OLD_VALUE_SOURCE", old_source),
                _journal_field("ZEUSD_NEW_VALUE", new_value),
                _journal_field("ZEUSD_OUTCOME", outcome), template.journal_tail))
            if self._send(datagram):
                return
        old = "" if old_value is None else f"old_value={_quote_short(old_value)} "
        if old_value is not None and old_source is not None:
            old += f"old_value_source={_quote_short(old_source)} "
        self._write_text(f"{template.line_head}{old}new_value={_quote_short(new_value)} "
                         f"outcome={_quote_short(outcome)}{template.line_tail} "
                         f"message={_quote(message)}\n")

    def _caller_fields(self, caller) -> dict[str, str]:
        fields = {"ZEUSD_CALLER_TRANSPORT": caller.transport}
        for key, value in (("UID", caller.uid), ("PID", caller.pid), ("GID", caller.gid)):
            if value is not None:
                fields[f"ZEUSD_CALLER_{key}"] = str(value)
        if caller.token_subject is not None:
            fields["ZEUSD_CALLER_TOKEN_SUBJECT"] = caller.token_subject
        if not caller.known:
            fields["ZEUSD_CALLER_ERROR"] = caller.error or "unknown"
        if caller.transport == "unix" and caller.known and caller.pid is not None:
            # journald adds OBJECT_UID, OBJECT_SYSTEMD_UNIT... for a root sender.
            fields["OBJECT_PID"] = str(caller.pid)
            cgroup = self._cgroup_of(caller)
            if cgroup:
                fields["ZEUSD_CALLER_CGROUP"] = cgroup
                unit = unit_of(cgroup)
                if unit:
                    fields["ZEUSD_CALLER_UNIT"] = unit
        return fields

    def _cgroup_of(self, caller) -> str | None:
        """Cached per process (pid + start time): a Zeus client changes settings many
        times, and reading /proc on every record doubled the cost of a write."""
        key = (caller.pid, caller.start_time_ticks)
        cached = self._cgroups.get(key, _MISSING)
        if cached is _MISSING or caller.start_time_ticks is None:
            cached = caller_cgroup(caller.pid, self._proc_root)
            if len(self._cgroups) >= _CGROUP_CACHE_SIZE:
                self._cgroups.clear()
            self._cgroups[key] = cached
        return cached

    # -- writing ------------------------------------------------------------

    def _emit(self, fields: dict[str, str]) -> None:
        if fields.get("ZEUSD_DECISION") == "deny" and not self._coalescer.offer(fields):
            return  # counted; its window's record will say so
        self._write({**fields, "ZEUSD_COUNT": "1"} if "ZEUSD_DECISION" in fields else fields)

    def _write(self, fields: dict[str, str]) -> None:
        if self._journal is not None and self._send(encode_journal(fields)):
            return
        self._write_line(fields)

    def _send(self, datagram: bytes) -> bool:
        """True if the journal took the record; False: write it to the stream instead."""
        try:
            self._journal.send_bytes(datagram)
            self._journal_failed = False
            return True
        except OSError as error:
            # Keep trying the journal (it may be restarting); say so once per outage.
            if not self._journal_failed:
                self._journal_failed = True
                self._write_line({"ZEUSD_EVENT": "audit", "MESSAGE": f"journal unavailable "
                                  f"({error}); audit records follow on this stream"})
            return False

    def _write_line(self, fields: dict[str, str]) -> None:
        line = format_line({**{k: v for k, v in fields.items() if k != "MESSAGE"},
                            "MESSAGE": fields.get("MESSAGE", "")})
        self._write_text(line + "\n")

    def _write_text(self, text: str) -> None:
        """One line in one os.write where the stream has a descriptor (lines from
        concurrent requests never interleave, and no lock convoys them)."""
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation too
                stream.write(text)
                stream.flush()
                return
            _write_all(fd, text.encode("utf-8", "replace"))
        except (OSError, ValueError, AttributeError):  # AttributeError: sys.stderr is None
            pass


def _write_all(fd: int, data: bytes) -> None:
    while data:  # a blocking descriptor writes all at once; a short write is resumed
        data = data[os.write(fd, data):]


def _change_head(change, gpu_uuid, decision) -> dict[str, str]:
    return {"ZEUSD_DECISION": "allow" if decision.allowed else "deny",
            "ZEUSD_RULE": decision.rule, "ZEUSD_OPERATION": change.operation,
            "ZEUSD_GPU_INDEX": str(change.gpu_index), "ZEUSD_GPU_UUID": gpu_uuid}


def _change_message(caller, change, gpu_uuid, decision, old_value, outcome) -> str:
    target = f"{change.operation} on GPU {change.gpu_index} ({gpu_uuid})"
    if not decision.allowed:
        return f"denied {caller.describe()} {target}: {decision.message}"
    old = old_value if old_value is not None else "?"
    return (f"{caller.describe()} {target}: {old} -> {change.value_text()}, "
            f"allowed by rule '{decision.rule}', {outcome}")
