"""`zeusd doctor`'s GPU checks: the library, each GPU's settings, and (asked for) a
set-to-the-current-value round trip per setter. Never a different value: a write check
must leave every GPU exactly as it found it."""

from __future__ import annotations

from ..devices.diagnose import diagnose_init_failure
from ..devices.errors import ERROR_TEXT, NO_PERMISSION, NOT_SUPPORTED, NvmlError
from ..devices.probe import open_probe
from .report import INFO, NOT_CHECKED, OK, PROBLEM, Check

WRITE_CHECK_HINT = "not checked (--write-check writes each GPU's current value back)"
CLOCKS_NOT_CHECKED = ("locked clocks: not checked (NVML cannot read a locked clock back, so "
                      "no same-value write exists)")


def open_gpus(kind: str, spec: str | None, dev_root: str, proc_root: str):
    """(Check, backend or None)."""
    try:
        backend = open_probe(kind, spec)
    except NvmlError as exc:
        d = diagnose_init_failure(exc, dev_root=dev_root, proc_root=proc_root)
        return Check("gpu library", PROBLEM, f"{exc.function} failed ({exc.text}); likely "
                     f"cause: {d.likely}", d.fix, {"cause": d.cause, "code": exc.code}), None
    except ValueError as exc:
        return Check("gpu library", PROBLEM, str(exc), "fix the --gpu-backend/--simulated-gpus "
                     "arguments"), None
    try:
        versions = {"backend": kind, "driver": backend.driver_version(),
                    "nvml": backend.library_version(), "gpus": len(backend.devices())}
    except NvmlError as exc:
        backend.close()
        return Check("gpu library", PROBLEM, exc.message, "run `nvidia-smi` and check "
                     "`dmesg | grep NVRM`"), None
    detail = (f"{kind}: driver {versions['driver']}, NVML {versions['nvml'] or 'n/a'}, "
              f"{versions['gpus']} GPU(s)")
    return Check("gpu library", OK, detail, data=versions), backend


def gpu_check(gpu, write_check: bool) -> Check:
    """One GPU: identity, limits, settings, and which setters work."""
    name = f"gpu {gpu.index}"
    try:
        data = _settings(gpu)
    except NvmlError as exc:
        return Check(name, PROBLEM, f"reading it failed: {exc.message}",
                     "check `nvidia-smi -i N -q`; a lost GPU needs a reset or reboot",
                     {"code": exc.code})
    data["setters"] = _setters(gpu, data) if write_check else {}
    failed = {k: v for k, v in data["setters"].items() if v not in ("ok", "not supported")}
    low, high = data["power_limit_constraints_mw"]
    detail = (f"{data['name']} at {data['pci_address']}: power limit "
              f"{data['power_limit_mw'] / 1000:g} W (allowed {low / 1000:g}-{high / 1000:g} W), "
              f"persistence mode {'on' if data['persistence_mode'] else 'off'}, draw "
              f"{data['power_mw'] / 1000:g} W, energy counter "
              f"{'yes' if data['energy_counter'] else 'no'}; setters: "
              + (", ".join(f"{k} {v}" for k, v in data["setters"].items()) if write_check
                 else WRITE_CHECK_HINT) + f"; {CLOCKS_NOT_CHECKED}")
    if failed:
        return Check(name, PROBLEM, detail, _setter_fix(failed), data)
    return Check(name, OK, detail, data=data)


def _settings(gpu) -> dict:
    info = gpu.info()
    return {"name": info.name, "uuid": info.uuid, "pci_address": info.pci_address,
            "power_limit_mw": gpu.get_power_limit_mw(),
            "power_limit_constraints_mw": list(gpu.get_power_limit_constraints_mw()),
            "persistence_mode": gpu.get_persistence_mode(), "power_mw": gpu.get_power_mw(),
            "energy_counter": info.cumulative_energy_available,
            "supported_memory_clocks_mhz": _or_none(gpu.get_supported_memory_clocks_mhz)}


def _or_none(read):
    """A read some GPUs do not support (NOT_SUPPORTED): None instead of a failed check."""
    try:
        return read()
    except NvmlError as exc:
        if exc.code != NOT_SUPPORTED:
            raise
        return None


def _setters(gpu, data: dict) -> dict[str, str]:
    """Write each readable setting's current value back and read it again."""
    return {
        "power limit": _round_trip(gpu.set_power_limit_mw, gpu.get_power_limit_mw,
                                   data["power_limit_mw"]),
        "persistence mode": _round_trip(gpu.set_persistence_mode, gpu.get_persistence_mode,
                                        data["persistence_mode"]),
    }


def _round_trip(setter, getter, current) -> str:
    try:
        setter(current)
        after = getter()
    except NvmlError as exc:
        return "not supported" if exc.code == NOT_SUPPORTED else f"failed: {exc.message}"
    return "ok" if after == current else f"failed: read back {after!r}, wrote {current!r}"


def _setter_fix(failed: dict[str, str]) -> str:
    if any(ERROR_TEXT[NO_PERMISSION] in result for result in failed.values()):
        return ("run the check (and zeusd) as root with CAP_SYS_ADMIN; the packaged "
                "zeusd.service keeps it in CapabilityBoundingSet=")
    return "compare with `nvidia-smi -i N -pl <current W>`; `dmesg | grep NVRM` shows why"


def persistence_check(gpu_checks: list[Check], kind: str, persistenced: bool) -> Check:
    modes = [c.data.get("persistence_mode") for c in gpu_checks if "persistence_mode" in c.data]
    where = "running" if persistenced else "not running"
    if kind != "nvml" or not modes:
        return Check("persistence", NOT_CHECKED if not modes else INFO,
                     f"nvidia-persistenced {where}; no NVML GPUs to check")
    if all(modes) or persistenced:
        return Check("persistence", OK, f"persistence mode on {sum(modes)}/{len(modes)} "
                     f"GPU(s), nvidia-persistenced {where}", data={"persistenced": persistenced})
    return Check("persistence", INFO, f"persistence mode off on {modes.count(False)} GPU(s) "
                 "and nvidia-persistenced not running: the driver unloads GPU state between "
                 "clients, so each start of zeusd is slower",
                 "optional: `systemctl enable --now nvidia-persistenced`",
                 {"persistenced": persistenced})
