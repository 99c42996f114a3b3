"""The owner of a lease: one process, pinned by a pidfd so a recycled pid is never taken for it.

A pid alone names a process only until it exits; the kernel may then give the
number to another. Two ways to hold on to the very process that connected:

- ``SO_PEERPIDFD`` (Linux 6.5+): the kernel hands us a pidfd for the process
  that called connect(); no race at all.
- otherwise ``pidfd_open(pid)``, checked against the start time (field 22 of
  /proc/PID/stat) read when the connection was accepted and read again *after*
  the pidfd is open: if both agree, the pidfd refers to that process (a pidfd
  cannot change process, and a reused pid would have a later start time).

A pidfd becomes readable when its process exits, which is what the watcher waits on.
"""

from __future__ import annotations

import os
import select
import socket
from dataclasses import asdict, dataclass

from ..transport.peercred import process_start_ticks

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
COMM_MAX = 16  # the kernel's TASK_COMM_LEN, with its NUL
CMDLINE_MAX = 256  # enough to recognise a job; a listing line must stay short


@dataclass(frozen=True)
class Owner:
    """Who holds a lease. (pid, start_ticks, boot_id) names one process for ever."""

    uid: int
    pid: int
    start_ticks: int
    comm: str
    cmdline: str

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start_ticks)

    def describe(self) -> str:
        return f"uid {self.uid} pid {self.pid} ({self.comm})"

    def to_json(self) -> dict:
        return asdict(self)


class OwnerGone(Exception):
    """The process has already exited (or its pid now names another process)."""


@dataclass
class PinnedOwner:
    """An Owner and an open pidfd on it. The book takes the pidfd over (closes it when done)."""

    owner: Owner
    pidfd: int

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def pin_unix_peer(sock: socket.socket | None, uid: int, pid: int,
                  start_ticks: int | None) -> PinnedOwner:
    """Pin the peer of an accepted AF_UNIX connection (uid/pid/start_ticks from SO_PEERCRED
    at accept time). Uses SO_PEERPIDFD when ``sock`` is given and the kernel has it."""
    if start_ticks is None:
        raise OwnerGone(f"pid {pid}: no start time was read at accept")
    pidfd = _peer_pidfd(sock) if sock is not None else None
    if pidfd is None:
        pidfd = open_pidfd(pid)
    try:
        _verify(pidfd, pid, start_ticks)
        return PinnedOwner(Owner(uid, pid, start_ticks, *describe_process(pid)), pidfd)
    except BaseException:
        os.close(pidfd)
        raise


def pin_pid(uid: int, pid: int, start_ticks: int) -> PinnedOwner:
    """Pin a process known by (pid, start time): used to re-adopt owners after a restart."""
    return pin_unix_peer(None, uid, pid, start_ticks)


def open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError as exc:
        raise OwnerGone(f"pid {pid} has exited") from exc


def _peer_pidfd(sock: socket.socket) -> int | None:
    """SO_PEERPIDFD, or None where the kernel lacks it (ENOPROTOOPT) or refuses it."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None


def _verify(pidfd: int, pid: int, start_ticks: int) -> None:
    """The pidfd is open: the process cannot be replaced now. Check it is the one we met."""
    if is_exited(pidfd):
        raise OwnerGone(f"pid {pid} has exited")
    now = process_start_ticks(pid)
    if now != start_ticks:
        raise OwnerGone(f"pid {pid} now names another process (start {now}, expected {start_ticks})")


def is_exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited (a zombie counts as exited)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def describe_process(pid: int) -> tuple[str, str]:
    """(comm, cmdline) of ``pid``, bounded; '?' where /proc no longer has them."""
    comm = _read_proc(pid, "comm", COMM_MAX).strip() or "?"
    raw = _read_proc(pid, "cmdline", CMDLINE_MAX + 1)
    cmdline = raw.replace("\0", " ").strip()
    if len(cmdline) > CMDLINE_MAX:
        cmdline = cmdline[: CMDLINE_MAX - 3] + "..."
    return comm, cmdline or comm


def _read_proc(pid: int, name: str, limit: int) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def boot_id() -> str:
    """This boot's id: a pid and start time mean nothing once the machine has rebooted."""
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()
