"""µs per audit record: this tree's Auditor, the one before it was made cheap, systemd-python.

Usage: python3 bench/bench_audit.py [--records 20000] [--rounds 5]

Run it with a Python that has systemd-python (Debian: python3-systemd) to include
systemd.journal.send; without it that row is skipped. The journal need not be
running: a local AF_UNIX datagram socket stands in for it (a child process drains
it and checks every datagram's native framing, binary-safe multi-line values
included). systemd.journal.send always writes to /run/systemd/journal/socket, so
for its row the bench re-runs itself in a private mount namespace (root, unshare)
with a tmpfs over /run/systemd, where the fake journal is bound at that path.
The old implementation is read from git (commit BEFORE), so both run in one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.journal import parse_journal  # noqa: E402
from zeusd import audit  # noqa: E402
from zeusd.identity import Caller  # noqa: E402
from zeusd.operations import GpuChange  # noqa: E402
from zeusd.policy import Decision  # noqa: E402

BEFORE = "09e1f17"  # the golden records' commit: the audit as it was
SYSTEMD_SOCKET = "/run/systemd/journal/socket"
CALLER = Caller("unix", pid=os.getpid(), uid=1001, gid=1001, groups=(1001,),
                start_time_ticks=1)
ALLOW = Decision(True, "ml-team", "", False)
MULTILINE = "policy rejected:\nline two\n\x00binary"


def old_audit_module():
    """zeusd/audit.py as of BEFORE, imported under zeusd so its relative import works."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:zeusd/audit.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("zeusd.audit_before")
    module.__package__ = "zeusd"
    exec(compile(source, "zeusd/audit_before.py", "exec"), module.__dict__)  # noqa: S102
    return module


def _drain(path: str, ready, result) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:  # as root past rmem_max, so the queue's length (512) is what limits it
        server.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
    except OSError:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    ready.set()
    count = bad = 0
    multiline_ok = False
    while True:
        datagram = server.recv(1 << 17)
        if datagram == b"STOP":
            break
        count += 1
        try:
            fields = parse_journal(datagram)
            multiline_ok |= fields.get("MESSAGE") == MULTILINE
        except (ValueError, struct.error, UnicodeDecodeError):
            bad += 1
    result.put((count, bad, multiline_ok))


class FakeJournal:
    """A datagram socket at ``path`` drained (and checked) by a child process."""

    def __init__(self, path: str) -> None:
        self.path, ready, self.result = path, mp.Event(), mp.Queue()
        self.proc = mp.Process(target=_drain, args=(path, ready, self.result), daemon=True)
        self.proc.start()
        ready.wait(10)

    def close(self) -> tuple[int, int, bool]:
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"STOP", self.path)
        counts = self.result.get(timeout=30)
        self.proc.join(10)
        return counts


def _change(auditor, i: int) -> None:
    auditor.change(caller=CALLER, change=GpuChange("set_power_limit", i & 3,
                                                   power_limit_mw=300000 + i),
                   gpu_uuid=f"GPU-{i & 3}", decision=ALLOW, policy_hash="f00d",
                   old_value=f"{250000 + i} mW", outcome="applied")


def per_record_us(write, records: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per record. The CPU time is the writer's own cost; the wall time
    also holds waits for the receiver (a datagram socket's queue holds 512 records)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(records):
        write(i)
    return ((time.thread_time() - cpu) / records * 1e6,
            (time.perf_counter() - wall) / records * 1e6)


def cases(journal_path: str, devnull) -> dict:
    """name -> write(i), each an allowed set_power_limit record (the one every write makes)."""
    found = {"new: Auditor -> journal": audit.Auditor(use_journal=True,
                                                       journal_socket=journal_path),
             "new: Auditor -> stream": audit.Auditor(use_journal=False, stream=devnull)}
    old = old_audit_module()
    if old is not None:
        found["old: Auditor -> journal"] = old.Auditor(use_journal=True,
                                                       journal_socket=journal_path)
        found["old: Auditor -> stream"] = old.Auditor(use_journal=False, stream=devnull)
    writers = {name: (lambda i, a=auditor: _change(a, i)) for name, auditor in found.items()}
    sender = found["new: Auditor -> journal"]
    fields = {**sender._change_fields(CALLER, GpuChange("set_power_limit", 0,
                                                        power_limit_mw=300000),
                                      "GPU-0", ALLOW, "f00d", "250000 mW", "applied"),
              "ZEUSD_COUNT": "1"}
    writers["same fields: our encoder + send"] = lambda i: sender._journal.send(fields)
    journal = _systemd_journal() if journal_path == SYSTEMD_SOCKET else None
    if journal is not None:
        writers["same fields: systemd.journal.send"] = lambda i: journal.send(**fields)
    return writers


def _systemd_journal():
    try:
        from systemd import journal
    except ImportError:
        return None
    return journal


def run(journal_path: str, records: int, rounds: int) -> None:
    fake = FakeJournal(journal_path)
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        writers = cases(journal_path, devnull)
        # one multi-line record through each journal writer: its framing is checked
        audit.Auditor(use_journal=True, journal_socket=journal_path).event(MULTILINE)
        journal = _systemd_journal() if journal_path == SYSTEMD_SOCKET else None
        if journal is not None:
            journal.send(MULTILINE)
        results = {name: [] for name in writers}
        for _ in range(rounds):  # interleaved, medians reported
            for name, write in writers.items():
                results[name].append(per_record_us(write, records))
    count, bad, multiline_ok = fake.close()
    report(results, count, bad, multiline_ok)


def report(results: dict, count: int, bad: int, multiline_ok: bool) -> None:
    cpu = {name: statistics.median(v[0] for v in values) for name, values in results.items()}
    wall = {name: statistics.median(v[1] for v in values) for name, values in results.items()}
    print(f"# median of rounds; load {os.getloadavg()[0]:.2f}")
    print(f"{'record writer':40} {'CPU µs':>8} {'vs old':>7} {'wall µs':>8} {'vs old':>7}")
    for name in results:
        old = f"old: {name.split(': ', 1)[1]}" if name.startswith("new") else None
        ratios = [f"{m[name] / m[old]:.2f}x" if old in m else "" for m in (cpu, wall)]
        print(f"{name:40} {cpu[name]:8.2f} {ratios[0]:>7} {wall[name]:8.2f} {ratios[1]:>7}")
    ours, theirs = "same fields: our encoder + send", "same fields: systemd.journal.send"
    if theirs in cpu:
        print(f"systemd.journal.send / our encoder: CPU {cpu[theirs] / cpu[ours]:.2f}x, "
              f"wall {wall[theirs] / wall[ours]:.2f}x")
    print(f"fake journal received {count} datagrams, {bad} badly framed, "
          f"multi-line binary-safe MESSAGE intact: {multiline_ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_namespace:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
        os.makedirs("/run/systemd/journal")
        return run(SYSTEMD_SOCKET, args.records, args.rounds)
    if os.geteuid() == 0 and not os.path.exists(SYSTEMD_SOCKET):
        sys.exit(subprocess.call(["unshare", "--mount", "--propagation", "private",
                                  sys.executable, __file__, "--in-namespace",
                                  "--records", str(args.records),
                                  "--rounds", str(args.rounds)]))
    with tempfile.TemporaryDirectory() as tmp:  # not root, or a real journal: a local one
        run(f"{tmp}/journal.sock", args.records, args.rounds)


if __name__ == "__main__":
    main()
