"""The daemon's configuration, parsed once into a frozen object."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass

from .limits import ServeLimits
from .operations import API_GROUPS

DEFAULT_SOCKET_PATH = "/run/zeusd/zeusd.sock"
DEFAULT_TCP_ADDRESS = "127.0.0.1:4938"
DEFAULT_POLICY_PATH = "/etc/zeusd/policy.toml"
MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2)
MAX_UNIX_PATH_BYTES = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class ServeConfig:
    mode: str = "uds"
    socket_path: str = DEFAULT_SOCKET_PATH
    socket_permissions: int = 0o666
    socket_uid: int | None = None
    socket_gid: int | None = None
    tcp_bind_address: str = DEFAULT_TCP_ADDRESS
    num_workers: int = 8
    enabled_groups: frozenset = frozenset(API_GROUPS)
    gpu_power_poll_hz: float = 20.0
    cpu_power_poll_hz: float = 10.0
    signing_key_path: str | None = None
    gpu_backend: str = "nvml"
    simulated_gpus: str | None = None
    policy_path: str = DEFAULT_POLICY_PATH
    rapl_root: str | None = None
    cpu_backend: str = "rapl"  # "simulated": zeusd.devices.simulated_rapl (demo, no RAPL)
    simulated_cpus: int = 2
    nvml_timeout_s: float = 10.0
    max_queue_per_gpu: int = 1024
    log_level: str = "info"
    limits: ServeLimits = ServeLimits()


def parse_groups(text: str) -> frozenset:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    if not groups:
        raise ValueError("--enable needs at least one API group")
    for group in groups:
        if group not in API_GROUPS:
            raise ValueError(f"unknown API group '{group}' (known: {', '.join(API_GROUPS)})")
    return frozenset(groups)


def parse_permissions(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"invalid --socket-permissions '{text}' (octal, e.g. 660)") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"invalid --socket-permissions '{text}' (must be 000-777)")
    return value


def _bounded_digits(text: str, max_digits: int) -> int | None:
    """The value of plain ASCII digits (no sign, `_` or other scripts), length-checked
    before int() so that no digit string is too long for it; None otherwise."""
    if not text.isascii() or not text.isdigit() or len(text.lstrip("0")) > max_digits:
        return None
    return int(text)


def parse_id(text: str) -> int:
    """--socket-uid / --socket-gid: a numeric id that chown(2) can set."""
    value = _bounded_digits(text, 10)
    if value is None or value > MAX_ID:
        raise ValueError(f"invalid id '{text[:20]}' (a number 0-{MAX_ID})")
    return value


def bounded_int(maximum: int):
    """A converter for a positive integer flag of at most ``maximum``."""
    def convert(text: str) -> int:
        value = _bounded_digits(text, len(str(maximum)))
        if value is None or not 1 <= value <= maximum:
            raise ValueError(f"must be a whole number 1-{maximum}, got '{text[:20]}'")
        return value
    return convert


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number, got '{text[:20]}'") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"must be positive and finite, got {text[:20]}")
    return value


def parse_tcp_address(text: str) -> str:
    """HOST:PORT or [V6]:PORT, checked before anything is bound."""
    host, sep, port = text.rpartition(":")
    value = _bounded_digits(port, 5)
    if not sep or not host or value is None or value > 65535:
        raise ValueError(f"invalid address '{text[:80]}' (expected HOST:PORT, port 0-65535)")
    return text


def check_socket_path(path: str) -> None:
    """What would make binding ``path`` fail, found before anything is bound: too long
    for sun_path, or an existing ancestor that is not a directory."""
    if not path:
        raise ValueError("--socket-path is empty")
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise ValueError(f"--socket-path is {len(os.fsencode(path))} bytes long; a Unix "
                         f"socket path holds at most {MAX_UNIX_PATH_BYTES}")
    ancestor = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            mode = os.stat(ancestor).st_mode
        except (FileNotFoundError, NotADirectoryError):
            ancestor, previous = os.path.dirname(ancestor), ancestor
            if ancestor == previous:
                return
            continue
        except OSError as exc:
            raise ValueError(f"--socket-path {path}: cannot check {ancestor}: "
                             f"{exc.strerror}") from None
        if not stat.S_ISDIR(mode):
            raise ValueError(f"--socket-path {path}: {ancestor} is not a directory")
        return
