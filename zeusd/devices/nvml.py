"""The NVML backend: real NVIDIA GPUs. The only module that imports pynvml.

pynvml comes from nvidia-ml-py when installed, else from our vendored copy
(``_vendor/README.md`` says why). Every pynvml error becomes our ``NvmlError``
with NVML's code and the NVML function's name, so nothing above this module
ever sees a pynvml exception. Each method's docstring gives the ``nvidia-smi``
command that does the same, for administrators comparing results.

Likely causes of the errors seen here: ``NO_PERMISSION`` - setters need root
or CAP_SYS_ADMIN; ``INVALID_ARGUMENT`` - a value outside the GPU's range;
``NOT_SUPPORTED`` - the GPU or driver lacks the feature (e.g. no energy
counter before Volta); ``LIBRARY_NOT_FOUND`` - no ``libnvidia-ml.so.1``
(driver not installed); ``DRIVER_NOT_LOADED`` - kernel module not loaded;
``GPU_IS_LOST`` - the GPU fell off the bus. When nvmlInit itself fails,
``diagnose.py`` looks at the machine to name the cause (its code alone often hides it).
"""

from __future__ import annotations

import logging
import threading

try:
    import pynvml
except ImportError:  # the Debian package ships its own copy
    from ._vendor import pynvml

from .errors import FUNCTION_NOT_FOUND, INVALID_ARGUMENT, NOT_SUPPORTED, NvmlError
from .probe import BackendProbe, GpuProbe

log = logging.getLogger(__name__)

# Errors meaning "this driver has no POWER_INSTANT field": use nvmlDeviceGetPowerUsage for good.
_NO_INSTANT_FIELD = frozenset({NOT_SUPPORTED, INVALID_ARGUMENT, FUNCTION_NOT_FOUND})

# nvmlValueType_t -> the member of the nvmlValue_t union that holds the sample.
_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _call(function: str, fn, *args):
    """Call pynvml ``fn``; raise its failure as our NvmlError naming ``function``."""
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        raise NvmlError(err.value, function) from err
    except pynvml.NVMLLibraryMismatchError as err:
        raise NvmlError(FUNCTION_NOT_FOUND, function) from err


class NvmlGpu(GpuProbe):
    """One GPU behind an NVML handle. NVML itself is thread-safe."""

    def __init__(self, index: int, handle) -> None:
        self.index = index
        self._handle = handle
        self._instant_power = True  # until the driver says it has no POWER_INSTANT field
        self._fallback_lock = threading.Lock()

    def name(self) -> str:
        """``nvidia-smi --query-gpu=name``."""
        return _call("nvmlDeviceGetName", pynvml.nvmlDeviceGetName, self._handle)

    def uuid(self) -> str:
        """``nvidia-smi --query-gpu=uuid``."""
        return _call("nvmlDeviceGetUUID", pynvml.nvmlDeviceGetUUID, self._handle)

    def pci_address(self) -> str:
        """``nvidia-smi --query-gpu=pci.bus_id`` (which prints an 8-digit domain, upper-case)."""
        info = _call("nvmlDeviceGetPciInfo_v3", pynvml.nvmlDeviceGetPciInfo_v3, self._handle)
        return f"{info.domain:04x}:{info.bus:02x}:{info.device:02x}.0"

    def get_power_limit_mw(self) -> int:
        """``nvidia-smi --query-gpu=power.limit`` (in W)."""
        return _call("nvmlDeviceGetPowerManagementLimit", pynvml.nvmlDeviceGetPowerManagementLimit, self._handle)

    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        """``nvidia-smi --query-gpu=power.min_limit,power.max_limit`` (in W)."""
        low, high = _call("nvmlDeviceGetPowerManagementLimitConstraints",
                          pynvml.nvmlDeviceGetPowerManagementLimitConstraints, self._handle)
        return low, high

    def set_power_limit_mw(self, power_limit_mw: int) -> None:
        """``nvidia-smi -i N -pl WATTS``. Out of range: INVALID_ARGUMENT; not root: NO_PERMISSION."""
        _call("nvmlDeviceSetPowerManagementLimit", pynvml.nvmlDeviceSetPowerManagementLimit,
              self._handle, power_limit_mw)

    def get_persistence_mode(self) -> bool:
        """``nvidia-smi --query-gpu=persistence_mode``."""
        mode = _call("nvmlDeviceGetPersistenceMode", pynvml.nvmlDeviceGetPersistenceMode, self._handle)
        return mode == pynvml.NVML_FEATURE_ENABLED

    def set_persistence_mode(self, enabled: bool) -> None:
        """``nvidia-smi -i N -pm 1`` (or ``0``)."""
        mode = pynvml.NVML_FEATURE_ENABLED if enabled else pynvml.NVML_FEATURE_DISABLED
        _call("nvmlDeviceSetPersistenceMode", pynvml.nvmlDeviceSetPersistenceMode, self._handle, mode)

    def set_gpu_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        """``nvidia-smi -i N -lgc MIN,MAX``."""
        _call("nvmlDeviceSetGpuLockedClocks", pynvml.nvmlDeviceSetGpuLockedClocks,
              self._handle, min_clock_mhz, max_clock_mhz)

    def reset_gpu_locked_clocks(self) -> None:
        """``nvidia-smi -i N -rgc``."""
        _call("nvmlDeviceResetGpuLockedClocks", pynvml.nvmlDeviceResetGpuLockedClocks, self._handle)

    def set_mem_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        """``nvidia-smi -i N -lmc MIN,MAX``."""
        _call("nvmlDeviceSetMemoryLockedClocks", pynvml.nvmlDeviceSetMemoryLockedClocks,
              self._handle, min_clock_mhz, max_clock_mhz)

    def reset_mem_locked_clocks(self) -> None:
        """``nvidia-smi -i N -rmc``."""
        _call("nvmlDeviceResetMemoryLockedClocks", pynvml.nvmlDeviceResetMemoryLockedClocks, self._handle)

    def get_total_energy_mj(self) -> int:
        """No nvidia-smi equivalent; NOT_SUPPORTED before Volta."""
        return _call("nvmlDeviceGetTotalEnergyConsumption", pynvml.nvmlDeviceGetTotalEnergyConsumption,
                     self._handle)

    def get_power_mw(self) -> int:
        """``nvidia-smi --query-gpu=power.draw.instant``, else ``power.draw.average``."""
        if self._instant_power:
            power_mw = self._read_instant_power_mw()
            if power_mw is not None:
                return power_mw
        return _call("nvmlDeviceGetPowerUsage", pynvml.nvmlDeviceGetPowerUsage, self._handle)

    def _read_instant_power_mw(self) -> int | None:
        """The POWER_INSTANT field (186), or None once the driver shows it lacks it."""
        function = "nvmlDeviceGetFieldValues"
        try:
            sample = _call(function, pynvml.nvmlDeviceGetFieldValues, self._handle,
                           [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
            code, member = sample.nvmlReturn, _VALUE_MEMBERS.get(sample.valueType)
        except NvmlError as err:
            code, member = err.code, None
            if code not in _NO_INSTANT_FIELD:
                raise
        if code == 0 and member is not None:
            return int(getattr(sample.value, member))
        if code != 0 and code not in _NO_INSTANT_FIELD:
            raise NvmlError(code, function)
        with self._fallback_lock:
            if self._instant_power:
                log.info("GPU %d has no instantaneous power field (NVML code %d); "
                            "reading averaged power with nvmlDeviceGetPowerUsage", self.index, code)
            self._instant_power = False
        return None

    # ----- the probe interface (the admin's tools only) -----

    def get_supported_memory_clocks_mhz(self) -> list[int]:
        """``nvidia-smi -i N --query-supported-clocks=mem --format=csv``."""
        return _call("nvmlDeviceGetSupportedMemoryClocks", pynvml.nvmlDeviceGetSupportedMemoryClocks, self._handle)

    def get_supported_graphics_clocks_mhz(self, mem_clock_mhz: int) -> list[int]:
        """``nvidia-smi -i N -q -d SUPPORTED_CLOCKS``. Unknown memory clock: NOT_FOUND."""
        return _call("nvmlDeviceGetSupportedGraphicsClocks", pynvml.nvmlDeviceGetSupportedGraphicsClocks,
                     self._handle, mem_clock_mhz)


class NvmlBackend(BackendProbe):
    """All GPUs NVML sees, in NVML index order. Initialises NVML once."""

    kind = "nvml"

    def __init__(self) -> None:
        """``nvmlInit``; raises NvmlError(LIBRARY_NOT_FOUND, "nvmlInit") without a driver."""
        _call("nvmlInit", pynvml.nvmlInit)
        self._open = True
        try:
            count = _call("nvmlDeviceGetCount_v2", pynvml.nvmlDeviceGetCount)
            self._gpus = [
                NvmlGpu(i, _call("nvmlDeviceGetHandleByIndex_v2", pynvml.nvmlDeviceGetHandleByIndex, i))
                for i in range(count)
            ]
        except NvmlError:
            self.close()
            raise
        log.info("NVML initialised: driver %s, %d GPU(s)", self.driver_version(), count)

    def driver_version(self) -> str:
        """``nvidia-smi --query-gpu=driver_version``."""
        return _call("nvmlSystemGetDriverVersion", pynvml.nvmlSystemGetDriverVersion)

    def library_version(self) -> str:
        """``nvidia-smi -q | grep 'NVML Version'``."""
        return _call("nvmlSystemGetNVMLVersion", pynvml.nvmlSystemGetNVMLVersion)

    def devices(self) -> list[NvmlGpu]:
        return list(self._gpus)

    def close(self) -> None:
        """``nvmlShutdown`` once; later calls do nothing."""
        if self._open:
            self._open = False
            try:
                _call("nvmlShutdown", pynvml.nvmlShutdown)
            except NvmlError as err:
                log.warning("%s", err.message)
