"""Reads of GPUs (through the GPU manager) and CPUs (RAPL), with read policy.

GPU measurements (power, energy) are read beside the GPU's command queue, one driver call
shared by concurrent readers (``GpuManager.read_all``); settings (power limit, persistence,
constraints) are read in the GPU's command order, so a read after a non-blocking write
sees that write."""

from __future__ import annotations

import threading
import time

from .. import operations as ops
from ..errors import AggregatedError, DeviceFailure, PolicyDenied, UnknownDevice
from ..clock import now_ms
from ..identity import Caller
from .gpu_manager import GpuManager
from .hardware_ranges import supported_clocks


class ReadGate:
    """Read-side policy: explicit ids must all be readable; no ids = every readable one."""

    def __init__(self, policy_store, auditor, group: str) -> None:
        self.policy_store = policy_store
        self.auditor = auditor
        self.group = group

    def allowed(self, caller: Caller, requested: list[int] | None, existing: list[int],
                gpu_scoped: bool) -> list[int]:
        policy = self.policy_store.current
        ids = existing if requested is None else requested
        granted = []
        for index in ids:
            decision = policy.decide_read(caller, self.group, index if gpu_scoped else None)
            if decision.allowed:
                granted.append(index)
            elif requested is not None or not gpu_scoped:
                self.auditor.read_denied(caller=caller, group=self.group,
                                         gpu_index=index if gpu_scoped else None,
                                         decision=decision, policy_hash=policy.hash)
                raise PolicyDenied(decision.message, rule=decision.rule)
        if ids and not granted:
            decision = policy.decide_read(caller, self.group, ids[0])
            self.auditor.read_denied(caller=caller, group=self.group, gpu_index=None,
                                     decision=decision, policy_hash=policy.hash)
            raise PolicyDenied(decision.message, rule=decision.rule)
        return granted


class PerGpu(dict):
    """A per-GPU answer, and the GPUs a read of all GPUs left out: {index: why}."""

    def __init__(self, values=(), unavailable: dict[int, str] | None = None) -> None:
        super().__init__(values)
        self.unavailable = unavailable or {}


class GpuReads:
    def __init__(self, manager: GpuManager, policy_store, auditor) -> None:
        self.manager = manager
        self.gate = ReadGate(policy_store, auditor, ops.GPU_READ)

    def _ids(self, caller: Caller, gpu_ids: list[int] | None) -> list[int]:
        if gpu_ids is not None:
            for index in gpu_ids:
                if not self.manager.has(index):
                    raise UnknownDevice(f"GPU {index} not found")
        return self.gate.allowed(caller, gpu_ids, self.manager.indices, gpu_scoped=True)

    def _per_gpu(self, caller, gpu_ids, job, name, measure: bool = False) -> PerGpu:
        """Listed GPUs: all answer or the request fails. All GPUs (no list): the healthy
        ones answer and a lost, hung or backed-up GPU is left out, named in ``unavailable``.
        ``measure``: beside the queue, single flight."""
        ids = self._ids(caller, gpu_ids)
        manager = self.manager
        if gpu_ids is not None:
            run_all = manager.read_all if measure else manager.run_all
            results, missing = run_all(ids, job, name), {}
        else:
            run_available = manager.read_available if measure else manager.run_available
            results, missing = run_available(ids, job, name)
        return PerGpu(((str(i), results[i]) for i in sorted(results)),
                      {i: e.message for i, e in sorted(missing.items())})

    def power(self, caller, gpu_ids):
        per_gpu = self._per_gpu(caller, gpu_ids, _power_mw, "get_power", measure=True)
        return PerGpu({"timestamp_ms": now_ms(), "power_mw": per_gpu}, per_gpu.unavailable)

    def cumulative_energy(self, caller, gpu_ids):
        per_gpu = self._per_gpu(caller, gpu_ids, _energy_mj, "get_total_energy", measure=True)
        return PerGpu(((i, {"energy_mj": mj}) for i, mj in per_gpu.items()),
                      per_gpu.unavailable)

    def power_limit(self, caller, gpu_ids):
        return self._per_gpu(caller, gpu_ids,
                             lambda d: {"power_limit_mw": d.get_power_limit_mw()},
                             "get_power_limit")

    def power_limit_constraints(self, caller, gpu_ids):
        def job(device):
            low, high = device.get_power_limit_constraints_mw()
            return {"min_power_limit_mw": low, "max_power_limit_mw": high}
        return self._per_gpu(caller, gpu_ids, job, "get_power_limit_constraints")

    def supported_clocks(self, caller, gpu_ids):
        return self._per_gpu(caller, gpu_ids, supported_clocks, "get_supported_clocks")

    def persistence_mode(self, caller, gpu_ids):
        return self._per_gpu(caller, gpu_ids,
                             lambda d: {"enabled": bool(d.get_persistence_mode())},
                             "get_persistence_mode")


def _power_mw(device) -> int:
    return device.get_power_mw()


def _energy_mj(device) -> int:
    """One module-level job per flight name: joiners share the leader's raw reading."""
    return device.get_total_energy_mj()


class CpuReads:
    """RAPL reads. Sysfs reads are quick, so they run on the request thread."""

    KEEPALIVE_S = 30.0  # upstream reads every counter this often so no wrap is missed

    def __init__(self, cpus: list, policy_store, auditor, power_poll_hz: float) -> None:
        self.cpus = cpus
        self.gate = ReadGate(policy_store, auditor, ops.CPU_READ)
        self.power_window_s = 1.0 / max(power_poll_hz, 0.001)
        self._stop = threading.Event()
        if cpus:
            threading.Thread(target=self._keepalive, name="zeusd-rapl-keepalive",
                             daemon=True).start()

    def _ids(self, caller, cpu_ids, missing_text):
        indices = [c.index for c in self.cpus]
        if cpu_ids is not None:
            for index in cpu_ids:
                if index not in indices:
                    raise UnknownDevice(missing_text.format(index))
        return self.gate.allowed(caller, cpu_ids, indices, gpu_scoped=False)

    def _read(self, index: int, cpu: bool, dram: bool):
        try:
            return self.cpus[index].read_energy_uj(cpu, dram)
        except Exception as exc:  # noqa: BLE001 - RaplError or OSError from sysfs
            raise DeviceFailure(f"CPU {index}: {exc}") from None

    def cumulative_energy(self, caller, cpu_ids, cpu: bool, dram: bool):
        out = {}
        for index in self._ids(caller, cpu_ids, "CPU {} not found"):
            cpu_uj, dram_uj = self._read(index, cpu, dram and self.cpus[index].dram_available)
            out[str(index)] = {"cpu_energy_uj": cpu_uj if cpu else None,
                               "dram_energy_uj": dram_uj if dram else None}
        return out

    def index_energy(self, caller, cpu_id: int, cpu: bool, dram: bool):
        """Legacy POST /cpu/{id}/get_index_energy: one CPU's entry, upstream's wording."""
        self._check_exists(cpu_id)
        return self.cumulative_energy(caller, [cpu_id], cpu, dram)[str(cpu_id)]

    def dram_available(self, caller, cpu_id: int) -> bool:
        """Legacy GET /cpu/{id}/supports_dram_energy (upstream decides access first)."""
        self.gate.allowed(caller, [cpu_id], [c.index for c in self.cpus], gpu_scoped=False)
        self._check_exists(cpu_id)
        return self.cpus[cpu_id].dram_available

    def _check_exists(self, cpu_id: int) -> None:
        if cpu_id >= len(self.cpus):
            raise UnknownDevice(f"CPU index {cpu_id} does not exist.")

    def power(self, caller, cpu_ids):
        ids = self._ids(caller, cpu_ids, "CPU {} not found")
        first = {i: self._read(i, True, self.cpus[i].dram_available) for i in ids}
        start = time.monotonic()
        time.sleep(self.power_window_s)
        second = {i: self._read(i, True, self.cpus[i].dram_available) for i in ids}
        elapsed_us = max((time.monotonic() - start) * 1e6, 1.0)
        out, errors = {}, {}
        for i in ids:
            (c0, d0), (c1, d1) = first[i], second[i]
            if (d0 is None) != (d1 is None):
                errors[i] = DeviceFailure(
                    f"CPU {i} did not return the energy data required for power measurement.")
                continue
            out[str(i)] = {
                "cpu_mw": int(max(c1 - c0, 0) * 1000 / elapsed_us),
                "dram_mw": None if d0 is None else int(max(d1 - d0, 0) * 1000 / elapsed_us),
            }
        if errors:
            raise AggregatedError(errors)
        return {"timestamp_ms": now_ms(), "power_mw": out}

    def _keepalive(self) -> None:
        while not self._stop.wait(self.KEEPALIVE_S):
            for cpu in self.cpus:
                try:
                    cpu.read_energy_uj(True, cpu.dram_available)
                except Exception:  # noqa: BLE001 - reported on the next real read
                    pass

    def close(self) -> None:
        self._stop.set()


