"""Simulated GPUs that fail and succeed like the real driver, for tests and demos.

Behaviour follows NVML, error codes and function names included:

- ``set_power_limit_mw`` outside ``(min, max)`` of the constraints raises
  ``INVALID_ARGUMENT`` from ``nvmlDeviceSetPowerManagementLimit``.
- Locked clocks: ``min > max`` is ``INVALID_ARGUMENT``. Real
  ``nvmlDeviceSetGpuLockedClocks`` accepts any pair inside the GPU's range and
  rounds it to supported clocks, so we accept any pair inside
  ``[lowest, highest]`` supported graphics clock (not only table entries) and
  reject values outside it with ``INVALID_ARGUMENT``; memory clocks likewise
  against the supported memory clocks. We record them as given (no rounding)
  and do not accept NVML's special ``nvmlClockLimitId_t`` values.
- ``get_supported_graphics_clocks_mhz`` of an unknown memory clock is
  ``NOT_FOUND``, as in NVML.
- Power takes a bounded random walk around the profile's idle power (plus a
  load set with ``set_load``), never above the power limit. The energy counter
  integrates power over the clock's time, so it is monotonic.
- Profiles without the POWER_INSTANT field answer ``get_power_mw`` from
  ``nvmlDeviceGetPowerUsage`` (averaged), as the NVML backend does; profiles
  without an energy counter raise ``NOT_SUPPORTED``.

Tests observe the simulation through a *journal* (one JSON line per setter that
succeeded: ``{"gpu": 0, "call": "nvmlDeviceSetPowerManagementLimit",
"args": [250000], "t": 1762000000.1}``; persistence args are ``[true]`` or
``[false]``, resets ``[]``), count its driver calls with ``call_counts()`` (per
GPU and NVML function, failed calls included), and steer it with *faults* (``inject_fault`` or the
spec file's ``faults``): ``error`` raises that NVML error, ``delay_s`` sleeps,
``hang`` blocks until ``SimulatedBackend.release_hangs()`` (or ``close()``),
``lost`` makes every call on the GPU fail with ``GPU_IS_LOST`` from then on.
``after_calls`` / ``after_s`` delay a fault's start, ``times`` ends it.
A GPU lost from the first call fails the daemon's start-up (``info()`` reads
it), exactly as a real lost GPU would; to lose it while serving, give
``after_calls`` (``info()`` makes 4 calls per GPU) or ``after_s``.
``release_hangs()`` releases every hang, current and later ones.
Delays and hangs happen outside the GPU's lock, as a slow driver call would
not stop other threads from queueing their own. Except energy reads: the driver
serialises ``nvmlDeviceGetTotalEnergyConsumption`` per GPU (a second caller waits
for the first's ~4 ms call), so they take a per-GPU lock for the whole call,
latency, delays and hangs included.
Time (delays, latency, ``after_s``, power and energy) is the ``clock``'s, so tests
can advance it by hand instead of sleeping.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass

from ..clock import MonotonicClock
from . import profiles as profiles_mod
from .errors import GPU_IS_LOST, INVALID_ARGUMENT, NOT_FOUND, NOT_SUPPORTED, NvmlError
from .probe import BackendProbe, GpuProbe
from .profiles import FaultSpec, Profile, SimSpec

log = logging.getLogger(__name__)

DRIVER_VERSION = "580.159.04"
_POWER_STEP_S = 0.05  # the random walk takes one step per 50 ms of the clock's time
_AVERAGE_WINDOW_S = 1.0  # nvmlDeviceGetPowerUsage averages over about a second


@dataclass
class _ActiveFault:
    """A fault with its counters; guarded by the GPU's lock."""

    spec: FaultSpec
    started_at: float
    seen: int = 0
    fired: int = 0

    def fires(self, now: float) -> bool:
        self.seen += 1
        if self.seen <= self.spec.after_calls or now - self.started_at < self.spec.after_s:
            return False
        if self.spec.times is not None and self.fired >= self.spec.times:
            return False
        self.fired += 1
        return True


class _Journal:
    """Append-only JSON lines of applied settings; shared by the GPUs of a backend."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def record(self, gpu: int, call: str, args: list) -> None:
        line = json.dumps({"gpu": gpu, "call": call, "args": args, "t": time.time()})
        with self._lock:
            if self._file.closed:  # a call that outlived the backend applies, unjournalled
                return
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class SimulatedGpu(GpuProbe):
    """One simulated GPU. Thread-safe: one lock guards its state."""

    def __init__(self, index: int, profile: Profile, journal: _Journal | None = None,
                 latency: bool = False, release: threading.Event | None = None,
                 clock=MonotonicClock) -> None:
        self.index = index
        self._clock = clock  # now() and sleep(s): delays, faults' after_s, power and energy
        self.profile = profile
        self._journal = journal
        self._latency = latency
        self._release = release or threading.Event()
        self._lock = threading.Lock()
        self._energy_lock = threading.Lock()  # the driver runs one energy read at a time
        self._faults: list[_ActiveFault] = []
        self._calls: collections.Counter[str] = collections.Counter()  # NVML function -> calls
        self._lost = False
        self._rng = random.Random(f"{profile.key}:{index}")  # deterministic per GPU
        self._power_limit_mw = profile.default_power_limit_mw
        self._persistence = profile.persistence_mode
        self._gpu_locked_mhz: tuple[int, int] | None = None
        self._mem_locked_mhz: tuple[int, int] | None = None
        self._load = 0.0
        self._power_mw = float(profile.idle_power_mw)
        self._average_mw = self._power_mw
        self._energy_mj = float(profile.initial_energy_mj + index * 1_000)
        self._updated_at = clock.now()
        self._instant_supported = profile.instant_power

    # ----- faults and state, for tests -----

    def inject_fault(self, call: str = "*", error: int | str | None = None, *, delay_s: float = 0.0,
                     hang: bool = False, lost: bool = False, after_calls: int = 0,
                     after_s: float = 0.0, times: int | None = None) -> None:
        """Add a fault on this GPU; arguments as in a spec file's fault entry."""
        entry = {"gpu": self.index, "call": call, "delay_s": delay_s, "hang": hang, "lost": lost,
                 "after_calls": after_calls, "after_s": after_s, "error": error, "times": times}
        entry = {key: value for key, value in entry.items() if value is not None}
        spec = profiles_mod.parse_fault(entry, f"GPU {self.index} fault", self.index + 1)
        self.add_fault(spec)

    def add_fault(self, spec: FaultSpec) -> None:
        """Add a parsed fault (the backend uses this for the spec file's faults)."""
        with self._lock:
            self._faults.append(_ActiveFault(spec, self._clock.now()))

    def clear_faults(self) -> None:
        """Remove every fault; a GPU already lost stays lost."""
        with self._lock:
            self._faults.clear()

    def set_load(self, fraction: float) -> None:
        """Make the GPU draw ``fraction`` (0-1) of the way from idle to its max power."""
        with self._lock:
            self._advance()
            self._load = min(max(fraction, 0.0), 1.0)

    def state(self) -> dict:
        """A snapshot of the settings (not an NVML call; never faults)."""
        with self._lock:
            return {
                "power_limit_mw": self._power_limit_mw,
                "persistence_mode": self._persistence,
                "gpu_locked_clocks_mhz": self._gpu_locked_mhz,
                "mem_locked_clocks_mhz": self._mem_locked_mhz,
            }

    def replay(self, call: str, args: list) -> None:
        """Take back a journalled setting: a GPU keeps its settings while no daemon runs (a
        restarted daemon's simulated GPUs start where the last one's journal left them)."""
        fields = {"nvmlDeviceSetPowerManagementLimit": ("_power_limit_mw", lambda a: a[0]),
                  "nvmlDeviceSetPersistenceMode": ("_persistence", lambda a: bool(a[0])),
                  "nvmlDeviceSetGpuLockedClocks": ("_gpu_locked_mhz", lambda a: tuple(a) or None),
                  "nvmlDeviceResetGpuLockedClocks": ("_gpu_locked_mhz", lambda a: None),
                  "nvmlDeviceSetMemoryLockedClocks": ("_mem_locked_mhz", lambda a: tuple(a) or None),
                  "nvmlDeviceResetMemoryLockedClocks": ("_mem_locked_mhz", lambda a: None)}
        if call in fields:
            name, value = fields[call]
            with self._lock:
                setattr(self, name, value(args))

    def call_counts(self) -> dict[str, int]:
        """How many times each NVML function was called on this GPU (failed calls too)."""
        with self._lock:
            return dict(self._calls)

    # ----- the GpuDevice interface -----

    def name(self) -> str:
        self._enter("nvmlDeviceGetName")
        return self.profile.name

    def uuid(self) -> str:
        self._enter("nvmlDeviceGetUUID")
        return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"zeusd-sim/{self.profile.key}/{self.index}"))

    def pci_address(self) -> str:
        self._enter("nvmlDeviceGetPciInfo_v3")
        domain, bus, device = self.profile.pci_base
        slot = device + self.index
        return f"{domain:04x}:{bus + slot // 32:02x}:{slot % 32:02x}.0"

    def get_power_limit_mw(self) -> int:
        self._enter("nvmlDeviceGetPowerManagementLimit")
        with self._lock:
            return self._power_limit_mw

    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        self._enter("nvmlDeviceGetPowerManagementLimitConstraints")
        return self.profile.power_limit_constraints_mw

    def set_power_limit_mw(self, power_limit_mw: int) -> None:
        call = "nvmlDeviceSetPowerManagementLimit"
        self._enter(call)
        low, high = self.profile.power_limit_constraints_mw
        self._require(low <= power_limit_mw <= high, call)
        with self._lock:
            self._advance()
            self._power_limit_mw = power_limit_mw
            self._power_mw = min(self._power_mw, power_limit_mw)
            self._record(call, [power_limit_mw])

    def get_persistence_mode(self) -> bool:
        self._enter("nvmlDeviceGetPersistenceMode")
        with self._lock:
            return self._persistence

    def set_persistence_mode(self, enabled: bool) -> None:
        call = "nvmlDeviceSetPersistenceMode"
        self._enter(call)
        with self._lock:
            self._persistence = bool(enabled)
            self._record(call, [bool(enabled)])

    def set_gpu_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        call = "nvmlDeviceSetGpuLockedClocks"
        self._enter(call)
        self._require_clock_range(min_clock_mhz, max_clock_mhz, self.profile.graphics_clocks_mhz, call)
        with self._lock:
            self._gpu_locked_mhz = (min_clock_mhz, max_clock_mhz)
            self._record(call, [min_clock_mhz, max_clock_mhz])

    def reset_gpu_locked_clocks(self) -> None:
        call = "nvmlDeviceResetGpuLockedClocks"
        self._enter(call)
        with self._lock:
            self._gpu_locked_mhz = None
            self._record(call, [])

    def set_mem_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        call = "nvmlDeviceSetMemoryLockedClocks"
        self._enter(call)
        self._require_clock_range(min_clock_mhz, max_clock_mhz, self.profile.memory_clocks_mhz, call)
        with self._lock:
            self._mem_locked_mhz = (min_clock_mhz, max_clock_mhz)
            self._record(call, [min_clock_mhz, max_clock_mhz])

    def reset_mem_locked_clocks(self) -> None:
        call = "nvmlDeviceResetMemoryLockedClocks"
        self._enter(call)
        with self._lock:
            self._mem_locked_mhz = None
            self._record(call, [])

    def get_total_energy_mj(self) -> int:
        call = "nvmlDeviceGetTotalEnergyConsumption"
        with self._energy_lock:
            self._enter(call)
            if not self.profile.energy_counter:
                raise NvmlError(NOT_SUPPORTED, call)
            with self._lock:
                self._advance()
                return int(self._energy_mj)

    def get_power_mw(self) -> int:
        if self._instant_supported:
            try:
                self._enter("nvmlDeviceGetFieldValues")
                with self._lock:
                    self._advance()
                    return int(self._power_mw)
            except NvmlError as err:
                if err.code not in (NOT_SUPPORTED, INVALID_ARGUMENT):
                    raise
                log.warning("GPU %d: no POWER_INSTANT field (%s); using averaged power", self.index, err.text)
                self._instant_supported = False
        self._enter("nvmlDeviceGetPowerUsage")
        with self._lock:
            self._advance()
            return int(self._average_mw)

    # ----- the probe interface (the admin's tools only) -----

    def get_supported_memory_clocks_mhz(self) -> list[int]:
        self._enter("nvmlDeviceGetSupportedMemoryClocks")
        return list(self.profile.memory_clocks_mhz)

    def get_supported_graphics_clocks_mhz(self, mem_clock_mhz: int) -> list[int]:
        call = "nvmlDeviceGetSupportedGraphicsClocks"
        self._enter(call)
        if mem_clock_mhz not in self.profile.memory_clocks_mhz:
            raise NvmlError(NOT_FOUND, call)
        return list(self.profile.graphics_clocks_mhz)

    # ----- internals -----

    def _enter(self, call: str) -> None:
        """Apply latency and faults for one NVML call; raise its injected error."""
        now = self._clock.now()
        with self._lock:
            self._calls[call] += 1
            fired = [f.spec for f in self._faults if self._matches(f.spec, call) and f.fires(now)] \
                if self._faults else ()  # most GPUs have none: no list, no scan
            self._lost = self._lost or any(f.lost for f in fired)
            lost = self._lost
        if self._latency:
            self._clock.sleep(self.profile.latency_us.get(call, 0.0) / 1e6)
        if lost:
            raise NvmlError(GPU_IS_LOST, call)
        for fault in fired:
            if fault.delay_s:
                self._clock.sleep(fault.delay_s)
            if fault.hang:
                self._release.wait()
        for fault in fired:
            if fault.error is not None:
                raise NvmlError(fault.error, call)

    def _matches(self, spec: FaultSpec, call: str) -> bool:
        return spec.gpu in (None, self.index) and spec.call in ("*", call)

    @staticmethod
    def _require(ok: bool, call: str) -> None:
        if not ok:
            raise NvmlError(INVALID_ARGUMENT, call)

    def _require_clock_range(self, min_mhz: int, max_mhz: int, table: tuple[int, ...], call: str) -> None:
        self._require(min(table) <= min_mhz <= max_mhz <= max(table), call)

    def _record(self, call: str, args: list) -> None:
        """Journal a setter that succeeded; called with the lock held, after the change."""
        if self._journal is not None:
            self._journal.record(self.index, call, args)

    def _advance(self) -> None:
        """Integrate energy up to now and walk the power; called with the lock held."""
        now = self._clock.now()
        elapsed_s = now - self._updated_at
        if elapsed_s < _POWER_STEP_S:
            return
        self._energy_mj += self._power_mw * elapsed_s  # mW * s = mJ
        weight = min(elapsed_s / _AVERAGE_WINDOW_S, 1.0)
        self._average_mw += (self._power_mw - self._average_mw) * weight
        self._power_mw = self._next_power_mw()
        self._updated_at = now

    def _next_power_mw(self) -> float:
        idle = self.profile.idle_power_mw
        target = idle + self._load * (self.profile.power_limit_constraints_mw[1] - idle)
        step = self._rng.gauss(0.0, 0.01 * target)
        walked = min(max(self._power_mw + step, 0.95 * target), 1.05 * target)
        if abs(walked - target) > 0.05 * target:  # jump to a new load at once
            walked = target
        return min(walked, float(self._power_limit_mw))


def _journal_entries(path: str | None) -> list[dict]:
    """The settings an earlier daemon left in the journal (none if there is none)."""
    try:
        with open(path or "", encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed daemon
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class SimulatedBackend(BackendProbe):
    """A set of simulated GPUs built from a ``SimSpec``."""

    kind = "simulated"

    def __init__(self, spec: SimSpec, clock=MonotonicClock) -> None:
        self.spec = spec
        self._release = threading.Event()
        earlier = _journal_entries(spec.journal_path)
        self._journal = _Journal(spec.journal_path) if spec.journal_path else None
        latency = spec.latency == "fixture"
        self._gpus = [SimulatedGpu(i, p, self._journal, latency, self._release, clock)
                      for i, p in enumerate(spec.profiles)]
        for entry in earlier:
            if 0 <= entry.get("gpu", -1) < len(self._gpus):
                self._gpus[entry["gpu"]].replay(entry.get("call"), entry.get("args") or [])
        for fault in spec.faults:
            for gpu in self._gpus:
                if fault.gpu in (None, gpu.index):
                    gpu.add_fault(fault)
        log.info("Simulating %d GPU(s): %s", len(self._gpus), ", ".join(p.key for p in spec.profiles))

    @classmethod
    def from_spec(cls, spec: str, clock=MonotonicClock) -> SimulatedBackend:
        """Build from a spec string (``h200x4``) or JSON file path. Raises ValueError."""
        parsed = profiles_mod.parse_spec(spec)
        try:
            return cls(parsed, clock)
        except OSError as err:
            raise ValueError(f"cannot open the journal {parsed.journal_path}: {err.strerror}") from None

    def driver_version(self) -> str:
        return DRIVER_VERSION

    def devices(self) -> list[SimulatedGpu]:
        return list(self._gpus)

    def release_hangs(self) -> None:
        """Let every call blocked by a ``hang`` fault return (and later ones pass)."""
        self._release.set()

    def close(self) -> None:
        """Release hung calls and close the journal."""
        self.release_hangs()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
