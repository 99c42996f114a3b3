"""Getting listening sockets: from systemd (socket activation) or bound by us."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass

log = logging.getLogger(__name__)
SD_LISTEN_FDS_START = 3


class ListenError(Exception):
    """A socket could not be obtained; the message says what to do."""


@dataclass
class Listener:
    sock: socket.socket
    description: str
    owned_path: str | None = None  # a socket file we created and must remove on exit


def systemd_sockets(environ=os.environ) -> list[socket.socket]:
    """Sockets passed by systemd (sd_listen_fds), with close-on-exec set and the
    variables unset so children do not inherit them. [] when not activated."""
    try:
        from systemd.daemon import listen_fds  # type: ignore[import-not-found]
    except ImportError:
        listen_fds = None
    if listen_fds is not None and environ is os.environ:
        fds = listen_fds(unset_environment=True)
    else:
        fds = _listen_fds_fallback(environ)
    sockets = []
    for fd in fds:
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def describe_socket(sock: socket.socket) -> str:
    """'unix:/run/zeusd/zeusd.sock' or 'tcp:127.0.0.1:4938', for the start-up log."""
    try:
        address = sock.getsockname()
    except OSError:
        address = None
    if sock.family == socket.AF_UNIX:
        return f"unix:{address or '?'}"
    if isinstance(address, tuple):
        host = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
        return f"tcp:{host}:{address[1]}"
    return f"family {sock.family}"


def _listen_fds_fallback(environ) -> list[int]:
    """sd_listen_fds(3) without libsystemd: LISTEN_PID must be us."""
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    finally:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def bind_unix(path: str, permissions: int, uid: int | None, gid: int | None,
              backlog: int = 1024) -> Listener:
    """Bind a Unix socket, replacing a stale one; never a live one or a non-socket."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o755, exist_ok=True)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, permissions)
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return Listener(sock, f"unix:{path}", owned_path=path)


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it. "
                          "Remove it or choose another --socket-path.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing stale socket %s (nothing listens on it)", path)
        os.unlink(path)
        return
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ListenError(f"{path} is a socket we cannot connect to ({exc.strerror}); "
                              "refusing to replace it.") from None
        raise ListenError(f"cannot check {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise ListenError(f"{path} is in use by a running server; is zeusd already running?")


def bind_tcp(address: str, backlog: int = 1024) -> Listener:
    host, port = parse_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    bound = sock.getsockname()
    return Listener(sock, f"tcp:{bound[0]}:{bound[1]}")


def parse_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:4938' or '[::1]:4938' -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        raise ValueError(f"invalid address '{address}' (expected HOST:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def remove_owned(listeners: list[Listener]) -> None:
    for listener in listeners:
        if listener.owned_path:
            try:
                os.unlink(listener.owned_path)
            except FileNotFoundError:
                pass
