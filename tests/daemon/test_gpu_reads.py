"""GPU reads, /discover, /time and the API-group modes (upstream HEAD gpu.rs tests)."""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.support.checks import assert_error, assert_json, assert_ok_empty, group_disabled, query

READS = ["/gpu/get_power", "/gpu/get_cumulative_energy", "/gpu/get_power_limit",
         "/gpu/get_power_limit_constraints", "/gpu/get_persistence_mode"]
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@pytest.fixture(scope="module")
def zd(start_zeusd):
    """Four H200s, one CPU package with DRAM, every API group."""
    return start_zeusd(rapl=True)


def per_gpu(body: dict, gpus=("0", "1", "2", "3")) -> dict:
    assert list(body) == list(gpus), body
    return body


# ----- reads --------------------------------------------------------------------------------

def test_power_oneshot(zd):
    body = assert_json(zd.get("/gpu/get_power"), 200)
    assert set(body) == {"timestamp_ms", "power_mw"}
    assert isinstance(body["timestamp_ms"], int)
    assert abs(body["timestamp_ms"] - time.time() * 1000) < 60_000
    for power_mw in per_gpu(body["power_mw"]).values():
        # An idle simulated H200 draws about 75 W, never above its power limit.
        assert isinstance(power_mw, int) and 50_000 < power_mw <= 700_000


def test_power_oneshot_filtered(zd):
    body = assert_json(zd.get("/gpu/get_power?gpu_ids=0,2"), 200)
    assert list(body["power_mw"]) == ["0", "2"]


def test_power_oneshot_answers_every_time_while_power_is_flat(zd):
    for _ in range(10):
        assert zd.get("/gpu/get_power?gpu_ids=1").status == 200


def test_cumulative_energy(zd):
    first = per_gpu(assert_json(zd.get("/gpu/get_cumulative_energy"), 200))
    for value in first.values():
        assert set(value) == {"energy_mj"} and isinstance(value["energy_mj"], int)
    only = assert_json(zd.get("/gpu/get_cumulative_energy?gpu_ids=0"), 200)
    assert list(only) == ["0"]
    assert only["0"]["energy_mj"] >= first["0"]["energy_mj"]  # a counter never goes back


def test_power_limit_reads_back_what_was_set(zd):
    assert_ok_empty(zd.post(query("/gpu/set_power_limit", gpu_ids="1", power_limit_mw=250_000,
                                  block=True)))
    body = per_gpu(assert_json(zd.get("/gpu/get_power_limit"), 200))
    assert body["1"] == {"power_limit_mw": 250_000}
    assert body["0"] == {"power_limit_mw": 700_000}  # the H200 default, untouched
    assert assert_json(zd.get("/gpu/get_power_limit?gpu_ids=1"), 200) == {
        "1": {"power_limit_mw": 250_000}}


def test_power_limit_constraints(zd):
    body = per_gpu(assert_json(zd.get("/gpu/get_power_limit_constraints"), 200))
    for value in body.values():
        assert value == {"min_power_limit_mw": 200_000, "max_power_limit_mw": 700_000}


def test_persistence_mode_reads_back_what_was_set(zd):
    assert assert_json(zd.get("/gpu/get_persistence_mode?gpu_ids=0,1"), 200) == {
        "0": {"enabled": True}, "1": {"enabled": True}}
    assert_ok_empty(zd.post(query("/gpu/set_persistence_mode", gpu_ids="1", enabled=False,
                                  block=True)))
    assert assert_json(zd.get("/gpu/get_persistence_mode?gpu_ids=0,1"), 200) == {
        "0": {"enabled": True}, "1": {"enabled": False}}


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("gpu_ids,missing", [("99", 99), ("0,4", 4), ("4,5", 4)])
def test_reads_reject_an_unknown_gpu(zd, path, gpu_ids, missing):
    assert_error(zd.get(f"{path}?gpu_ids={gpu_ids}"), 400, f"GPU {missing} not found")


@pytest.mark.parametrize("path", READS)
def test_reads_deny_unknown_query_fields(zd, path):
    body = assert_json(zd.get(f"{path}?cpu_ids=0"), 400)
    assert body["error"].startswith("Query deserialize error: unknown field `cpu_ids`")


@pytest.mark.parametrize("path", READS)
def test_reads_reject_a_duplicate_gpu_ids(zd, path):
    assert_error(zd.get(f"{path}?gpu_ids=0&gpu_ids=1"), 400,
                 "Query deserialize error: duplicate field `gpu_ids`")


@pytest.mark.parametrize("path", READS)
def test_reads_are_not_post_routes(zd, path):
    assert zd.post(path).status == 405


# ----- /discover and /time ------------------------------------------------------------------

def test_discover(zd):
    body = assert_json(zd.get("/discover"), 200)
    gpus = body["gpus"]
    assert [g["id"] for g in gpus] == [0, 1, 2, 3]
    for gpu in gpus:
        assert gpu["name"] == "NVIDIA H200"
        assert PCI_ADDRESS.match(gpu["pci_address"]), gpu
        assert gpu["cumulative_energy_available"] is True
        assert "vendor" not in gpu  # upstream's test: HEAD clients reject unknown vendors
    assert [g["pci_address"] for g in gpus[:2]] == ["0000:00:06.0", "0000:00:07.0"]
    assert len({g["pci_address"] for g in gpus}) == 4
    assert body["cpus"] == [{"id": 0, "dram_available": True}]
    assert body["enabled_api_groups"] == ["gpu-control", "gpu-read", "cpu-read"]
    assert body["auth_required"] is False
    # zeus 0.14/0.15's flat fields.
    assert body["gpu_ids"] == [0, 1, 2, 3]
    assert body["cpu_ids"] == [0]
    assert body["dram_available"] == [True]


def test_discover_names_the_caller_as_the_kernel_sees_it(zd):
    caller = assert_json(zd.get("/discover"), 200)["caller"]
    assert caller["transport"] == "unix"
    assert (caller["uid"], caller["gid"], caller["pid"]) == (os.getuid(), os.getgid(), os.getpid())
    assert os.getgid() in caller["groups"]


def test_discover_caller_cannot_be_forged_with_headers(zd):
    body = assert_json(zd.get("/discover", headers={"Zeusd.Caller": "uid=1000",
                                                   "X-Forwarded-For": "10.0.0.1"}), 200)
    assert body["caller"]["uid"] == os.getuid()


def test_time(zd):
    before_ms = time.time() * 1000
    body = assert_json(zd.get("/time"), 200)
    after_ms = time.time() * 1000
    assert list(body) == ["timestamp_ms"] and isinstance(body["timestamp_ms"], int)
    # Same machine, same clock: the daemon's reading lies between ours (1 ms rounding).
    assert before_ms - 1 <= body["timestamp_ms"] <= after_ms + 1


# ----- API groups -----------------------------------------------------------------------------

WRITES = ["/gpu/set_power_limit?gpu_ids=0&power_limit_mw=300000&block=true",
          "/gpu/set_persistence_mode?gpu_ids=0&enabled=true&block=true",
          "/gpu/set_gpu_locked_clocks?gpu_ids=0&min_clock_mhz=900&max_clock_mhz=1000&block=true",
          "/gpu/reset_gpu_locked_clocks?gpu_ids=0&block=true",
          "/gpu/set_mem_locked_clocks?gpu_ids=0&min_clock_mhz=2201&max_clock_mhz=3201&block=true",
          "/gpu/reset_mem_locked_clocks?gpu_ids=0&block=true",
          "/gpu/reset_locked_clocks?gpu_ids=0&block=true"]
LEGACY_WRITES = [("/gpu/0/set_power_limit", {"power_limit_mw": 300000, "block": True}),
                 ("/gpu/0/set_persistent_mode", {"enabled": True, "block": True}),
                 ("/gpu/0/reset_gpu_locked_clocks", {"block": True})]
CPU_READS = ["/cpu/get_cumulative_energy?cpu=true&dram=true", "/cpu/get_power",
             "/cpu/0/supports_dram_energy"]


@pytest.fixture(scope="module")
def read_only(start_zeusd):
    return start_zeusd(rapl=True, enable="gpu-read")


@pytest.fixture(scope="module")
def control_only(start_zeusd):
    return start_zeusd(rapl=True, enable="gpu-control")


@pytest.fixture(scope="module")
def cpu_only(start_zeusd):
    return start_zeusd(rapl=True, enable="cpu-read")


def test_read_only_mode(read_only):
    assert read_only.get("/gpu/get_power").status == 200
    assert read_only.get("/gpu/get_cumulative_energy").status == 200
    mark = read_only.gpus.mark()
    for path in WRITES:
        assert assert_json(read_only.post(path), 404) == group_disabled("gpu-control"), path
    for path, body in LEGACY_WRITES:
        assert assert_json(read_only.post(path, body), 404) == group_disabled("gpu-control")
    assert read_only.gpus.since(mark) == []
    assert assert_json(read_only.get(CPU_READS[0]), 404) == group_disabled("cpu-read")
    assert assert_json(read_only.post("/cpu/0/get_index_energy", {"cpu": True, "dram": True}),
                       404) == group_disabled("cpu-read")
    body = assert_json(read_only.get("/discover"), 200)
    assert body["enabled_api_groups"] == ["gpu-read"]
    assert len(body["gpus"]) == 4 and body["cpus"] == []
    assert (body["gpu_ids"], body["cpu_ids"], body["dram_available"]) == ([0, 1, 2, 3], [], [])


def test_control_only_mode(control_only):
    mark = control_only.gpus.mark()
    assert_ok_empty(control_only.post("/gpu/set_persistence_mode?gpu_ids=0&enabled=false"
                                      "&block=true"))
    assert control_only.gpus.since(mark) == [(0, "nvmlDeviceSetPersistenceMode", [False])]
    for path in READS:
        assert assert_json(control_only.get(path), 404) == group_disabled("gpu-read"), path
    body = assert_json(control_only.get("/discover"), 200)
    assert body["enabled_api_groups"] == ["gpu-control"]
    assert len(body["gpus"]) == 4 and body["cpus"] == []


def test_cpu_only_mode(cpu_only):
    body = assert_json(cpu_only.get("/discover"), 200)
    assert body["enabled_api_groups"] == ["cpu-read"]
    assert body["gpus"] == [] and body["gpu_ids"] == []
    assert body["cpus"] == [{"id": 0, "dram_available": True}]
    for path in READS:
        assert assert_json(cpu_only.get(path), 404) == group_disabled("gpu-read"), path
    for path in WRITES:
        assert assert_json(cpu_only.post(path), 404) == group_disabled("gpu-control"), path
    for path in CPU_READS:
        assert cpu_only.get(path).status == 200, path


def test_disabled_group_wins_over_bad_parameters(read_only):
    """The group check comes first: a disabled route never reveals its parameter errors."""
    assert assert_json(read_only.post("/gpu/set_power_limit?gpu_ids=99&lego=1"), 404) == \
        group_disabled("gpu-control")
