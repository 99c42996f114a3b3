"""Drive a released zeus 0.15/0.16 client (query-style API) against zeusd; print one JSON line.

Runs as ``python -S drive_zeus_query.py '<json request>'`` with only the client's
``pip --target`` directory on PYTHONPATH (see conftest.py). The request names a
``scenario`` and the daemon's ``socket``. Standalone on purpose: nothing from the
zeusd repository is importable here.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
import warnings

REQUEST = json.loads(sys.argv[1])
SOCKET = REQUEST["socket"]  # None when the daemon listens on TCP (REQUEST["host_port"])

import zeus
from zeus.utils.zeusd import ZeusdClient, ZeusdConfig, require_capabilities

from driver_common import attempt, fail  # noqa: E402,F401 (next to this script)

VERSION = zeus.__version__




def keys(mapping: dict) -> dict:
    """JSON keeps string keys only: record the client's int keys explicitly."""
    assert all(isinstance(k, int) for k in mapping), mapping
    return {str(k): v for k, v in mapping.items()}


def client() -> ZeusdClient:
    return ZeusdClient(ZeusdConfig.uds(socket_path=SOCKET))


def require_fake_nvml() -> None:
    import pynvml

    pynvml.nvmlInit()
    version = pynvml.nvmlSystemGetDriverVersion()
    if not str(version).endswith("-fake"):
        raise SystemExit(f"refusing to run against a real NVIDIA driver ({version})")


def discover() -> dict:
    c = client()
    out = {
        "version": VERSION,
        "gpu_ids": c.gpu_ids,
        "cpu_ids": c.cpu_ids,
        "dram_available": c.dram_available,
        "auth_required": c.auth_required,
        "auth_error": c.auth_error,
        "granted_scopes": sorted(c.granted_scopes),
        "can_read_gpu": c.can_read_gpu,
        "can_control_gpu": c.can_control_gpu,
        "can_read_cpu": c.can_read_cpu,
        "endpoint": c.endpoint,
        "time_s": c.get_time(),
        "local_time_s": time.time(),
    }
    if hasattr(c, "gpus"):  # 0.16+
        out["gpus"] = [[g.id, g.name] for g in c.gpus]
        out["cpus"] = [[p.id, p.dram_available] for p in c.cpus]
    require_capabilities(c, read_gpu=True, control_gpu=True, read_cpu=True,
                         gpu_ids=c.gpu_ids, cpu_ids=c.cpu_ids)
    out["capabilities"] = "ok"
    out["missing_gpu"] = attempt(require_capabilities, c, gpu_ids=[0, 9])
    # The environment variable the documentation tells users to set.
    os.environ["ZEUSD_SOCK_PATH"] = SOCKET
    out["from_env_gpu_ids"] = ZeusdClient().gpu_ids
    return out


def reads() -> dict:
    c = client()
    all_power = c.get_gpu_power()
    some_power = c.get_gpu_power([1, 3])
    energy_1 = c.get_gpu_energy([0, 1, 2, 3])
    time.sleep(0.1)
    energy_2 = c.get_gpu_energy([2])
    out = {
        "power": {"timestamp_ms": all_power.timestamp_ms, "power_mw": keys(all_power.power_mw)},
        "power_some": keys(some_power.power_mw),
        "energy_1": keys(energy_1),
        "energy_2": keys(energy_2),
        "local_time_ms": int(time.time() * 1000),
    }
    if hasattr(c, "get_power_limit"):  # 0.16+
        out["power_limit"] = keys(c.get_power_limit())
        out["power_limit_2"] = keys(c.get_power_limit([2]))
        out["constraints"] = keys({k: list(v) for k, v in c.get_power_limit_constraints().items()})
        out["constraints_1"] = keys({k: list(v) for k, v in
                                     c.get_power_limit_constraints([1]).items()})
        out["persistence"] = keys(c.get_persistence_mode())
    return out


def writes() -> dict:
    """Every setter of ZeusdClient, with the getters (where the client has them) after each."""
    c = client()
    has_getters = hasattr(c, "get_power_limit")
    out: dict = {}
    c.set_power_limit([0, 2], 300_000)
    if has_getters:
        out["power_limit_after_set"] = keys(c.get_power_limit())
    c.set_persistence_mode([1], False)
    if has_getters:
        out["persistence_after_disable"] = keys(c.get_persistence_mode())
    c.set_persistence_mode([1], True)
    if has_getters:
        out["persistence_after_enable"] = keys(c.get_persistence_mode([1]))
    c.set_gpu_locked_clocks([0], 900, 1500)
    c.reset_gpu_locked_clocks([0])
    c.set_mem_locked_clocks([3], 2201, 3201)
    c.reset_mem_locked_clocks([3])
    c.set_power_limit([3], 450_000, block=False)
    out["done"] = True
    return out


def errors() -> dict:
    c = client()
    return {
        "power_out_of_range": attempt(c.set_power_limit, [0], 900_000),
        "power_unknown_gpu": attempt(c.set_power_limit, [9], 300_000),
        "clocks_min_above_max": attempt(c.set_gpu_locked_clocks, [1], 1500, 900),
        "read_unknown_gpu": attempt(c.get_gpu_power, [7]),
        "energy_unknown_gpu": attempt(c.get_gpu_energy, [7]),
    }


def cpu() -> dict:
    c = client()
    energy = c.get_cpu_energy([0, 1]) if VERSION.startswith("0.15") else c.get_cpu_energy()
    cpu_only = c.get_cpu_energy([1], cpu=True, dram=False)
    power = c.get_cpu_power([0, 1]) if VERSION.startswith("0.15") else c.get_cpu_power()
    out = {
        "energy": keys({k: [v.cpu_energy_uj, v.dram_energy_uj] for k, v in energy.items()}),
        "energy_cpu_only": keys({k: [v.cpu_energy_uj, v.dram_energy_uj]
                                 for k, v in cpu_only.items()}),
        "power": keys({k: [v.cpu_mw, v.dram_mw] for k, v in power.power_mw.items()}),
        "power_timestamp_ms": power.timestamp_ms,
    }
    from zeus.device.cpu.rapl import ZeusdRAPLCPU

    rapl = {}
    for index in c.cpu_ids:
        dev = ZeusdRAPLCPU(index, c)
        measurement = dev.get_total_energy_consumption()
        rapl[str(index)] = {"cpu_mj": measurement.cpu_mj, "dram_mj": measurement.dram_mj,
                            "dram": dev.supports_get_dram_energy_consumption()}
    out["rapl"] = rapl
    out["rapl_unknown_cpu"] = attempt(ZeusdRAPLCPU, 5, c)
    out["energy_unknown_cpu"] = attempt(c.get_cpu_energy, [5])
    return out


def cpu_power() -> dict:
    c = client()
    power = c.get_cpu_power([0, 1])
    return {"power": keys({k: [v.cpu_mw, v.dram_mw] for k, v in power.power_mw.items()})}


def gpu_class() -> dict:
    """zeus.device.get_gpus() with ZEUSD_SOCK_PATH set: the documented way to use zeusd."""
    require_fake_nvml()
    os.environ["ZEUSD_SOCK_PATH"] = SOCKET
    from zeus.device import get_gpus
    from zeus.device.exception import ZeusdError

    gpus = get_gpus()
    out: dict = {"classes": sorted({type(g).__name__ for g in gpus.gpus}),
                 "count": len(gpus.gpus)}
    two, three = gpus.gpus[2], gpus.gpus[3]
    out["nonblocking"] = two.supports_nonblocking_setters
    # Snake-case API on GPU 2.
    two.set_power_management_limit(300_000)
    two.set_persistence_mode(False)
    out["persistence_2"] = two.get_persistence_mode() if hasattr(two, "get_persistence_mode") else None
    two.set_persistence_mode(True, block=True)
    two.set_gpu_locked_clocks(600, 1200)
    two.reset_gpu_locked_clocks()
    two.set_memory_locked_clocks(2201, 2201)
    two.reset_memory_locked_clocks()
    # The deprecated camelCase names that older user code still calls, on GPU 3.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        three.setPowerManagementLimit(410_000)
        three.setPersistenceMode(False)
        three.setGpuLockedClocks(345, 1980)
        three.resetGpuLockedClocks()
        three.setMemoryLockedClocks(3201, 3201)
        three.resetMemoryLockedClocks()
    # The GPUs-level API (index into the visible GPUs) and a non-blocking set.
    gpus.set_power_management_limit(1, 520_000, block=False)
    out["power_out_of_range"] = attempt(two.set_power_management_limit, 150_000)
    out["zeusd_error"] = [ZeusdError.__module__, ZeusdError.__name__]
    return out


def gpu_reset() -> dict:
    """reset_power_management_limit reads the default and current limit from the local driver."""
    require_fake_nvml()
    os.environ["ZEUSD_SOCK_PATH"] = SOCKET
    from zeus.device import get_gpus

    gpus = get_gpus()
    gpus.gpus[REQUEST["gpu"]].reset_power_management_limit()
    return {"done": True}


def auth() -> dict:
    """ZeusdClient() from ZEUSD_HOST_PORT and ZEUSD_TOKEN (TCP), once per token in the request."""
    os.environ.pop("ZEUSD_SOCK_PATH", None)
    os.environ["ZEUSD_HOST_PORT"] = REQUEST["host_port"]
    out = {}
    for name, token in REQUEST["tokens"].items():
        if token is None:
            os.environ.pop("ZEUSD_TOKEN", None)
        else:
            os.environ["ZEUSD_TOKEN"] = token
        c = ZeusdClient()
        out[name] = {
            "auth_required": c.auth_required,
            "auth_error": c.auth_error,
            "granted_scopes": sorted(c.granted_scopes),
            "can": [c.can_read_gpu, c.can_control_gpu, c.can_read_cpu],
            "require_control": attempt(require_capabilities, c, control_gpu=True),
            "power": attempt(lambda c=c: keys(c.get_gpu_power([0]).power_mw)),
            "cpu_energy": attempt(lambda c=c: sorted(c.get_cpu_energy([0]))),
            "set": attempt(c.set_power_limit, [0], REQUEST["power_limit_mw"]),
        }
    return out


def stream() -> dict:
    """PowerStreamingClient (SSE) for GPUs and CPUs until every device has a reading."""
    # zeus/monitor/__init__.py imports numpy/sklearn for other monitors; power_streaming
    # itself needs httpx only, so load it without running the package __init__.
    import zeus as zeus_pkg

    monitor = types.ModuleType("zeus.monitor")
    monitor.__path__ = [os.path.join(os.path.dirname(zeus_pkg.__file__), "monitor")]
    sys.modules["zeus.monitor"] = monitor
    from zeus.monitor.power_streaming import PowerStreamingClient

    streaming = PowerStreamingClient(servers=[ZeusdConfig.uds(socket_path=SOCKET)],
                                     reconnect_delay_s=0.2)
    deadline = time.monotonic() + REQUEST.get("wait_s", 5.0)
    readings = {}
    try:
        while time.monotonic() < deadline:
            readings = streaming.get_power().get(SOCKET)
            if readings and len(readings.gpu_power_w) == 4 and len(readings.cpu_power_w) == 2:
                break
            time.sleep(0.05)
    finally:
        streaming.stop()
    if not readings:
        return {"readings": None}
    return {"readings": {
        "timestamp_s": readings.timestamp_s,
        "gpu_power_w": keys(readings.gpu_power_w),
        "cpu_power_w": keys({k: [v.cpu_w, v.dram_w] for k, v in readings.cpu_power_w.items()}),
    }, "local_time_s": time.time()}


def reads_of_all() -> dict:
    """Every read of "all GPUs" the client has (0.16: five; 0.15: power and energy by id)."""
    c = client()
    out = {"gpu_ids": c.gpu_ids, "power": keys(c.get_gpu_power().power_mw)}
    if hasattr(c, "get_power_limit"):
        out["power_limit"] = keys(c.get_power_limit())
        out["constraints"] = keys({k: list(v) for k, v in c.get_power_limit_constraints().items()})
        out["persistence"] = keys(c.get_persistence_mode())
    return out


SCENARIOS = {f.__name__: f for f in (discover, reads, writes, errors, cpu, cpu_power, gpu_class,
                                     gpu_reset, auth, stream, reads_of_all)}

if __name__ == "__main__":
    result = SCENARIOS[REQUEST["scenario"]]()
    result["zeus_version"] = VERSION
    result["zeus_file"] = zeus.__file__
    print(json.dumps(result))
