"""zeus 0.15.1 from PyPI, unchanged, against zeusd.

0.15's ZeusdClient reads the flat ``/discover`` fields (``gpu_ids``, ``cpu_ids``,
``dram_available``) with ``.get(..., [])`` defaults, so a daemon that dropped them
would look like a machine without devices rather than fail: the device lists are
checked exactly. Its PowerStreamingClient expects whole-snapshot SSE events, which
only a query flag it never sends would give it, so streaming is not exercised here.
"""

from __future__ import annotations

from tests.compat.conftest import by_gpu, rapl_raw
from tests.support.sim import (RESET_GPU_CLOCKS, RESET_MEM_CLOCKS, SET_GPU_CLOCKS,
                               SET_MEM_CLOCKS, SET_PERSISTENCE, SET_POWER)

CLIENT = "zeus-0.15.1"
DRIVER = "drive_zeus_query.py"


def drive(compat, scenario: str, **kw) -> dict:
    out = compat.drive(DRIVER, CLIENT, scenario, **kw)
    assert out["zeus_version"] == "0.15.1", out
    return out


def test_flat_discovery(compat):
    out = drive(compat, "discover")
    assert out["gpu_ids"] == [0, 1, 2, 3]
    assert out["cpu_ids"] == [0, 1]
    assert out["dram_available"] == [True, False]
    assert out["auth_required"] is False and out["auth_error"] is None
    assert (out["can_read_gpu"], out["can_control_gpu"], out["can_read_cpu"]) == (True, True, True)
    assert out["from_env_gpu_ids"] == [0, 1, 2, 3]


def test_reads_and_setters(compat):
    out = drive(compat, "reads")
    assert sorted(out["power"]["power_mw"]) == ["0", "1", "2", "3"]
    assert sorted(out["energy_1"]) == ["0", "1", "2", "3"]
    mark = compat.gpus.mark()
    drive(compat, "writes")
    assert by_gpu(compat.applied(mark, timeout_s=5, count=9)) == {
        0: [[SET_POWER, [300_000]], [SET_GPU_CLOCKS, [900, 1500]], [RESET_GPU_CLOCKS, []]],
        1: [[SET_PERSISTENCE, [False]], [SET_PERSISTENCE, [True]]],
        2: [[SET_POWER, [300_000]]],
        3: [[SET_MEM_CLOCKS, [2201, 3201]], [RESET_MEM_CLOCKS, []], [SET_POWER, [450_000]]],
    }


def test_cpu(compat):
    rapl = compat.rapl
    cpu0, dram0 = rapl_raw(rapl, 0) + 1_500_000, rapl_raw(rapl, 0, dram=True) + 20_000
    rapl.set(0, cpu_uj=cpu0, dram_uj=dram0)
    cpu1 = rapl_raw(rapl, 1)
    out = drive(compat, "cpu")
    assert out["energy"] == {"0": [cpu0, dram0], "1": [cpu1, None]}
    assert out["rapl"]["0"] == {"cpu_mj": cpu0 / 1000, "dram_mj": dram0 / 1000, "dram": True}
    assert out["rapl"]["1"]["dram"] is False
