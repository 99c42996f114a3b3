"""The daemon's configuration: every `serve` option in one table (SERVE_OPTIONS, with the
limits' LIMIT_OPTIONS), parsed once into a frozen ServeConfig built from that table."""

from __future__ import annotations

import os
import stat

from .devices.loader import BACKEND_KINDS, DEFAULT_SIMULATED_SPEC
from .limits import LIMIT_OPTIONS, ServeLimits
from .operations import API_GROUPS, DEFAULT_GROUPS
from .options import Option, config_class, digits_value, field_values, positive_float, \
    whole_number
from .policy.load import DEFAULT_POLICY_PATH

DEFAULT_SOCKET_PATH = "/run/zeusd/zeusd.sock"
MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2)
MAX_UNIX_PATH_BYTES = 107  # sun_path holds 108 bytes with the terminating NUL
MAX_WORKERS = 1024
MAX_QUEUE_PER_GPU = 1_000_000
MAX_SIMULATED_CPUS = 256


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


def parse_id(text: str) -> int:
    """--socket-uid / --socket-gid: a numeric id that chown(2) can set."""
    value = digits_value(text, 10)
    if value is None or value > MAX_ID:
        raise ValueError(f"invalid id '{text[:20]}' (a number 0-{MAX_ID})")
    return value


_DURATION_UNITS_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float:
    """--exit-idle-after: '90', '90s', '10m' or '1h' -> seconds (positive)."""
    number, unit = text.rstrip("smh"), text[len(text.rstrip("smh")):]
    if unit not in _DURATION_UNITS_S:
        raise ValueError(f"invalid duration '{text[:20]}' (e.g. 90s, 10m, 1h)")
    try:
        return positive_float(number) * _DURATION_UNITS_S[unit]
    except ValueError:
        raise ValueError(f"invalid duration '{text[:20]}' (e.g. 90s, 10m, 1h)") from None


def parse_tcp_address(text: str) -> str:
    """HOST:PORT or [V6]:PORT, checked before anything is bound."""
    host, sep, port = text.rpartition(":")
    value = digits_value(port, 5)
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


def simulated_spec(text: str) -> str:
    """Checked while parsing, so a typo is an argument error (exit 2), not a failed start."""
    from .devices.profiles import parse_spec

    parse_spec(text)
    return text


SERVE_OPTIONS = (
    Option("mode", str, "uds", "listen on a Unix socket or TCP; ignored under socket activation",
           choices=("uds", "tcp")),
    Option("socket_path", str, DEFAULT_SOCKET_PATH, "Unix socket path", metavar="PATH"),
    Option("socket_permissions", int, 0o666, "octal mode of the socket file", parse_permissions,
           metavar="MODE", shown="666"),
    Option("socket_uid", int | None, None, "owner of the socket file (numeric)", parse_id,
           metavar="UID"),
    Option("socket_gid", int | None, None, "group of the socket file (numeric)", parse_id,
           metavar="GID"),
    Option("tcp_bind_address", str, "127.0.0.1:4938", "TCP address", parse_tcp_address,
           metavar="ADDR:PORT"),
    Option("num_workers", int, 8, "HTTP worker threads", whole_number(1, MAX_WORKERS), metavar="N"),
    Option("enabled_groups", frozenset, frozenset(DEFAULT_GROUPS),
           f"API groups to serve (of {', '.join(API_GROUPS)})",
           parse_groups, metavar="GROUPS", flag="--enable", shown=",".join(DEFAULT_GROUPS)),
    Option("gpu_power_poll_hz", float, 20.0, "GPU power samples per second for the streams",
           positive_float, metavar="HZ"),
    Option("cpu_power_poll_hz", float, 10.0,
           "CPU power samples per second; also /cpu/get_power's window", positive_float,
           metavar="HZ"),
    Option("signing_key_path", str | None, None,
           "require HS256 bearer tokens signed with this file's bytes", metavar="FILE"),
    Option("gpu_backend", str, "nvml", "talk to the GPUs through NVML or simulate them",
           choices=BACKEND_KINDS),
    Option("simulated_gpus", str | None, None,
           "simulated GPUs: e.g. h200x4, a100x8, or a JSON profile path", simulated_spec,
           metavar="SPEC", shown=DEFAULT_SIMULATED_SPEC),
    Option("policy_path", str, DEFAULT_POLICY_PATH, "the policy file", metavar="PATH",
           flag="--policy"),
    Option("rapl_root", str | None, None, "RAPL powercap directory", metavar="DIR",
           shown="/zeus_sys/... or /sys/class/powercap/intel-rapl"),
    Option("cpu_backend", str, "rapl",
           "read the CPUs' RAPL counters or simulate CPUs whose counters advance and wrap alike",
           choices=("rapl", "simulated")),
    Option("simulated_cpus", int, 2, "CPU packages of the simulated CPU backend",
           whole_number(1, MAX_SIMULATED_CPUS), metavar="N"),
    Option("nvml_timeout_s", float, 10.0, "an NVML call running longer answers 504",
           positive_float, metavar="SECONDS"),
    Option("max_queue_per_gpu", int, 1024, "queued commands per GPU before 429",
           whole_number(1, MAX_QUEUE_PER_GPU), metavar="N"),
    Option("lease_dir", str | None, None,
           "where leases are recorded (fsync'd) so a crash loses none; without it and without "
           "$STATE_DIRECTORY leases are off", metavar="DIR", shown="$STATE_DIRECTORY/leases"),
    Option("exit_idle_after_s", float | None, None,
           "exit after this long with no leases, streams or requests (socket activation "
           "starts zeusd again on the next connection)", parse_duration_s,
           metavar="DURATION", flag="--exit-idle-after", shown="off"),
    Option("log_level", str, "info", "least severe log messages shown",
           choices=("debug", "info", "warning", "error")),
)
ALL_SERVE_OPTIONS = SERVE_OPTIONS + LIMIT_OPTIONS


@config_class(SERVE_OPTIONS)
class ServeConfig:
    """One field per row of SERVE_OPTIONS, then the limits."""

    limits: ServeLimits = ServeLimits()


def serve_config(args) -> ServeConfig:
    """The configuration from parsed `serve` arguments; ValueError for limits that conflict."""
    limits = ServeLimits(**field_values(LIMIT_OPTIONS, args))
    limits.check()
    return ServeConfig(**field_values(SERVE_OPTIONS, args), limits=limits)

