"""Auditor: native journal protocol on a real datagram socket, and the stream fallback."""

from __future__ import annotations

import io
import os
import socket
import struct

import pytest

from zeusd.audit import Auditor, caller_cgroup, encode_journal, format_line, unit_of
from zeusd.identity import UNKNOWN_UNIX, Caller
from zeusd.operations import GpuChange
from zeusd.policy import Decision

from tests.support.journal import parse_journal

CALLER = Caller(transport="unix", pid=4242, uid=1001, gid=1001, groups=(1001, 3000))
CHANGE = GpuChange("set_power_limit", 0, power_limit_mw=650000)
DENY = Decision(False, "ml-team", "power_limit_mw 650000 is outside the range 200000-450000 "
                "that rule 'ml-team' allows uid 1001 on GPU 0", True,
                {"min_power_limit_mw": 200000, "max_power_limit_mw": 450000})
ALLOW = Decision(True, "ml-team", "", False)


@pytest.fixture
def journal(tmp_path):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    yield path, server
    server.close()


def receive(server) -> dict[str, str]:
    return parse_journal(server.recv(65536))


@pytest.fixture
def proc_root(tmp_path):
    os.makedirs(tmp_path / "proc" / "4242")
    (tmp_path / "proc" / "4242" / "cgroup").write_text(
        "0::/user.slice/user-1001.slice/user@1001.service/app.slice/train.service\n")
    return str(tmp_path / "proc")


def test_denied_change_is_one_journal_record_with_fields(journal, proc_root):
    path, server = journal
    auditor = Auditor(journal_socket=path, proc_root=proc_root)
    assert auditor.uses_journal  # the socket exists, so None means "use it"
    auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="GPU-abc", decision=DENY,
                   policy_hash="f00d", old_value="300000 mW", outcome="denied")
    fields = receive(server)
    assert fields["MESSAGE"] == f"denied uid 1001 pid 4242 set_power_limit on GPU 0 (GPU-abc): " \
                                f"{DENY.message}"
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "zeusd"
    expected = {"ZEUSD_DECISION": "deny", "ZEUSD_RULE": "ml-team",
                "ZEUSD_OPERATION": "set_power_limit", "ZEUSD_GPU_INDEX": "0",
                "ZEUSD_GPU_UUID": "GPU-abc", "ZEUSD_OLD_VALUE": "300000 mW",
                "ZEUSD_NEW_VALUE": "650000 mW", "ZEUSD_OUTCOME": "denied",
                "ZEUSD_POLICY_HASH": "f00d", "ZEUSD_CALLER_UID": "1001",
                "ZEUSD_CALLER_PID": "4242", "ZEUSD_CALLER_GID": "1001", "OBJECT_PID": "4242",
                "ZEUSD_CALLER_CGROUP": "/user.slice/user-1001.slice/user@1001.service/"
                                       "app.slice/train.service",
                "ZEUSD_CALLER_UNIT": "train.service"}
    assert expected.items() <= fields.items()


def test_allowed_change_has_priority_6_and_old_to_new(journal, proc_root):
    path, server = journal
    auditor = Auditor(use_journal=True, journal_socket=path, proc_root=proc_root)
    auditor.change(caller=CALLER, change=GpuChange("set_power_limit", 1, power_limit_mw=300000),
                   gpu_uuid="GPU-1", decision=ALLOW, policy_hash="f00d",
                   old_value="250000 mW", outcome="applied")
    fields = receive(server)
    assert fields["PRIORITY"] == "6" and fields["ZEUSD_DECISION"] == "allow"
    assert fields["MESSAGE"] == ("uid 1001 pid 4242 set_power_limit on GPU 1 (GPU-1): 250000 mW "
                                 "-> 300000 mW, allowed by rule 'ml-team', applied")
    assert fields["ZEUSD_RESTORE_ON_EXIT"] == "false"


def test_failed_change_is_a_warning(journal, proc_root):
    path, server = journal
    auditor = Auditor(use_journal=True, journal_socket=path, proc_root=proc_root)
    auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="GPU-1", decision=ALLOW,
                   policy_hash="h", old_value=None, outcome="failed: NVML error: Not Supported")
    fields = receive(server)
    assert fields["PRIORITY"] == "4" and "ZEUSD_OLD_VALUE" not in fields
    assert fields["ZEUSD_OUTCOME"] == "failed: NVML error: Not Supported"


def test_values_with_newlines_use_the_binary_safe_form(journal):
    path, server = journal
    auditor = Auditor(use_journal=True, journal_socket=path)
    auditor.event("policy rejected:\nline two", event="policy", detail="a\nb")
    raw = server.recv(65536)
    message = b"policy rejected:\nline two"
    assert b"MESSAGE\n" + struct.pack("<Q", len(message)) + message + b"\n" in raw
    fields = parse_journal(raw)
    assert fields["MESSAGE"] == "policy rejected:\nline two"
    assert fields["ZEUSD_DETAIL"] == "a\nb" and fields["ZEUSD_EVENT"] == "policy"
    assert fields["PRIORITY"] == "6"


def test_event_fields_are_upper_cased_and_prefixed(journal):
    path, server = journal
    Auditor(use_journal=True, journal_socket=path).event(
        "policy abc in force", event="policy", policy_hash="abc", priority=3, none=None)
    fields = receive(server)
    assert fields["ZEUSD_POLICY_HASH"] == "abc" and fields["PRIORITY"] == "3"
    assert "ZEUSD_NONE" not in fields


def test_denied_read_is_recorded(journal):
    path, server = journal
    decision = Decision(False, "anon", "gpu-read is not allowed", True)
    Auditor(use_journal=True, journal_socket=path).read_denied(
        caller=Caller("tcp", token_subject="eve"), group="gpu-read", gpu_index=None,
        decision=decision, policy_hash="h")
    fields = receive(server)
    assert fields["ZEUSD_DECISION"] == "deny" and fields["ZEUSD_OPERATION"] == "gpu-read"
    assert fields["ZEUSD_GPU_INDEX"] == "all" and fields["ZEUSD_CALLER_TOKEN_SUBJECT"] == "eve"
    assert fields["ZEUSD_CALLER_TRANSPORT"] == "tcp" and "ZEUSD_CALLER_UID" not in fields


def test_without_a_journal_one_line_per_record_on_the_stream(tmp_path):
    stream = io.StringIO()
    auditor = Auditor(stream=stream, journal_socket=str(tmp_path / "absent.sock"))
    assert not auditor.uses_journal
    auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="GPU-abc", decision=DENY,
                   policy_hash="f00d", old_value="300000 mW", outcome="denied")
    auditor.read_denied(caller=UNKNOWN_UNIX, group="cpu-read", gpu_index=None,
                        decision=Decision(False, "unknown-caller", "no", True), policy_hash="f")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("zeusd-audit: event=change decision=deny rule=ml-team "
                               "operation=set_power_limit gpu_index=0 gpu_uuid=GPU-abc "
                               'old_value="300000 mW" new_value="650000 mW" outcome=denied ')
    assert f'message="denied uid 1001 pid 4242 set_power_limit on GPU 0 (GPU-abc): ' \
           f'{DENY.message}"' in lines[0]
    assert "caller_error=\"no peer credentials\"" in lines[1]


def test_stream_lines_stay_one_line_with_hostile_values():
    line = format_line({"MESSAGE": "a\nb \"q\"", "ZEUSD_CALLER_TOKEN_SUBJECT": "x=y\nz"})
    assert "\n" not in line
    assert line == 'zeusd-audit: message="a\\nb \\"q\\"" caller_token_subject="x=y\\nz"'


def test_a_broken_journal_falls_back_to_the_stream(tmp_path):
    stream = io.StringIO()
    dead = str(tmp_path / "dead.sock")
    auditor = Auditor(use_journal=True, journal_socket=dead, stream=stream)
    auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="GPU-abc", decision=DENY,
                   policy_hash="f00d", old_value=None, outcome="denied")
    auditor.event("second")
    lines = stream.getvalue().splitlines()
    assert "journal unavailable" in lines[0]
    assert "decision=deny" in lines[1] and 'message=second' in lines[2]
    assert len(lines) == 3  # the outage is announced once


def test_nothing_raises_into_the_caller(tmp_path):
    class BrokenStream:
        def write(self, text):
            raise OSError("stderr closed")

        def flush(self):
            pass

    auditor = Auditor(use_journal=False, stream=BrokenStream())
    auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="u", decision=DENY, policy_hash="h",
                   old_value=None, outcome="denied")
    auditor.read_denied(caller=CALLER, group="gpu-read", gpu_index=0, decision=DENY,
                        policy_hash="h")
    auditor.event("x", priority="not a number")
    auditor.change(caller=None, change=None, gpu_uuid="u", decision=None, policy_hash="h",
                   old_value=None, outcome="denied")


def test_cgroup_and_unit_helpers(tmp_path):
    assert caller_cgroup(None) is None
    assert caller_cgroup(999999999, str(tmp_path)) is None
    os.makedirs(tmp_path / "7")
    (tmp_path / "7" / "cgroup").write_text("12:cpu:/x\n1:name=systemd:/system.slice/a.service\n")
    assert caller_cgroup(7, str(tmp_path)) == "/system.slice/a.service"
    assert unit_of("/user.slice/user-1000.slice/session-3.scope") == "session-3.scope"
    assert unit_of("/") is None and unit_of(None) is None
    assert caller_cgroup(os.getpid()) is not None or not os.path.exists("/proc/self/cgroup")


def test_encode_journal_plain_form():
    assert encode_journal({"A": "1", "B": "x y"}) == b"A=1\nB=x y\n"


def test_default_stream_is_stderr_at_write_time(tmp_path, capsys):
    Auditor(journal_socket=str(tmp_path / "absent.sock")).event("hello", event="policy")
    assert capsys.readouterr().err == "zeusd-audit: event=policy message=hello\n"


def test_an_allowed_change_falls_back_to_the_same_line_as_without_a_journal(tmp_path, proc_root):
    """The template path (allowed changes) writes the stream's format when the journal fails."""
    lines = []
    for journal in (str(tmp_path / "dead.sock"), None):
        stream = io.StringIO()
        auditor = Auditor(use_journal=journal is not None, journal_socket=journal or "x",
                          stream=stream, proc_root=proc_root)
        auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="GPU-abc", decision=ALLOW,
                       policy_hash="f00d", old_value="300000 mW", outcome="applied")
        lines.append(stream.getvalue().splitlines()[-1])
    assert lines[0] == lines[1] and lines[0].startswith("zeusd-audit: event=change decision=allow")


def test_a_restarted_journal_is_reconnected_without_a_gap(journal):
    """The sender keeps one connected socket; a journal that comes back at the same path
    (a new socket) gets the next record, and nothing falls back to the stream."""
    path, server = journal
    stream = io.StringIO()
    auditor = Auditor(use_journal=True, journal_socket=path, stream=stream)
    auditor.event("first")
    assert receive(server)["MESSAGE"] == "first"
    server.close()
    os.unlink(path)
    restarted = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    restarted.bind(path)
    restarted.settimeout(2)
    try:
        auditor.event("second")
        assert receive(restarted)["MESSAGE"] == "second"
    finally:
        restarted.close()
    assert stream.getvalue() == "" and auditor.uses_journal


def test_no_stderr_at_all_is_no_error(monkeypatch, tmp_path):
    """A daemon started with stderr closed (sys.stderr None) records nothing, raises nothing,
    including from the denial flusher's path (_write)."""
    monkeypatch.setattr("sys.stderr", None)
    auditor = Auditor(journal_socket=str(tmp_path / "absent.sock"))
    auditor.change(caller=CALLER, change=CHANGE, gpu_uuid="u", decision=ALLOW, policy_hash="h",
                   old_value=None, outcome="applied")
    auditor._write({"MESSAGE": "from the flusher"})


def test_concurrent_records_stay_whole_without_a_lock(tmp_path, proc_root):
    """8 threads writing at once: every line on a real file, every datagram on the journal,
    is one whole record (one os.write / one send each)."""
    import threading

    log = open(tmp_path / "audit.log", "w+", encoding="utf-8")
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    auditors = (Auditor(use_journal=False, stream=log, proc_root=proc_root),
                Auditor(use_journal=True, journal_socket=path, proc_root=proc_root))
    received = []

    def drain():
        while (datagram := server.recv(65536)) != b"STOP":
            received.append(datagram)
    reader = threading.Thread(target=drain)
    reader.start()

    def write(thread: int):
        for i in range(100):
            for auditor in auditors:
                auditor.change(caller=CALLER, change=GpuChange("set_power_limit", thread,
                                                               power_limit_mw=200000 + i),
                               gpu_uuid=f"GPU-{thread}", decision=ALLOW, policy_hash="h",
                               old_value="x\ny" if i % 2 else None, outcome="applied")
    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"STOP", path)
    reader.join()
    log.seek(0)
    lines = log.read().splitlines()
    assert len(lines) == 800 and len(received) == 800
    assert all(line.startswith("zeusd-audit: event=change") and line.endswith(", applied\"")
               for line in lines)
    records = [parse_journal(datagram) for datagram in received]
    assert all(r["ZEUSD_COUNT"] == "1" and r["ZEUSD_OUTCOME"] == "applied" for r in records)
    assert sorted(r["ZEUSD_NEW_VALUE"] for r in records) == \
        sorted(f"{200000 + i} mW" for i in range(100) for _ in range(8))
    server.close()
    log.close()
