"""Service routes that never need a token: /discover, /time, /auth/whoami."""

from __future__ import annotations

from .. import API_VERSION, __version__
from ..errors import NotFound
from ..clock import now_ms
from .respond import caller_of, send_json


def caller_json(caller) -> dict:
    if caller.transport == "unix":
        return {"transport": "unix", "uid": caller.uid, "gid": caller.gid, "pid": caller.pid,
                "groups": list(caller.groups)}
    return {"transport": "tcp", "subject": caller.token_subject}


class Discover:
    group = None

    def __init__(self, state) -> None:
        self.state = state  # DaemonState: infos, cpus, enabled groups, auth, policy store

    def on_get(self, req, resp) -> None:
        s = self.state
        show_gpus = bool(s.enabled_groups & {"gpu-control", "gpu-read"})
        show_cpus = "cpu-read" in s.enabled_groups
        gpus = [
            {"id": g.index, "name": g.name, "pci_address": g.pci_address,
             "cumulative_energy_available": g.cumulative_energy_available, "uuid": g.uuid}
            for g in s.gpu_infos
        ] if show_gpus else []
        cpus = [{"id": c.index, "dram_available": c.dram_available}
                for c in s.cpus] if show_cpus else []
        caller = caller_of(req)
        body = {
            "gpus": gpus,
            "cpus": cpus,
            "enabled_api_groups": [g for g in ("gpu-control", "gpu-read", "cpu-read")
                                   if g in s.enabled_groups],
            "auth_required": s.signing_key is not None,
            "gpu_ids": [g["id"] for g in gpus],
            "cpu_ids": [c["id"] for c in cpus],
            "dram_available": [c["dram_available"] for c in cpus],
            "api_version": API_VERSION,
            "daemon_version": __version__,
            "gpu_backend": s.backend_kind,
            "caller": caller_json(caller),
            "policy": s.policy_store.current.summary_for(caller),
        }
        if show_gpus:  # (ours) lost, hung or reset-needing GPUs, for the administrator
            health = s.gpu_reads.manager.health()
            body["gpu_health"] = {str(i): h for i, h in sorted(health.items())}
        send_json(resp, body)


class Time:
    group = None

    def on_get(self, req, resp) -> None:
        send_json(resp, {"timestamp_ms": now_ms()})


class Whoami:
    group = None
    needs_token = True

    def __init__(self, state) -> None:
        self.state = state

    def on_get(self, req, resp) -> None:
        claims = getattr(req.context, "claims", None)
        if self.state.signing_key is None or claims is None:
            raise NotFound("Authentication is not enabled on this server.")
        send_json(resp, claims.as_json())
