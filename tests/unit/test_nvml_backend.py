"""NvmlBackend end to end against the fake libnvidia-ml.so.1 (tests/fake_nvml).

The library is loaded in child processes: LD_LIBRARY_PATH must be set before
the process starts, each test gets a fresh driver state, and the pytest process
never loads any libnvidia-ml (on a GPU machine that would be the real one).
Every child first checks that the driver it got is the fake before it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zeusd.devices import errors, nvml
from zeusd.devices.errors import NvmlError

REPO = Path(__file__).resolve().parents[2]
FAKE_SRC = REPO / "tests" / "fake_nvml" / "fake_nvml.c"

PRELUDE = """
import json, sys
from zeusd.devices.errors import NvmlError
from zeusd.devices.nvml import NvmlBackend, pynvml

def err(fn, *args):
    try:
        fn(*args)
    except NvmlError as e:
        return [e.code, e.function, e.message]
    return None

backend = NvmlBackend()
assert backend.driver_version().endswith("-fake"), "refusing to run against a real driver"
gpus = backend.devices()
out = {}
"""


@pytest.fixture(scope="session")
def fake_lib_dir(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so the fake libnvidia-ml.so.1 cannot be built")
    out = tmp_path_factory.mktemp("fake-nvml")
    subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    "-Wl,-soname,libnvidia-ml.so.1", "-o", str(out / "libnvidia-ml.so.1"),
                    str(FAKE_SRC), "-pthread"], check=True)
    return out


@pytest.fixture
def child(fake_lib_dir, tmp_path):
    """Run PRELUDE + code in a child Python bound to the fake NVML; return its `out`."""

    def run(code: str, *, env: dict | None = None, prefix: list[str] | None = None,
            prelude: str = PRELUDE) -> dict:
        script = prelude + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
        child_env = {
            **os.environ,
            "LD_LIBRARY_PATH": str(fake_lib_dir),
            "PYTHONPATH": str(REPO),
            "FAKE_NVML_STATE": str(tmp_path / "state" / "nvml-state"),
            "FAKE_NVML_LOG": str(tmp_path / "calls.log"),
            **(env or {}),
        }
        result = subprocess.run([*(prefix or []), sys.executable, "-c", script], env=child_env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    return run


def calls_logged(tmp_path: Path) -> list[str]:
    return [line.split()[1] for line in (tmp_path / "calls.log").read_text().splitlines()]


def test_every_getter(child):
    out = child("""
        out["driver"] = backend.driver_version()
        out["kind"] = backend.kind
        out["info"] = [[g.index, g.name(), g.uuid(), g.pci_address(), g.info().cumulative_energy_available]
                       for g in gpus]
        g = gpus[1]
        out["limit"] = g.get_power_limit_mw()
        out["constraints"] = list(g.get_power_limit_constraints_mw())
        out["persistence"] = g.get_persistence_mode()
        out["mem"] = g.get_supported_memory_clocks_mhz()
        out["graphics"] = g.get_supported_graphics_clocks_mhz(2201)
        out["unknown_mem"] = err(g.get_supported_graphics_clocks_mhz, 1000)
        out["energy"] = [g.get_total_energy_mj() for _ in range(3)]
        out["power"] = [g.get_power_mw() for _ in range(3)]
    """)
    assert out["driver"] == "580.159.04-fake" and out["kind"] == "nvml"
    assert out["info"] == [
        [0, "NVIDIA H200", "GPU-fa4e0000-0000-4000-8000-000000000000", "0000:00:06.0", True],
        [1, "NVIDIA H200", "GPU-fa4e0000-0000-4000-8000-000000000001", "0000:00:07.0", True],
    ]
    assert out["limit"] == 700_000
    assert out["constraints"] == [200_000, 700_000]
    assert out["persistence"] is True
    assert out["mem"] == [3201, 2201]
    assert out["graphics"] == list(range(1980, 344, -15))
    assert out["unknown_mem"] == [errors.NOT_FOUND, "nvmlDeviceGetSupportedGraphicsClocks",
                                  "NVML error: Not Found (nvmlDeviceGetSupportedGraphicsClocks)"]
    assert out["energy"] == sorted(out["energy"]) and out["energy"][0] > 2_536_141
    assert all(74_000 <= p <= 76_000 for p in out["power"])


def test_gpu_count_from_env(child):
    out = child('out["n"] = len(gpus)', env={"FAKE_NVML_GPUS": "5"})
    assert out["n"] == 5


def test_setters_change_getters_and_survive_a_restart(child, tmp_path):
    out = child("""
        g = gpus[0]
        g.set_power_limit_mw(250_000)
        g.set_persistence_mode(False)
        g.set_gpu_locked_clocks(900, 1980)
        g.set_mem_locked_clocks(2201, 3201)
        out["limit"] = g.get_power_limit_mw()
        out["persistence"] = g.get_persistence_mode()
        out["other"] = [gpus[1].get_power_limit_mw(), gpus[1].get_persistence_mode()]
        out["power"] = g.get_power_mw()
        backend.close()
        backend.close()  # twice is harmless
        out["after_close"] = err(g.get_power_limit_mw)
    """)
    assert out["limit"] == 250_000 and out["persistence"] is False
    assert out["other"] == [700_000, True]
    assert out["power"] <= 250_000
    assert out["after_close"][:2] == [errors.UNINITIALIZED, "nvmlDeviceGetPowerManagementLimit"]
    state = (tmp_path / "state" / "nvml-state").read_text()
    assert "gpu 0 power_limit_mw 250000 persistence 0 gpu_locked_mhz 900 1980 mem_locked_mhz 2201 3201" in state

    again = child("""
        g = gpus[0]
        out["before"] = [g.get_power_limit_mw(), g.get_persistence_mode()]
        g.reset_gpu_locked_clocks()
        g.reset_mem_locked_clocks()
    """)
    assert again["before"] == [250_000, False]
    assert "gpu 0 power_limit_mw 250000 persistence 0 gpu_locked_mhz 0 0 mem_locked_mhz 0 0" in (
        tmp_path / "state" / "nvml-state").read_text()


def test_invalid_arguments_change_nothing(child, tmp_path):
    out = child("""
        g = gpus[0]
        out["errors"] = [
            err(g.set_power_limit_mw, 199_999),
            err(g.set_power_limit_mw, 700_001),
            err(g.set_gpu_locked_clocks, 1500, 900),
            err(g.set_gpu_locked_clocks, 300, 900),
            err(g.set_mem_locked_clocks, 3201, 2201),
            err(g.set_mem_locked_clocks, 2201, 5000),
        ]
        out["limit"] = g.get_power_limit_mw()
    """)
    functions = ["nvmlDeviceSetPowerManagementLimit"] * 2 + ["nvmlDeviceSetGpuLockedClocks"] * 2 + [
        "nvmlDeviceSetMemoryLockedClocks"] * 2
    for (code, function, message), expected in zip(out["errors"], functions):
        assert (code, function) == (errors.INVALID_ARGUMENT, expected)
        assert message == (f"NVML error: Invalid Argument ({expected}): "
                           "the value is invalid or outside what this GPU supports")
    assert out["limit"] == 700_000
    assert not (tmp_path / "state" / "nvml-state").exists()


def test_no_permission_without_cap_sys_admin(child, tmp_path):
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a child without CAP_SYS_ADMIN")
    drop = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
    out = child("""
        g = gpus[0]
        out["errors"] = [err(g.set_power_limit_mw, 300_000), err(g.set_persistence_mode, False),
                         err(g.set_gpu_locked_clocks, 900, 1500), err(g.reset_gpu_locked_clocks),
                         err(g.set_mem_locked_clocks, 2201, 2201), err(g.reset_mem_locked_clocks)]
        out["reads"] = [g.get_power_limit_mw(), g.get_persistence_mode()]
    """, prefix=drop)
    functions = ["nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetPersistenceMode",
                 "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks",
                 "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceResetMemoryLockedClocks"]
    assert out["errors"] == [
        [errors.NO_PERMISSION, f, f"NVML error: Insufficient Permissions ({f}): the daemon lacks root or CAP_SYS_ADMIN"]
        for f in functions
    ]
    assert out["reads"] == [700_000, True]
    assert not (tmp_path / "state" / "nvml-state").exists()


def test_power_falls_back_to_power_usage_once(child, tmp_path):
    out = child('out["power"] = [gpus[0].get_power_mw() for _ in range(3)]', env={"FAKE_NVML_NO_INSTANT": "1"})
    assert out["power"] == [75_000] * 3
    calls = calls_logged(tmp_path)
    assert calls.count("nvmlDeviceGetFieldValues") == 1  # remembered after the first miss
    assert calls.count("nvmlDeviceGetPowerUsage") == 3


def test_instant_power_uses_the_field(child, tmp_path):
    child('out["power"] = gpus[0].get_power_mw()')
    calls = calls_logged(tmp_path)
    assert "nvmlDeviceGetFieldValues" in calls and "nvmlDeviceGetPowerUsage" not in calls


def test_gpu_without_energy_counter(child):
    out = child("""
        out["available"] = gpus[0].info().cumulative_energy_available
        out["error"] = err(gpus[0].get_total_energy_mj)
    """, env={"FAKE_NVML_NO_ENERGY": "1"})
    assert out["available"] is False
    assert out["error"] == [errors.NOT_SUPPORTED, "nvmlDeviceGetTotalEnergyConsumption",
                            "NVML error: Not Supported (nvmlDeviceGetTotalEnergyConsumption): "
                            "this GPU or driver does not support the operation"]


def test_missing_library_is_library_not_found(child):
    prelude = """
import json
from zeusd.devices.errors import NvmlError
from zeusd.devices import nvml

def no_library(name, *args, **kwargs):
    raise OSError(f"{name}: cannot open shared object file")

nvml.pynvml.CDLL = no_library  # as if no driver were installed
out = {}
try:
    nvml.NvmlBackend()
except NvmlError as e:
    out["error"] = [e.code, e.function, e.message]
"""
    out = child("", prelude=prelude)
    assert out["error"] == [errors.LIBRARY_NOT_FOUND, "nvmlInit", "NVML error: NVML Shared Library Not Found (nvmlInit)"]


def test_vendored_pynvml_is_used_without_nvidia_ml_py(child):
    prelude = "import sys\nsys.modules['pynvml'] = None  # nvidia-ml-py not installed\n" + PRELUDE
    out = child('out["module"] = pynvml.__name__; out["name"] = gpus[0].name()', prelude=prelude)
    assert out == {"module": "zeusd.devices._vendor.pynvml", "name": "NVIDIA H200"}


# ----- in-process: translation and the POWER_INSTANT decision, without any library -----


class FakeSample:
    def __init__(self, ret: int, value_type: int, **value):
        self.nvmlReturn = ret
        self.valueType = value_type
        self.value = type("Value", (), value)()


def fake_gpu(monkeypatch, field_values, power_usage_mw=42_000):
    monkeypatch.setattr(nvml.pynvml, "nvmlDeviceGetFieldValues", field_values)
    monkeypatch.setattr(nvml.pynvml, "nvmlDeviceGetPowerUsage", lambda handle: power_usage_mw)
    return nvml.NvmlGpu(0, handle=object())


@pytest.mark.parametrize("value_type, member", [(1, "uiVal"), (2, "ulVal"), (3, "ullVal"), (0, "dVal")])
def test_instant_power_value_types(monkeypatch, value_type, member):
    gpu = fake_gpu(monkeypatch, lambda h, ids: [FakeSample(0, value_type, **{member: 81_000})])
    assert gpu.get_power_mw() == 81_000


def test_per_field_error_other_than_unsupported_propagates(monkeypatch):
    gpu = fake_gpu(monkeypatch, lambda h, ids: [FakeSample(errors.GPU_IS_LOST, 1, uiVal=0)])
    with pytest.raises(NvmlError) as excinfo:
        gpu.get_power_mw()
    assert (excinfo.value.code, excinfo.value.function) == (errors.GPU_IS_LOST, "nvmlDeviceGetFieldValues")


def test_whole_call_errors(monkeypatch):
    def lost(handle, ids):
        raise nvml.pynvml.NVMLError(errors.GPU_IS_LOST)

    gpu = fake_gpu(monkeypatch, lost)
    with pytest.raises(NvmlError) as excinfo:
        gpu.get_power_mw()
    assert excinfo.value.code == errors.GPU_IS_LOST
    assert not isinstance(excinfo.value, nvml.pynvml.NVMLError)

    def old_driver(handle, ids):
        raise nvml.pynvml.NVMLError(errors.FUNCTION_NOT_FOUND)

    gpu = fake_gpu(monkeypatch, old_driver)
    assert gpu.get_power_mw() == 42_000


def test_library_mismatch_is_function_not_found():
    def mismatch():
        raise nvml.pynvml.NVMLLibraryMismatchError("old library")

    with pytest.raises(NvmlError) as excinfo:
        nvml._call("nvmlDeviceGetName", mismatch)
    assert (excinfo.value.code, excinfo.value.function) == (errors.FUNCTION_NOT_FOUND, "nvmlDeviceGetName")


def test_gpu_check_direct_only_passes_on_the_fake(fake_lib_dir, tmp_path):
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_lib_dir), "FAKE_NVML_STATE": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--direct-only"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "27 passed, 0 failed" in result.stdout
    assert "power_limit_after" in result.stdout
