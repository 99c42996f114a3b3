"""What /discover tells a caller: devices, API groups, auth, policy and GPU health."""

from __future__ import annotations

from .. import API_VERSION, __version__
from ..devices.base import GpuInfo
from ..identity import Caller
from ..operations import CPU_READ, GPU_CONTROL, GPU_READ, METRICS
from .gpu_manager import GpuManager

GROUP_ORDER = (GPU_CONTROL, GPU_READ, CPU_READ, METRICS)


def caller_json(caller: Caller) -> dict:
    if caller.transport == "unix":
        return {"transport": "unix", "uid": caller.uid, "gid": caller.gid, "pid": caller.pid,
                "groups": list(caller.groups)}
    return {"transport": "tcp", "subject": caller.token_subject}


class Discovery:
    def __init__(self, *, gpu_infos: list[GpuInfo], cpus: list, enabled_groups: frozenset[str],
                 auth_required: bool, backend_kind: str, policy_store,
                 manager: GpuManager, lease_book=None) -> None:
        self.gpu_infos = gpu_infos
        self.cpus = cpus
        self.enabled_groups = enabled_groups
        self.auth_required = auth_required
        self.backend_kind = backend_kind
        self.policy_store = policy_store
        self.manager = manager
        self.lease_book = lease_book

    def describe(self, caller: Caller) -> dict:
        show_gpus = bool(self.enabled_groups & {GPU_CONTROL, GPU_READ})
        gpus = [
            {"id": g.index, "name": g.name, "pci_address": g.pci_address,
             "cumulative_energy_available": g.cumulative_energy_available, "uuid": g.uuid}
            for g in self.gpu_infos
        ] if show_gpus else []
        cpus = [{"id": c.index, "dram_available": c.dram_available}
                for c in self.cpus] if CPU_READ in self.enabled_groups else []
        body = {
            "gpus": gpus,
            "cpus": cpus,
            "enabled_api_groups": [g for g in GROUP_ORDER if g in self.enabled_groups],
            "auth_required": self.auth_required,
            "gpu_ids": [g["id"] for g in gpus],
            "cpu_ids": [c["id"] for c in cpus],
            "dram_available": [c["dram_available"] for c in cpus],
            "api_version": API_VERSION,
            "daemon_version": __version__,
            "gpu_backend": self.backend_kind,
            "caller": caller_json(caller),
            "policy": self.policy_store.current.summary_for(caller),
            "leases": {"enabled": self.lease_book is not None,  # (ours) see GET /leases
                       "count": len(self.lease_book.leases()) if self.lease_book else 0},
        }
        if show_gpus:  # (ours) lost, hung or reset-needing GPUs, for the administrator
            health = self.manager.health()
            body["gpu_health"] = {str(i): h for i, h in sorted(health.items())}
        return body
