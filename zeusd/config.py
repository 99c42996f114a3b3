"""The daemon's configuration, parsed once into a frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from .limits import ServeLimits
from .operations import API_GROUPS

DEFAULT_SOCKET_PATH = "/run/zeusd/zeusd.sock"
DEFAULT_TCP_ADDRESS = "127.0.0.1:4938"
DEFAULT_POLICY_PATH = "/etc/zeusd/policy.toml"


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
