"""CPU (RAPL) reads against a fake powercap tree (upstream cpu.rs tests and rapl.rs wraps)."""

from __future__ import annotations

import threading

import pytest

from tests.support.checks import assert_error, assert_json
from tests.support.daemon import Daemon
from tests.support.rapl import FakeRapl

ENERGY = "/cpu/get_cumulative_energy"


@pytest.fixture(scope="module")
def zd(start_zeusd):
    return start_zeusd(rapl=True, enable="cpu-read")


def energy(zd, cpu: bool, dram: bool, cpu_ids: str | None = None) -> dict:
    ids = f"&cpu_ids={cpu_ids}" if cpu_ids is not None else ""
    return assert_json(zd.get(f"{ENERGY}?cpu={str(cpu).lower()}&dram={str(dram).lower()}{ids}"),
                       200)


def test_only_cpu_measurement(zd):
    for value in (2_000_000, 2_500_000, 3_000_000):
        zd.rapl.set(0, cpu_uj=value, dram_uj=value // 2)
        assert energy(zd, True, False) == {"0": {"cpu_energy_uj": value, "dram_energy_uj": None}}


def test_only_dram_measurement(zd):
    for value in (600_000, 700_000, 900_000):
        zd.rapl.set(0, dram_uj=value)
        assert energy(zd, False, True) == {"0": {"cpu_energy_uj": None, "dram_energy_uj": value}}


def test_both_measurements(zd):
    zd.rapl.set(0, cpu_uj=4_000_000, dram_uj=1_000_000)
    assert energy(zd, True, True, cpu_ids="0") == {
        "0": {"cpu_energy_uj": 4_000_000, "dram_energy_uj": 1_000_000}}
    assert energy(zd, False, False) == {"0": {"cpu_energy_uj": None, "dram_energy_uj": None}}


def test_wraparound_stays_monotonic(zd):
    top = zd.rapl.package_max_uj
    zd.rapl.set(0, cpu_uj=top - 100)
    before = energy(zd, True, False)["0"]["cpu_energy_uj"]
    zd.rapl.set(0, cpu_uj=50)  # the counter wrapped
    after = energy(zd, True, False)["0"]["cpu_energy_uj"]
    assert after - before == 150  # upstream's modulus: max_energy_range_uj
    zd.rapl.set(0, cpu_uj=top - 10)
    zd.rapl.set(0, cpu_uj=top - 10)
    third = energy(zd, True, False)["0"]["cpu_energy_uj"]
    zd.rapl.set(0, cpu_uj=0)  # wrapped to exactly zero
    fourth = energy(zd, True, False)["0"]["cpu_energy_uj"]
    assert third - after == top - 60 and fourth - third == 10


def test_dram_wraps_independently_of_the_package(zd):
    zd.rapl.set(0, cpu_uj=5_000_000, dram_uj=zd.rapl.dram_max_uj - 5)
    first = energy(zd, True, True)["0"]
    zd.rapl.set(0, cpu_uj=5_000_001, dram_uj=5)
    second = energy(zd, True, True)["0"]
    assert second["dram_energy_uj"] - first["dram_energy_uj"] == 10
    assert second["cpu_energy_uj"] - first["cpu_energy_uj"] == 1


@pytest.mark.parametrize("path,message", [
    (f"{ENERGY}?cpu=true", "Query deserialize error: missing field `dram`"),
    (f"{ENERGY}?dram=true", "Query deserialize error: missing field `cpu`"),
    (f"{ENERGY}?cpu=notabool&dram=true",
     "Query deserialize error: provided string was not `true` or `false`"),
    (f"{ENERGY}?cpu=true&dram=1",
     "Query deserialize error: provided string was not `true` or `false`"),
    (f"{ENERGY}?cpu=true&dram=true&cpu_ids=2", "CPU 2 not found"),
    (f"{ENERGY}?cpu=true&dram=true&cpu_ids=", "cpu_ids must contain at least one CPU index"),
    (f"{ENERGY}?cpu=true&dram=true&cpu_ids=0,,0", "cpu_ids contains an empty CPU index"),
    (f"{ENERGY}?cpu=true&dram=true&cpu_ids=zero", "Invalid CPU index: zero"),
    ("/cpu/get_power?cpu_ids=1", "CPU 1 not found"),
    ("/cpu/get_power?cpu_ids=a", "Invalid CPU index: a"),
])
def test_invalid_requests(zd, path, message):
    assert_error(zd.get(path), 400, message)


@pytest.mark.parametrize("path,field", [
    (f"{ENERGY}?cp=true&cpu=true&dram=true&cpu_ids=2", "cp"),
    ("/cpu/get_power?gpu_ids=0", "gpu_ids"),
    (f"{ENERGY}?cpu=true&dram=true&gpu_ids=0", "gpu_ids"),
])
def test_deny_unknown_query_fields(zd, path, field):
    body = assert_json(zd.get(path), 400)
    assert body["error"].startswith(f"Query deserialize error: unknown field `{field}`")


def test_cpu_ids_are_trimmed_and_deduplicated(zd):
    assert list(energy(zd, True, False, cpu_ids="%200%20,0")) == ["0"]


def test_power_of_flat_counters_is_zero(zd):
    zd.rapl.set(0, cpu_uj=9_000_000, dram_uj=3_000_000)
    body = assert_json(zd.get("/cpu/get_power"), 200)
    assert set(body) == {"timestamp_ms", "power_mw"} and isinstance(body["timestamp_ms"], int)
    assert body["power_mw"] == {"0": {"cpu_mw": 0, "dram_mw": 0}}


def test_power_of_rising_counters_is_positive(zd):
    """The counters rise while the daemon measures: both powers come out above zero."""
    stop = threading.Event()

    def tick() -> None:
        cpu_uj, dram_uj = 10_000_000, 4_000_000
        while not stop.wait(0.005):
            cpu_uj, dram_uj = cpu_uj + 10_000, dram_uj + 5_000
            zd.rapl.set(0, cpu_uj=cpu_uj, dram_uj=dram_uj)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        body = assert_json(zd.get("/cpu/get_power?cpu_ids=0"), 200)
    finally:
        stop.set()
        ticker.join()
    power = body["power_mw"]["0"]
    assert isinstance(power["cpu_mw"], int) and power["cpu_mw"] > 0
    assert isinstance(power["dram_mw"], int) and power["dram_mw"] > 0


def test_unreadable_counter_is_a_json_500_naming_the_cpu(zd):
    path = zd.rapl.root / "intel-rapl:0" / "energy_uj"
    good = path.read_text()
    path.write_text("garbage\n")
    try:
        body = assert_json(zd.get(f"{ENERGY}?cpu=true&dram=false"), 500)
    finally:
        path.write_text(good)
    assert list(body) == ["error"] and body["error"].startswith("CPU 0: ")
    assert zd.get(f"{ENERGY}?cpu=true&dram=false").status == 200


# ----- two packages, one without DRAM ---------------------------------------------------------

@pytest.fixture(scope="module")
def two(start_zeusd, module_tmp):
    return start_zeusd(rapl=FakeRapl(module_tmp / "rapl2", dram=(True, False)), enable="cpu-read")


def test_discover_lists_each_package(two):
    body = assert_json(two.get("/discover"), 200)
    assert body["cpus"] == [{"id": 0, "dram_available": True}, {"id": 1, "dram_available": False}]
    assert (body["cpu_ids"], body["dram_available"]) == ([0, 1], [True, False])


def test_absent_dram_is_null_not_an_error(two):
    two.rapl.set(1, cpu_uj=77_000_000)
    assert energy(two, True, True, cpu_ids="1") == {
        "1": {"cpu_energy_uj": 77_000_000, "dram_energy_uj": None}}
    both = energy(two, True, True)
    assert list(both) == ["0", "1"] and isinstance(both["0"]["dram_energy_uj"], int)
    power = assert_json(two.get("/cpu/get_power"), 200)["power_mw"]
    assert power["1"]["dram_mw"] is None and power["0"]["dram_mw"] == 0
    assert assert_json(two.get("/cpu/1/supports_dram_energy"), 200) == {"dram_available": False}


# ----- start-up -------------------------------------------------------------------------------

def test_missing_rapl_root_serves_no_cpus(start_zeusd, module_tmp):
    zd = start_zeusd(rapl=FakeRapl(module_tmp / "empty", dram=()), args=("--rapl-root",
                                                                      str(module_tmp / "nope")))
    body = assert_json(zd.get("/discover"), 200)
    assert body["cpus"] == [] and "cpu-read" in body["enabled_api_groups"]
    assert_error(zd.get(f"{ENERGY}?cpu=true&dram=true&cpu_ids=0"), 400, "CPU 0 not found")


def test_broken_rapl_package_stops_the_daemon(module_tmp):
    rapl = FakeRapl(module_tmp / "broken")
    (rapl.root / "intel-rapl:0" / "max_energy_range_uj").unlink()
    sock = module_tmp / "broken.sock"
    daemon = Daemon(module_tmp, ["serve", "--gpu-backend", "simulated", "--simulated-gpus",
                                 "h200", "--policy", str(module_tmp / "none.toml"),
                                 "--rapl-root", str(rapl.root), "--socket-path", str(sock)])
    try:
        assert daemon.proc.wait(20) == 1
    finally:
        daemon.stop()
    assert "cannot read RAPL counters" in daemon.log()
    assert "max_energy_range_uj" in daemon.log()
    assert "Traceback" not in daemon.log()
    assert not sock.exists()
