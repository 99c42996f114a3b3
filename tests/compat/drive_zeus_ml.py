"""Drive the released zeus-ml 0.11 client (legacy path-style API) against zeusd; print one JSON line.

Runs as ``python -S drive_zeus_ml.py '<json request>'`` with only the client's
``pip --target`` directory on PYTHONPATH (see conftest.py). zeus-ml's
``ZeusdNVIDIAGPU`` gets its NVML handle from the local driver (the fake
libnvidia-ml.so.1 here) and sends every setter to zeusd as
``POST /gpu/{index}/<op>`` with a JSON body. Standalone on purpose.
"""

from __future__ import annotations

import json
import os
import sys

REQUEST = json.loads(sys.argv[1])
SOCKET = REQUEST["socket"]

import pynvml
import zeus

from driver_common import attempt, fail  # noqa: E402,F401 (next to this script)

VERSION = zeus.__version__




def require_fake_nvml() -> None:
    pynvml.nvmlInit()
    version = pynvml.nvmlSystemGetDriverVersion()
    if not str(version).endswith("-fake"):
        raise SystemExit(f"refusing to run against a real NVIDIA driver ({version})")


def gpu_class() -> dict:
    """zeus.device.get_gpus() with ZEUSD_SOCK_PATH set, then every zeusd-backed setter."""
    require_fake_nvml()
    os.environ["ZEUSD_SOCK_PATH"] = SOCKET
    from zeus.device import get_gpus

    gpus = get_gpus()
    out: dict = {"classes": sorted({type(g).__name__ for g in gpus.gpus}),
                 "count": len(gpus.gpus)}
    one = gpus.gpus[1]
    out["nonblocking"] = one.supports_nonblocking_setters
    out["sock_path"] = one.zeusd_sock_path
    out["name"] = one.getName()
    one.setPowerManagementLimit(250_000)  # block=True by default
    one.resetPowerManagementLimit()  # the local driver's default limit, sent to zeusd
    one.setPersistenceMode(False, block=True)
    one.setGpuLockedClocks(600, 1200)
    one.resetGpuLockedClocks()
    one.setMemoryLockedClocks(2201, 3201)
    one.resetMemoryLockedClocks()
    one.setPersistenceMode(True)  # block=False by default: answered before it runs
    # The GPUs-level API (index into the visible GPUs; it has no block argument).
    gpus.setPowerManagementLimit(3, 420_000)
    return out


def errors() -> dict:
    """Out-of-range values, and a GPU the local driver has but zeusd does not serve."""
    require_fake_nvml()
    from zeus.device.gpu.nvidia import ZeusdNVIDIAGPU

    gpu = ZeusdNVIDIAGPU(1, SOCKET)
    extra = ZeusdNVIDIAGPU(REQUEST["missing_gpu"], SOCKET)
    return {
        "power_out_of_range": attempt(gpu.setPowerManagementLimit, 100_000),
        "clocks_min_above_max": attempt(gpu.setGpuLockedClocks, 1500, 900),
        "mem_clocks_out_of_range": attempt(gpu.setMemoryLockedClocks, 100, 200),
        "unknown_gpu": attempt(extra.setPowerManagementLimit, 300_000),
        "unknown_gpu_clocks": attempt(extra.resetGpuLockedClocks),
        "unknown_gpu_nonblocking": attempt(extra.setPersistenceMode, True, block=False),
    }


def cpu() -> dict:
    from zeus.device.cpu.rapl import ZeusdRAPLCPU

    out = {}
    for index in (0, 1):
        dev = ZeusdRAPLCPU(index, SOCKET)
        measurement = dev.getTotalEnergyConsumption()
        out[str(index)] = {"cpu_mj": measurement.cpu_mj, "dram_mj": measurement.dram_mj,
                           "dram": dev.supportsGetDramEnergyConsumption()}
    out["unknown_cpu"] = attempt(ZeusdRAPLCPU, 5, SOCKET)
    return out


SCENARIOS = {f.__name__: f for f in (gpu_class, errors, cpu)}

if __name__ == "__main__":
    result = SCENARIOS[REQUEST["scenario"]]()
    result["zeus_version"] = VERSION
    result["zeus_file"] = zeus.__file__
    print(json.dumps(result))
