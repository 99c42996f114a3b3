"""zeus 0.16.0 from PyPI, unchanged, against zeusd: ZeusdClient, ZeusdNVIDIAGPU (through
zeus.device.get_gpus with ZEUSD_SOCK_PATH), ZeusdRAPLCPU and PowerStreamingClient.

Each test runs tests/compat/drive_zeus_query.py in a child process on the client's
own install and checks its results against the simulator's journal and against what
the daemon answers to raw requests.
"""

from __future__ import annotations

import json


from tests.compat.conftest import (CounterWriter, by_gpu, fake_state, rapl_raw, route_status)
from tests.support.sim import (RESET_GPU_CLOCKS, RESET_MEM_CLOCKS, SET_GPU_CLOCKS,
                               SET_MEM_CLOCKS, SET_PERSISTENCE, SET_POWER)

CLIENT = "zeus-0.16.0"
DRIVER = "drive_zeus_query.py"
GPUS = ["0", "1", "2", "3"]


def drive(compat, scenario: str, **kw) -> dict:
    out = compat.drive(DRIVER, CLIENT, scenario, **kw)
    assert out["zeus_version"] == "0.16.0", out
    return out


def zeusd_error(result: dict, operation: str) -> str:
    """The daemon's reply body inside the client's ZeusdError ('Failed to <op>: <body>')."""
    assert "error" in result, f"the client did not raise: {result}"
    error = result["error"]
    assert (error["module"], error["type"]) == ("zeus.device.exception", "ZeusdError"), error
    prefix = f"Failed to {operation}: "
    assert error["message"].startswith(prefix), error
    return error["message"][len(prefix):]


def test_discovery(compat):
    out = drive(compat, "discover")
    discover = compat.zeusd.get("/discover").json()
    assert out["gpu_ids"] == [0, 1, 2, 3]
    assert out["gpus"] == [[i, "NVIDIA H200"] for i in range(4)]
    assert out["gpus"] == [[g["id"], g["name"]] for g in discover["gpus"]]
    assert out["cpu_ids"] == [0, 1]
    assert out["cpus"] == [[0, True], [1, False]]
    assert out["dram_available"] == [True, False]
    assert out["auth_required"] is False and out["auth_error"] is None
    assert out["granted_scopes"] == []
    assert (out["can_read_gpu"], out["can_control_gpu"], out["can_read_cpu"]) == (True, True, True)
    assert out["capabilities"] == "ok"
    assert out["missing_gpu"]["error"]["type"] == "ZeusdCapabilityError"
    assert "[9]" in out["missing_gpu"]["error"]["message"]
    assert out["from_env_gpu_ids"] == [0, 1, 2, 3]  # ZeusdClient() from ZEUSD_SOCK_PATH
    assert out["endpoint"] == compat.socket_path
    assert abs(out["time_s"] - out["local_time_s"]) < 5


def test_gpu_reads(compat):
    out = drive(compat, "reads")
    power = out["power"]
    assert sorted(power["power_mw"]) == GPUS
    assert all(isinstance(v, int) and 0 < v <= 700_000 for v in power["power_mw"].values())
    assert abs(power["timestamp_ms"] - out["local_time_ms"]) < 5_000
    assert sorted(out["power_some"]) == ["1", "3"]
    assert sorted(out["energy_1"]) == GPUS
    assert all(isinstance(v, int) and v > 0 for v in out["energy_1"].values())
    assert out["energy_2"]["2"] >= out["energy_1"]["2"]  # cumulative, never decreases
    # The getters parse exactly what the daemon answers.
    limits = compat.zeusd.get("/gpu/get_power_limit").json()
    assert out["power_limit"] == {k: v["power_limit_mw"] for k, v in limits.items()}
    assert out["power_limit_2"] == {"2": limits["2"]["power_limit_mw"]}
    assert out["constraints"] == {g: [200_000, 700_000] for g in GPUS}
    assert out["constraints_1"] == {"1": [200_000, 700_000]}
    modes = compat.zeusd.get("/gpu/get_persistence_mode").json()
    assert out["persistence"] == {k: v["enabled"] for k, v in modes.items()}


def test_gpu_setters_reach_the_gpus(compat):
    mark = compat.gpus.mark()
    out = drive(compat, "writes")
    # The last request (GPU 3, block=false) is answered before it runs.
    applied = by_gpu(compat.applied(mark, timeout_s=5, count=9))
    assert applied == {
        0: [[SET_POWER, [300_000]], [SET_GPU_CLOCKS, [900, 1500]], [RESET_GPU_CLOCKS, []]],
        1: [[SET_PERSISTENCE, [False]], [SET_PERSISTENCE, [True]]],
        2: [[SET_POWER, [300_000]]],
        3: [[SET_MEM_CLOCKS, [2201, 3201]], [RESET_MEM_CLOCKS, []], [SET_POWER, [450_000]]],
    }
    # The client's getters, right after its setters, agree with the journal.
    assert out["power_limit_after_set"]["0"] == 300_000
    assert out["power_limit_after_set"]["2"] == 300_000
    assert out["persistence_after_disable"]["1"] is False
    assert out["persistence_after_enable"] == {"1": True}
    limits = compat.zeusd.get("/gpu/get_power_limit?gpu_ids=0,2,3").json()
    assert {k: v["power_limit_mw"] for k, v in limits.items()} == \
        {"0": 300_000, "2": 300_000, "3": 450_000}


def test_errors_carry_zeusd_text(compat):
    mark = compat.gpus.mark()
    out = drive(compat, "errors")
    body = json.loads(zeusd_error(out["power_out_of_range"], "set_power_limit"))
    assert list(body) == ["errors"] and list(body["errors"]) == ["0"], body
    assert body["errors"]["0"] == ("Invalid request: power_limit_mw 900000 is outside the "
                                   "valid range 200000-700000 mW of GPU 0"), body
    assert json.loads(zeusd_error(out["power_unknown_gpu"], "set_power_limit")) == \
        {"error": "GPU index 9 does not exist."}
    body = json.loads(zeusd_error(out["clocks_min_above_max"], "set_gpu_locked_clocks"))
    assert body["errors"]["1"] == "Invalid request: min_clock_mhz 1500 is above max_clock_mhz 900", body
    assert json.loads(zeusd_error(out["read_unknown_gpu"], "get_gpu_power")) == \
        {"error": "GPU 7 not found"}
    assert json.loads(zeusd_error(out["energy_unknown_gpu"], "get_gpu_energy")) == \
        {"error": "GPU 7 not found"}
    assert compat.applied(mark) == []


def test_cpu_reads_and_zeusd_rapl_cpu(compat):
    rapl = compat.rapl
    cpu0, dram0, cpu1 = (rapl_raw(rapl, 0) + 6_654_321, rapl_raw(rapl, 0, dram=True) + 734_567,
                         rapl_raw(rapl, 1) + 1_000_000)
    rapl.set(0, cpu_uj=cpu0, dram_uj=dram0)
    rapl.set(1, cpu_uj=cpu1)
    out = drive(compat, "cpu")
    assert out["energy"] == {"0": [cpu0, dram0], "1": [cpu1, None]}
    assert out["energy_cpu_only"] == {"1": [cpu1, None]}
    assert sorted(out["power"]) == ["0", "1"] and out["power"]["1"][1] is None
    assert out["rapl"] == {"0": {"cpu_mj": cpu0 / 1000, "dram_mj": dram0 / 1000, "dram": True},
                           "1": {"cpu_mj": cpu1 / 1000, "dram_mj": None, "dram": False}}
    assert out["rapl_unknown_cpu"]["error"]["type"] == "ZeusdCapabilityError"
    assert json.loads(zeusd_error(out["energy_unknown_cpu"], "get_cpu_energy")) == \
        {"error": "CPU 5 not found"}


def test_cpu_power(compat):
    with CounterWriter(compat.rapl):
        out = drive(compat, "cpu_power")
    cpu0, dram0 = out["power"]["0"]
    assert isinstance(cpu0, int) and cpu0 > 0 and isinstance(dram0, int) and dram0 > 0, out
    assert out["power"]["1"] == [0, None]


def test_zeusd_nvidia_gpu_through_get_gpus(compat):
    mark = compat.gpus.mark()
    out = drive(compat, "gpu_class")
    assert out["classes"] == ["ZeusdNVIDIAGPU"] and out["count"] == 4
    assert out["nonblocking"] is True
    assert out["persistence_2"] is False  # read back through zeusd after the set
    body = json.loads(zeusd_error(out["power_out_of_range"], "set_power_limit"))
    assert body["errors"]["2"] == ("Invalid request: power_limit_mw 150000 is outside the "
                                   "valid range 200000-700000 mW of GPU 2"), body
    applied = by_gpu(compat.applied(mark, timeout_s=5, count=14))
    assert applied == {
        1: [[SET_POWER, [520_000]]],
        2: [[SET_POWER, [300_000]], [SET_PERSISTENCE, [False]], [SET_PERSISTENCE, [True]],
            [SET_GPU_CLOCKS, [600, 1200]], [RESET_GPU_CLOCKS, []],
            [SET_MEM_CLOCKS, [2201, 2201]], [RESET_MEM_CLOCKS, []]],
        3: [[SET_POWER, [410_000]], [SET_PERSISTENCE, [False]],
            [SET_GPU_CLOCKS, [345, 1980]], [RESET_GPU_CLOCKS, []],
            [SET_MEM_CLOCKS, [3201, 3201]], [RESET_MEM_CLOCKS, []]],
    }


def test_zeusd_nvidia_gpu_reset_power_limit(compat):
    """The client reads the default (700 W) and current limit from its own driver, whose state
    here shows what zeusd set (300 W on GPU 2), and asks zeusd for the default."""
    mark = compat.gpus.mark()
    drive(compat, "gpu_reset", gpu=2, nvml_state=fake_state({2: 300_000}))
    assert compat.applied(mark) == [(2, SET_POWER, [700_000])]


def test_power_streaming_client(compat):
    for path in ("/gpu/stream_power", "/cpu/stream_power"):
        assert route_status(compat.socket_path, path) == 200, path
    out = drive(compat, "stream", wait_s=5.0)
    readings = out["readings"]
    assert readings is not None, out["_stderr"][-2000:]
    assert sorted(readings["gpu_power_w"]) == GPUS
    assert all(0 < w <= 700 for w in readings["gpu_power_w"].values())
    assert sorted(readings["cpu_power_w"]) == ["0", "1"]
    assert readings["cpu_power_w"]["1"][1] is None
    assert abs(readings["timestamp_s"] - out["local_time_s"]) < 10
