"""sd_notify(3): tell systemd we are ready or stopping. No-op outside systemd.

systemd-python's ``systemd.daemon.notify`` does it where that is installed (the .deb
depends on python3-systemd); our own datagram is only the fallback for a virtualenv
without libsystemd, and for callers that pass their own environment.
"""

from __future__ import annotations

import os
import socket

try:
    from systemd.daemon import notify as systemd_notify
except ImportError:  # a virtualenv without systemd-python
    systemd_notify = None


def notify(state: str, environ=None) -> bool:
    """Send ``state`` to $NOTIFY_SOCKET (of ``environ``, default the process's); False when
    there is none or it cannot be reached: a daemon runs on without systemd."""
    if environ is None and systemd_notify is not None:
        try:
            return bool(systemd_notify(state))
        except OSError:
            return False
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    return _send(state, path) if path else False


def _send(state: str, path: str) -> bool:
    if path.startswith("@"):  # an abstract socket's name
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
