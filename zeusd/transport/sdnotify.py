"""sd_notify(3): tell systemd we are ready or stopping. No-op outside systemd."""

from __future__ import annotations

import os
import socket


def notify(state: str, environ=os.environ) -> bool:
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
