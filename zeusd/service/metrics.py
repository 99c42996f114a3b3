"""What GET /metrics shows: a prometheus_client collector that reads the daemon's state at
scrape time, registered in a registry of its own (nothing touches prometheus_client's global
default registry, so two daemons' apps in one process never see each other's numbers).

GPU metrics that DCGM's exporter also has keep its names and label names, so dashboards
built for dcgm-exporter show zeusd's numbers unchanged. The rest is ``zeusd_*``.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily,
                                    UnknownMetricFamily)

from .. import __version__
from .. import operations as ops
from ..devices.base import GpuDevice, GpuInfo
from ..errors import PolicyDenied
from ..identity import Caller
from ..tally import DECISIONS, Tally
from .gpu_manager import GpuManager

GPU_LABELS = ("gpu", "UUID", "device", "modelName", "pci_bus_id")  # dcgm-exporter's names


def no_leases() -> int:
    """The open-lease count when leases are off (no lease directory)."""
    return 0


def _read_or_none(read: Callable[[], object]):
    """One knob's value; None where the GPU does not support it (the others still show)."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - a missing knob leaves its metric out, nothing more
        return None


def read_gpu(device: GpuDevice, energy: bool) -> dict[str, object]:
    """Every per-GPU value of one scrape, in one turn of the GPU's queue (4 NVML calls)."""
    return {
        "power_mw": _read_or_none(device.get_power_mw),
        "energy_mj": _read_or_none(device.get_total_energy_mj) if energy else None,
        "power_limit_mw": _read_or_none(device.get_power_limit_mw),
        "persistence": _read_or_none(device.get_persistence_mode),
    }


def gpu_labels(info: GpuInfo) -> list[str]:
    return [str(info.index), info.uuid, f"nvidia{info.index}", info.name, info.pci_address]


class DaemonCollector:
    """prometheus_client's custom-collector protocol: ``collect()`` yields metric families."""

    def __init__(self, service: MetricsService) -> None:
        self.service = service

    def collect(self):
        service = self.service
        yield from self._gpu_families(service.manager)
        yield from self._queue_families(service.manager)
        yield _counter("zeusd_http_requests", "HTTP requests answered, by method, route "
                       "template and status code", ("method", "route", "code"),
                       service.requests.snapshot())
        yield _counter("zeusd_policy_decisions", "Policy decisions, by deciding rule and "
                       "outcome (allow or deny)", ("rule", "outcome"), DECISIONS.snapshot())
        leases = GaugeMetricFamily("zeusd_leases_open", "GPU leases currently held")
        leases.add_metric([], service.leases_open())
        yield leases
        policy = service.policy_store.current
        info = InfoMetricFamily("zeusd_policy", "The policy in force (hash of its file)")
        info.add_metric([], {"hash": policy.hash, "source": policy.source})
        yield info
        build = InfoMetricFamily("zeusd_daemon", "The daemon's version and GPU backend")
        build.add_metric([], {"version": __version__, "gpu_backend": service.backend_kind})
        yield build

    @staticmethod
    def _gpu_families(manager: GpuManager):
        infos = {info.index: info for info in manager.infos}
        by_index = {i: info.cumulative_energy_available for i, info in infos.items()}
        values, missing = manager.run_available(
            list(by_index), lambda device: read_gpu(device, by_index[device.index]),
            "metrics: read")
        power = GaugeMetricFamily("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).",
                                  labels=GPU_LABELS)
        # dcgm-exporter declares it a counter without the _total suffix that prometheus_client
        # adds to counters: exposed untyped to keep DCGM's exact name (rate() works on it).
        energy = UnknownMetricFamily("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                                     "Total energy consumption since boot (in mJ).",
                                     labels=GPU_LABELS)
        limit = GaugeMetricFamily("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power management limit "
                                  "(in W).", labels=GPU_LABELS)
        persistence = GaugeMetricFamily("DCGM_FI_DEV_PERSISTENCE_MODE", "Persistence mode "
                                        "(1 enabled, 0 disabled).", labels=GPU_LABELS)
        up = GaugeMetricFamily("zeusd_gpu_up", "1 if the GPU answered this scrape, 0 if it "
                               "is lost, hung or backed up", labels=GPU_LABELS)
        for index, info in sorted(infos.items()):
            labels = gpu_labels(info)
            up.add_metric(labels, 0 if index in missing else 1)
            sample = values.get(index)
            if sample is None:
                continue
            _add(power, labels, sample["power_mw"], 1000)
            _add(energy, labels, sample["energy_mj"], 1)
            _add(limit, labels, sample["power_limit_mw"], 1000)
            _add(persistence, labels, sample["persistence"], 1)
        yield from (power, energy, limit, persistence, up)

    @staticmethod
    def _queue_families(manager: GpuManager):
        depth = GaugeMetricFamily("zeusd_gpu_queue_depth", "Commands waiting in the GPU's "
                                  "queue", labels=("gpu",))
        latency = GaugeMetricFamily("zeusd_gpu_last_call_seconds", "How long the GPU's last "
                                    "queued NVML command took", labels=("gpu",))
        for index, (queued, last_s) in sorted(manager.queue_stats().items()):
            depth.add_metric([str(index)], queued)
            latency.add_metric([str(index)], last_s)
        yield from (depth, latency)


def _add(family, labels: list[str], value, per_unit: int) -> None:
    if value is not None:
        family.add_metric(labels, float(value) / per_unit if per_unit != 1 else int(value))


def _counter(name: str, documentation: str, label_names: tuple[str, ...],
             counts: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=label_names)
    for key, count in sorted(counts.items()):
        family.add_metric([str(part) for part in key], count)
    return family


class MetricsService:
    """The /metrics read: its own policy operation, then one scrape of every collector."""

    def __init__(self, *, manager: GpuManager, policy_store, auditor, backend_kind: str,
                 requests: Tally | None = None) -> None:
        self.manager = manager
        self.policy_store = policy_store
        self.auditor = auditor
        self.backend_kind = backend_kind
        self.requests = requests if requests is not None else Tally()
        # The daemon sets this to the lease book's count when leases are on.
        self.leases_open: Callable[[], int] = no_leases
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(self))

    def scrape(self, caller: Caller) -> bytes:
        """The exposition text; PolicyDenied (audited) unless the policy grants ``metrics``."""
        policy = self.policy_store.current
        decision = policy.decide_read(caller, ops.METRICS, None)
        if not decision.allowed:
            self.auditor.read_denied(caller=caller, group=ops.METRICS, gpu_index=None,
                                     decision=decision, policy_hash=policy.hash)
            raise PolicyDenied(decision.message, rule=decision.rule)
        return generate_latest(self.registry)
