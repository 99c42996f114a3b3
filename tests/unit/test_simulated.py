"""The simulated backend behaves like the NVML driver, and its spec/fault parsing is strict."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from zeusd.devices import errors
from zeusd.devices.errors import NvmlError
from zeusd.devices.loader import open_backend
from zeusd.devices.profiles import PROFILES, parse_spec
from tests.support.clock import ManualClock
from zeusd.devices.simulated import SimulatedBackend

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "nvml"


def gpu0(spec: str = "h200", clock=None):
    if clock is None:
        return SimulatedBackend.from_spec(spec).devices()[0]
    return SimulatedBackend.from_spec(spec, clock).devices()[0]


def assert_nvml_error(excinfo, code: int, function: str) -> None:
    err = excinfo.value
    assert (err.code, err.function) == (code, function)
    assert err.message.startswith(f"NVML error: {errors.ERROR_TEXT[code]} ({function})")


# ----- profiles -----


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/nvml is not next to the repo")
def test_h200_profile_matches_the_real_probe():
    probe = json.loads((FIXTURES / "h200-probe.json").read_text())["gpus"][0]
    h200 = PROFILES["h200"]
    assert h200.name == probe["nvmlDeviceGetName"]["ok"]
    assert list(h200.power_limit_constraints_mw) == probe["nvmlDeviceGetPowerManagementLimitConstraints"]["ok"]
    assert h200.default_power_limit_mw == probe["nvmlDeviceGetPowerManagementDefaultLimit"]["ok"]
    assert list(h200.memory_clocks_mhz) == probe["nvmlDeviceGetSupportedMemoryClocks"]["ok"]
    for mem, result in probe["supported_graphics_clocks"].items():
        assert list(h200.graphics_clocks_mhz) == result["ok"], mem
    assert h200.persistence_mode is bool(probe["nvmlDeviceGetPersistenceMode"]["ok"])
    assert gpu0().pci_address() == probe["nvmlDeviceGetPciInfo"]["ok"]["busIdLegacy"]
    for call, latency in probe["latency"].items():
        if call in h200.latency_us:
            assert h200.latency_us[call] == latency["p50_us"]


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/nvml is not next to the repo")
def test_h200_clock_table_matches_nvidia_smi():
    text = (FIXTURES / "h200-supported-clocks.txt").read_text()
    memory = [int(m) for m in re.findall(r"Memory\s+:\s+(\d+) MHz", text)]
    graphics = [int(g) for g in re.findall(r"Graphics\s+:\s+(\d+) MHz", text)]
    assert memory == list(PROFILES["h200"].memory_clocks_mhz)
    assert graphics == list(PROFILES["h200"].graphics_clocks_mhz) * len(memory)


@pytest.mark.parametrize(
    "key, name, constraints, mem, graphics_range",
    [
        ("h100", "NVIDIA H100 80GB HBM3", (200_000, 700_000), [2619], (345, 1980)),
        ("a100", "NVIDIA A100-SXM4-80GB", (100_000, 400_000), [1593], (210, 1410)),
        ("a40", "NVIDIA A40", (100_000, 300_000), [7251, 5001, 810, 405], (210, 1740)),
    ],
)
def test_public_spec_profiles(key, name, constraints, mem, graphics_range):
    gpu = gpu0(key)
    assert gpu.name() == name
    assert gpu.get_power_limit_constraints_mw() == constraints
    assert gpu.get_power_limit_mw() == constraints[1]
    assert gpu.get_supported_memory_clocks_mhz() == mem
    graphics = gpu.get_supported_graphics_clocks_mhz(mem[0])
    assert (min(graphics), max(graphics)) == graphics_range
    assert all(a - b == 15 for a, b in zip(graphics, graphics[1:]))


# ----- spec strings -----


@pytest.mark.parametrize(
    "spec, keys",
    [("h200x4", ["h200"] * 4), ("a100x8", ["a100"] * 8), ("h100", ["h100"]), ("h200x2, a40", ["h200", "h200", "a40"])],
)
def test_short_specs(spec, keys):
    backend = SimulatedBackend.from_spec(spec)
    assert [g.profile.key for g in backend.devices()] == keys
    assert [g.index for g in backend.devices()] == list(range(len(keys)))
    assert backend.kind == "simulated"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("v100x2", "unknown GPU profile 'v100' (known: a100, a40, h100, h200)"),
        ("h200x0", "GPU count must be an integer 1-64, got 0"),
        ("h200x65", "GPU count must be an integer 1-64, got 65"),
        ("h200*2", "expected PROFILE[xCOUNT], e.g. h200x2, got 'h200*2'"),
        ("", "expected PROFILE[xCOUNT], e.g. h200x2, got ''"),
        ("/nonexistent/spec.json", "simulated GPU spec file /nonexistent/spec.json: cannot read it: No such file or directory"),
    ],
)
def test_bad_short_specs(spec, message):
    with pytest.raises(ValueError) as excinfo:
        SimulatedBackend.from_spec(spec)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def write_spec(tmp_path: Path, data) -> str:
    path = tmp_path / "spec.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_spec_file_with_profile_list_overrides_and_journal(tmp_path):
    spec = write_spec(tmp_path, {
        "profile": ["h200", {"base": "a40", "energy_counter": False, "power_limit_constraints_mw": [100000, 300000]}],
        "journal": "journal.jsonl",
        "latency": "none",
    })
    backend = SimulatedBackend.from_spec(spec)
    h200, a40 = backend.devices()
    assert h200.info().cumulative_energy_available is True
    assert a40.info().cumulative_energy_available is False
    with pytest.raises(NvmlError) as excinfo:
        a40.get_total_energy_mj()
    assert_nvml_error(excinfo, errors.NOT_SUPPORTED, "nvmlDeviceGetTotalEnergyConsumption")
    a40.set_power_limit_mw(150_000)
    backend.close()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x)["call"] for x in lines] == ["nvmlDeviceSetPowerManagementLimit"]


@pytest.mark.parametrize(
    "data, message",
    [
        ("{", "line 1: invalid JSON"),
        ([], "expected a JSON object at the top level"),
        ({"profile": "h200", "colour": 1}, "unknown key 'colour'"),
        ({"count": "two"}, "count: GPU count must be an integer 1-64, got 'two'"),
        ({"count": True}, "GPU count must be an integer 1-64, got True"),
        ({"profile": ["h200"], "count": 2}, "give either a list of profiles or 'count', not both"),
        ({"profile": []}, "key 'profile' is an empty list"),
        ({"profile": {"base": "h200", "speed": 3}}, "profile: unknown key 'speed'"),
        ({"profile": {"base": "h200", "default_power_limit_mw": 1}}, "default_power_limit_mw is outside"),
        ({"latency": "slow"}, "key 'latency' must be 'none' or 'fixture', got 'slow'"),
        ({"journal": 3}, "key 'journal' must be a path string, got 3"),
        ({"faults": {}}, "key 'faults' must be a list"),
        ({"faults": [{"gpu": 0, "call": "nvmlDeviceGetPowerLimit", "error": "NO_PERMISSION"}]},
         "faults[0]: 'call' must be '*' or a simulated NVML function, got 'nvmlDeviceGetPowerLimit'"),
        ({"faults": [{"gpu": 3, "call": "*", "error": "NO_PERMISSION"}]}, "'gpu' must be '*' or a GPU index 0-0, got 3"),
        ({"faults": [{"call": "*", "error": "NOPE"}]}, "unknown NVML error 'NOPE'"),
        ({"faults": [{"call": "*"}]}, "give at least one of 'error', 'delay_s', 'hang', 'lost'"),
        ({"faults": [{"call": "*", "delay_s": -1}]}, "'delay_s' must be a number >= 0, got -1"),
        ({"faults": [{"call": "*", "error": 4, "times": 1.5}]}, "'times' must be an integer >= 0, got 1.5"),
        ({"faults": [{"lost": True, "times": 1}]}, "a lost GPU is lost for every call and for good"),
        ({"faults": [{"call": "*", "hang": "yes"}]}, "'hang' must be true or false, got 'yes'"),
        ({"faults": [{"call": "*", "error": 4, "when": 1}]}, "faults[0]: unknown key 'when'"),
    ],
)
def test_bad_spec_files(tmp_path, data, message):
    spec = write_spec(tmp_path, data)
    with pytest.raises(ValueError) as excinfo:
        parse_spec(spec)
    assert f"simulated GPU spec file {spec}" in str(excinfo.value)
    assert message in str(excinfo.value)


def test_unwritable_journal_is_a_value_error(tmp_path):
    spec = write_spec(tmp_path, {"journal": str(tmp_path / "missing-dir" / "j.jsonl")})
    with pytest.raises(ValueError, match="cannot open the journal .*: No such file or directory"):
        SimulatedBackend.from_spec(spec)


def test_loader():
    backend = open_backend("simulated", None)
    assert [g.profile.key for g in backend.devices()] == ["h200", "h200"]
    assert len(open_backend("simulated", "a40x3").devices()) == 3
    with pytest.raises(ValueError, match="unknown GPU backend 'cuda' \\(expected one of: nvml, simulated\\)"):
        open_backend("cuda", None)
    with pytest.raises(ValueError, match="a simulated GPU spec was given but the GPU backend is 'nvml'"):
        open_backend("nvml", "h200")


# ----- identity -----


def test_identity_is_distinct_and_deterministic():
    first = [g.info() for g in SimulatedBackend.from_spec("h200x3").devices()]
    again = [g.info() for g in SimulatedBackend.from_spec("h200x3").devices()]
    assert first == again
    assert [i.pci_address for i in first] == ["0000:00:06.0", "0000:00:07.0", "0000:00:08.0"]
    assert len({i.uuid for i in first}) == 3
    assert all(re.fullmatch(r"GPU-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", i.uuid) for i in first)
    many = SimulatedBackend.from_spec("h100x40").devices()
    addresses = [g.pci_address() for g in many]
    assert len(set(addresses)) == 40 and addresses[32] == "0000:19:00.0"


# ----- setters change getters; errors like NVML's -----


def test_power_limit_round_trip_and_range():
    gpu = gpu0()
    gpu.set_power_limit_mw(200_000)
    assert gpu.get_power_limit_mw() == 200_000
    gpu.set_power_limit_mw(700_000)
    assert gpu.get_power_limit_mw() == 700_000
    for bad in (199_999, 700_001, 0, -5):
        with pytest.raises(NvmlError) as excinfo:
            gpu.set_power_limit_mw(bad)
        assert_nvml_error(excinfo, errors.INVALID_ARGUMENT, "nvmlDeviceSetPowerManagementLimit")
        assert excinfo.value.message.endswith("outside what this GPU supports")
    assert gpu.get_power_limit_mw() == 700_000


def test_persistence_round_trip():
    gpu = gpu0()
    assert gpu.get_persistence_mode() is True
    gpu.set_persistence_mode(False)
    assert gpu.get_persistence_mode() is False
    gpu.set_persistence_mode(True)
    assert gpu.get_persistence_mode() is True


@pytest.mark.parametrize(
    "setter, reset, key, good, bad, function",
    [
        ("set_gpu_locked_clocks", "reset_gpu_locked_clocks", "gpu_locked_clocks_mhz",
         [(345, 1980), (900, 900), (901, 1333)], [(1000, 900), (300, 1000), (900, 1995), (0, 0)],
         "nvmlDeviceSetGpuLockedClocks"),
        ("set_mem_locked_clocks", "reset_mem_locked_clocks", "mem_locked_clocks_mhz",
         [(2201, 3201), (3201, 3201)], [(3201, 2201), (2200, 3201), (2201, 3202)],
         "nvmlDeviceSetMemoryLockedClocks"),
    ],
)
def test_locked_clocks(setter, reset, key, good, bad, function):
    gpu = gpu0()
    assert gpu.state()[key] is None
    for pair in good:
        getattr(gpu, setter)(*pair)
        assert gpu.state()[key] == pair
    for pair in bad:
        with pytest.raises(NvmlError) as excinfo:
            getattr(gpu, setter)(*pair)
        assert_nvml_error(excinfo, errors.INVALID_ARGUMENT, function)
        assert gpu.state()[key] == good[-1]  # a rejected call changes nothing
    getattr(gpu, reset)()
    assert gpu.state()[key] is None


def test_graphics_clocks_of_an_unknown_memory_clock_is_not_found():
    gpu = gpu0()
    assert len(gpu.get_supported_graphics_clocks_mhz(2201)) == 110
    with pytest.raises(NvmlError) as excinfo:
        gpu.get_supported_graphics_clocks_mhz(1234)
    assert_nvml_error(excinfo, errors.NOT_FOUND, "nvmlDeviceGetSupportedGraphicsClocks")


# ----- power and energy -----


def test_idle_power_is_plausible_and_energy_integrates_it():
    clock = ManualClock()
    gpu = gpu0(clock=clock)
    start_mj = gpu.get_total_energy_mj()
    readings = []
    began = clock.now()
    for _ in range(8):
        clock.advance(0.06)
        readings.append(gpu.get_power_mw())
    elapsed_s = clock.now() - began
    assert all(70_000 <= p <= 80_000 for p in readings)
    assert len(set(readings)) > 1  # it moves
    gained_mj = gpu.get_total_energy_mj() - start_mj
    # about 75 W: 75 mJ per ms; integration lags by at most one 50 ms step
    assert 70 * (elapsed_s - 0.05) * 1000 <= gained_mj <= 80 * (elapsed_s + 0.05) * 1000


def test_power_never_exceeds_the_limit_under_load():
    clock = ManualClock()
    gpu = gpu0(clock=clock)
    gpu.set_load(1.0)
    clock.advance(0.06)
    assert gpu.get_power_mw() > 600_000
    gpu.set_power_limit_mw(300_000)
    for _ in range(5):
        assert gpu.get_power_mw() <= 300_000
        clock.advance(0.055)


def test_energy_is_monotonic_across_threads():
    gpu = gpu0()
    seen: list[list[int]] = [[] for _ in range(4)]

    def read(out):
        for _ in range(200):
            out.append(gpu.get_total_energy_mj())

    threads = [threading.Thread(target=read, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in seen:
        assert out == sorted(out)


def test_a40_falls_back_to_averaged_power():
    gpu = gpu0("a40")
    gpu.inject_fault("nvmlDeviceGetFieldValues", "UNKNOWN")  # must never be called
    assert 25_000 <= gpu.get_power_mw() <= 35_000


def test_instant_power_falls_back_when_the_field_is_not_supported():
    gpu = gpu0()
    gpu.inject_fault("nvmlDeviceGetFieldValues", "NOT_SUPPORTED")
    gpu.inject_fault("nvmlDeviceGetPowerUsage", "TIMEOUT", after_calls=1)
    assert gpu.get_power_mw() == 75_000  # fell back to PowerUsage
    with pytest.raises(NvmlError) as excinfo:
        gpu.get_power_mw()  # remembered: goes straight to PowerUsage
    assert_nvml_error(excinfo, errors.TIMEOUT, "nvmlDeviceGetPowerUsage")


# ----- journal -----


def test_journal_records_successful_setters_only(tmp_path):
    journal = tmp_path / "j.jsonl"
    backend = SimulatedBackend.from_spec(write_spec(tmp_path, {"count": 2, "journal": str(journal)}))
    g0, g1 = backend.devices()
    before = time.time()
    g0.set_power_limit_mw(250_000)
    with pytest.raises(NvmlError):
        g0.set_power_limit_mw(50_000)
    g1.set_persistence_mode(False)
    g1.set_gpu_locked_clocks(900, 1980)
    with pytest.raises(NvmlError):
        g1.set_gpu_locked_clocks(1980, 900)
    g1.reset_gpu_locked_clocks()
    g0.set_mem_locked_clocks(3201, 3201)
    g0.reset_mem_locked_clocks()
    entries = [json.loads(line) for line in journal.read_text().splitlines()]  # flushed already
    assert [(e["gpu"], e["call"], e["args"]) for e in entries] == [
        (0, "nvmlDeviceSetPowerManagementLimit", [250000]),
        (1, "nvmlDeviceSetPersistenceMode", [False]),
        (1, "nvmlDeviceSetGpuLockedClocks", [900, 1980]),
        (1, "nvmlDeviceResetGpuLockedClocks", []),
        (0, "nvmlDeviceSetMemoryLockedClocks", [3201, 3201]),
        (0, "nvmlDeviceResetMemoryLockedClocks", []),
    ]
    times = [e["t"] for e in entries]
    assert before <= times[0] and times == sorted(times)
    backend.close()
    g0.set_power_limit_mw(300_000)  # after close: applied, not journalled, no crash
    assert len(journal.read_text().splitlines()) == 6


def test_journal_skips_injected_failures(tmp_path):
    journal = tmp_path / "j.jsonl"
    backend = SimulatedBackend.from_spec(write_spec(tmp_path, {"journal": str(journal)}))
    gpu = backend.devices()[0]
    gpu.inject_fault("nvmlDeviceSetPowerManagementLimit", "NO_PERMISSION")
    with pytest.raises(NvmlError) as excinfo:
        gpu.set_power_limit_mw(300_000)
    assert_nvml_error(excinfo, errors.NO_PERMISSION, "nvmlDeviceSetPowerManagementLimit")
    assert excinfo.value.message.endswith("the daemon lacks root or CAP_SYS_ADMIN")
    assert gpu.get_power_limit_mw() == 700_000
    assert journal.read_text() == ""
    backend.close()


# ----- faults -----


def test_error_fault_by_name_number_and_prefix_with_times():
    gpu = gpu0()
    gpu.inject_fault("nvmlDeviceGetPowerManagementLimit", "NVML_ERROR_NO_PERMISSION", times=2)
    for _ in range(2):
        with pytest.raises(NvmlError) as excinfo:
            gpu.get_power_limit_mw()
        assert_nvml_error(excinfo, errors.NO_PERMISSION, "nvmlDeviceGetPowerManagementLimit")
    assert gpu.get_power_limit_mw() == 700_000
    gpu.inject_fault("*", 999)
    with pytest.raises(NvmlError) as excinfo:
        gpu.name()
    assert_nvml_error(excinfo, errors.UNKNOWN, "nvmlDeviceGetName")
    gpu.clear_faults()
    assert gpu.name() == "NVIDIA H200"


def test_fault_only_hits_its_gpu_and_call(tmp_path):
    spec = write_spec(tmp_path, {"count": 2, "faults": [
        {"gpu": 1, "call": "nvmlDeviceGetPersistenceMode", "error": "GPU_IS_LOST"}]})
    g0, g1 = SimulatedBackend.from_spec(spec).devices()
    assert g0.get_persistence_mode() is True
    assert g1.get_power_limit_mw() == 700_000
    with pytest.raises(NvmlError) as excinfo:
        g1.get_persistence_mode()
    assert_nvml_error(excinfo, errors.GPU_IS_LOST, "nvmlDeviceGetPersistenceMode")


def test_delay_fault():
    clock = ManualClock()
    gpu = gpu0(clock=clock)
    gpu.inject_fault("nvmlDeviceGetPowerManagementLimit", delay_s=0.2, times=1)
    began = clock.now()
    assert gpu.get_power_limit_mw() == 700_000
    assert clock.now() - began >= 0.2
    began = clock.now()
    gpu.get_power_limit_mw()
    assert clock.now() - began < 0.1


def test_hang_fault_blocks_until_released_without_blocking_other_calls():
    backend = SimulatedBackend.from_spec("h200")
    gpu = backend.devices()[0]
    gpu.inject_fault("nvmlDeviceSetPowerManagementLimit", hang=True)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (gpu.set_power_limit_mw(300_000), done.set()))
    worker.start()
    assert not done.wait(0.2)
    assert gpu.get_power_limit_mw() == 700_000  # readers still get through
    backend.release_hangs()
    assert done.wait(2)
    worker.join()
    assert gpu.get_power_limit_mw() == 300_000


def test_lost_after_calls_keeps_start_up_working(tmp_path):
    spec = write_spec(tmp_path, {"count": 2, "faults": [{"gpu": 1, "lost": True, "after_calls": 4}]})
    g0, g1 = SimulatedBackend.from_spec(spec).devices()
    g1.info()  # 4 calls: energy probe, name, uuid, PCI
    for call in (g1.get_power_limit_mw, g1.name, lambda: g1.set_power_limit_mw(300_000)):
        with pytest.raises(NvmlError) as excinfo:
            call()
        assert excinfo.value.code == errors.GPU_IS_LOST
        assert excinfo.value.message.endswith("it needs a reset or a reboot")
    g1.clear_faults()
    with pytest.raises(NvmlError):
        g1.name()  # lost for good
    assert g0.name() == "NVIDIA H200"


def test_lost_after_seconds():
    clock = ManualClock()
    gpu = gpu0(clock=clock)
    gpu.inject_fault(lost=True, after_s=0.15)
    assert gpu.name() == "NVIDIA H200"
    clock.advance(0.1)
    assert gpu.name() == "NVIDIA H200"
    clock.advance(0.1)
    with pytest.raises(NvmlError) as excinfo:
        gpu.name()
    assert_nvml_error(excinfo, errors.GPU_IS_LOST, "nvmlDeviceGetName")


def test_info_propagates_energy_errors_other_than_not_supported():
    gpu = gpu0()
    gpu.inject_fault("nvmlDeviceGetTotalEnergyConsumption", "NO_PERMISSION", times=1)
    with pytest.raises(NvmlError) as excinfo:
        gpu.info()
    assert excinfo.value.code == errors.NO_PERMISSION
    assert gpu.info().cumulative_energy_available is True


def test_inject_fault_validates():
    gpu = gpu0()
    with pytest.raises(ValueError, match="'call' must be '\\*' or a simulated NVML function, got 'nvmlFoo'"):
        gpu.inject_fault("nvmlFoo", "NO_PERMISSION")
    with pytest.raises(ValueError, match="give at least one of"):
        gpu.inject_fault("*")


def test_fixture_latency_slows_energy_reads(tmp_path):
    clock = ManualClock()
    fast = gpu0(write_spec(tmp_path, {"latency": "none"}), clock)
    slow_path = tmp_path / "slow.json"
    slow_path.write_text(json.dumps({"latency": "fixture"}))
    slow = gpu0(str(slow_path), clock)

    def timed(gpu):
        began = clock.now()
        for _ in range(10):
            gpu.get_total_energy_mj()
        return clock.now() - began

    assert timed(slow) >= 10 * 0.003  # p50 3.03 ms per nvmlDeviceGetTotalEnergyConsumption
    assert timed(fast) < 0.01
