"""Stop or restart? Whether a stopping daemon restores every lease or keeps them for its successor.

systemd gives a stopping service nothing that tells ``systemctl stop`` from
``systemctl restart``: both send SIGTERM; ``$SERVICE_RESULT``, ``$EXIT_CODE``
and ``$EXIT_STATUS`` (set only for ExecStop=/ExecStopPost=) say how the main
process ended, not what comes next; ``systemctl kill`` only picks the signal.
So the *restarting* side says so beforehand: ``request_keep()`` writes a
one-shot marker in the lease directory (root-only, this boot only, valid for
``ttl_s``), and the daemon consumes it when it stops. The package's upgrade
path (postinst, before ``deb-systemd-invoke restart``) and an administrator who
wants a restart that keeps leases write it; a plain ``systemctl stop`` (or
restart) without it restores everything. ``--keep-leases-on-stop`` makes every
stop keep them. A SIGKILLed daemon restores nothing itself: the next start does.
"""

from __future__ import annotations

import json
import os
import stat
import time

from .owner import boot_id

KEEP_MARKER = "keep-leases-on-next-stop"
DEFAULT_TTL_S = 300.0


def request_keep(directory: str, ttl_s: float = DEFAULT_TTL_S, *, now_s: float | None = None) -> str:
    """Ask the running daemon to keep its leases at its next stop (within ``ttl_s``)."""
    now_s = time.time() if now_s is None else now_s
    path = os.path.join(directory, KEEP_MARKER)
    tmp = path + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps({"boot_id": boot_id(), "expires_s": now_s + ttl_s}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path


def take_keep_request(directory: str, *, now_s: float | None = None) -> bool:
    """True when a valid marker was there (this boot, not expired, ours, 0600). Removes it."""
    now_s = time.time() if now_s is None else now_s
    path = os.path.join(directory, KEEP_MARKER)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        raw = os.read(fd, 1024) if _trusted(st) else b""
    finally:
        os.close(fd)
        os.unlink(path)
    try:
        marker = json.loads(raw)
        return (marker["boot_id"] == boot_id() and type(marker["expires_s"]) in (int, float)
                and now_s <= marker["expires_s"])
    except (ValueError, KeyError, TypeError):
        return False


def keep_leases_on_stop(directory: str, always_keep: bool) -> bool:
    """The daemon's decision at SIGTERM: the flag, or a one-shot request."""
    return take_keep_request(directory) or always_keep


def _trusted(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
