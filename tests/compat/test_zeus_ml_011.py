"""zeus-ml 0.11.0.post1 from PyPI, unchanged, against zeusd: the legacy path-style API.

zeus-ml's ZeusdNVIDIAGPU (picked by zeus.device.get_gpus() when ZEUSD_SOCK_PATH is
set) sends ``POST /gpu/{index}/<op>`` with a JSON body and raises ZeusdError with
the reply's text; its ZeusdRAPLCPU uses ``/cpu/{index}/supports_dram_energy`` and
``/cpu/{index}/get_index_energy``. Driven by tests/compat/drive_zeus_ml.py.
"""

from __future__ import annotations

from tests.compat.conftest import by_gpu, rapl_raw
from tests.support.sim import (RESET_GPU_CLOCKS, RESET_MEM_CLOCKS, SET_GPU_CLOCKS,
                               SET_MEM_CLOCKS, SET_PERSISTENCE, SET_POWER)

CLIENT = "zeus-ml-0.11.0.post1"
DRIVER = "drive_zeus_ml.py"


def drive(compat, scenario: str, **kw) -> dict:
    out = compat.drive(DRIVER, CLIENT, scenario, **kw)
    assert out["zeus_version"] == "0.11.0.post1", out
    return out


def zeusd_error(result: dict, what: str) -> str:
    """zeusd's text/plain reply inside the client's ZeusdError ('Failed to <what>: <text>')."""
    assert "error" in result, f"the client did not raise: {result}"
    error = result["error"]
    assert (error["module"], error["type"]) == ("zeus.device.exception", "ZeusdError"), error
    prefix = f"Failed to {what}: "
    assert error["message"].startswith(prefix), error
    return error["message"][len(prefix):]


def test_zeusd_nvidia_gpu_setters(compat):
    mark = compat.gpus.mark()
    out = drive(compat, "gpu_class")
    assert out["classes"] == ["ZeusdNVIDIAGPU"] and out["count"] == 4
    assert out["sock_path"] == compat.socket_path
    assert out["nonblocking"] is True
    # The last call, setPersistenceMode(True), is non-blocking by default in zeus-ml.
    applied = by_gpu(compat.applied(mark, timeout_s=5, count=9))
    assert applied == {
        1: [[SET_POWER, [250_000]],
            [SET_POWER, [700_000]],  # resetPowerManagementLimit: the driver's default limit
            [SET_PERSISTENCE, [False]],
            [SET_GPU_CLOCKS, [600, 1200]], [RESET_GPU_CLOCKS, []],
            [SET_MEM_CLOCKS, [2201, 3201]], [RESET_MEM_CLOCKS, []],
            [SET_PERSISTENCE, [True]]],
        3: [[SET_POWER, [420_000]]],
    }
    limits = compat.zeusd.get("/gpu/get_power_limit?gpu_ids=1,3").json()
    assert limits == {"1": {"power_limit_mw": 700_000}, "3": {"power_limit_mw": 420_000}}


def test_errors_surface_as_zeusd_error(compat):
    mark = compat.gpus.mark()
    # The client's local driver has 6 GPUs; zeusd serves 4, so GPU 5 is unknown to zeusd.
    out = drive(compat, "errors", missing_gpu=5, env={"FAKE_NVML_GPUS": "6"})
    text = zeusd_error(out["power_out_of_range"], "set power management limit")
    assert text == ("Invalid request: power_limit_mw 100000 is outside the valid range "
                    "200000-700000 mW of GPU 1"), text  # text/plain, not JSON
    text = zeusd_error(out["clocks_min_above_max"], "set GPU locked clocks")
    assert text == "Invalid request: min_clock_mhz 1500 is above max_clock_mhz 900", text
    text = zeusd_error(out["mem_clocks_out_of_range"], "set memory locked clocks")
    assert text.startswith("Invalid request: memory clocks 100-200 MHz are outside the "
                           "supported range "), text
    assert zeusd_error(out["unknown_gpu"], "set power management limit") == \
        "GPU index 5 does not exist."
    assert zeusd_error(out["unknown_gpu_clocks"], "reset GPU locked clocks") == \
        "GPU index 5 does not exist."
    assert zeusd_error(out["unknown_gpu_nonblocking"], "set persistence mode") == \
        "GPU index 5 does not exist."
    assert compat.applied(mark, timeout_s=0.3, count=1) == []


def test_zeusd_rapl_cpu(compat):
    rapl = compat.rapl
    cpu0, dram0, cpu1 = (rapl_raw(rapl, 0) + 3_000_000, rapl_raw(rapl, 0, dram=True) + 250_000,
                         rapl_raw(rapl, 1) + 42_000)
    rapl.set(0, cpu_uj=cpu0, dram_uj=dram0)
    rapl.set(1, cpu_uj=cpu1)
    out = drive(compat, "cpu")
    assert out["0"] == {"cpu_mj": cpu0 / 1000, "dram_mj": dram0 / 1000, "dram": True}
    assert out["1"] == {"cpu_mj": cpu1 / 1000, "dram_mj": None, "dram": False}
    error = out["unknown_cpu"]["error"]
    assert (error["module"], error["type"]) == ("zeus.device.exception", "ZeusdError"), error
    assert error["message"].startswith("Failed to get whether DRAM energy is supported: ")
    assert "5" in error["message"]
