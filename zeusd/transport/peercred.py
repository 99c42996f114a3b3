"""Who is on the other end of a Unix socket, as the kernel says.

SO_PEERCRED gives (pid, uid, gid) as of connect(); SO_PEERGROUPS (Linux 4.13+)
the peer's supplementary groups. Any failure yields an unknown Caller, which
every policy denies.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import struct

from ..identity import Caller

log = logging.getLogger(__name__)

SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("iII")  # pid_t, uid_t, gid_t
_GID = struct.Struct("I")
_MAX_GROUPS = 65536


def unix_peer(sock: socket.socket) -> Caller:
    """The Caller of an accepted AF_UNIX connection (known=False on any failure)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
    except (OSError, struct.error) as exc:
        log.warning("cannot read SO_PEERCRED: %s; the caller will be denied", exc)
        return Caller(transport="unix", known=False, error=f"SO_PEERCRED failed: {exc}")
    if pid <= 0:
        return Caller(transport="unix", known=False, error="peer has no pid")
    groups = _peer_groups(sock, uid, gid)
    return Caller(transport="unix", pid=pid, uid=uid, gid=gid, groups=groups,
                  start_time_ticks=process_start_ticks(pid))


def _peer_groups(sock: socket.socket, uid: int, gid: int) -> tuple[int, ...]:
    size = 64 * _GID.size
    while size <= _MAX_GROUPS * _GID.size:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == 34:  # ERANGE: buffer too small
                size *= 8
                continue
            break
        count = len(raw) // _GID.size
        return tuple(sorted({gid, *struct.unpack(f"{count}I", raw[: count * _GID.size])}))
    return _groups_from_database(uid, gid)


def _groups_from_database(uid: int, gid: int) -> tuple[int, ...]:
    """Fallback where SO_PEERGROUPS is unavailable: the user database's view."""
    try:
        name = pwd.getpwuid(uid).pw_name
        return tuple(sorted(set(os.getgrouplist(name, gid))))
    except (KeyError, OSError):
        return (gid,)


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid, it names one process for ever."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
