"""`--cpu-backend simulated`: the daemon serves CPUs without RAPL, through every CPU route."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.checks import assert_error, assert_json
from tests.support.client import UnixHTTPConnection


@pytest.fixture(scope="module")
def zd(start_zeusd):
    return start_zeusd(enable="gpu-read,cpu-read",
                       args=("--cpu-backend", "simulated", "--simulated-cpus", "3"))


def test_discover_lists_the_simulated_cpus(zd):
    body = assert_json(zd.get("/discover"), 200)
    assert body["cpus"] == [{"id": i, "dram_available": True} for i in range(3)]
    assert body["cpu_ids"] == [0, 1, 2] and body["dram_available"] == [True] * 3


def test_energy_grows_between_reads(zd):
    path = "/cpu/get_cumulative_energy?cpu=true&dram=true"
    first = assert_json(zd.get(path), 200)
    time.sleep(0.2)
    second = assert_json(zd.get(path), 200)
    assert set(first) == {"0", "1", "2"}
    for cpu in first:
        grown_cpu = second[cpu]["cpu_energy_uj"] - first[cpu]["cpu_energy_uj"]
        grown_dram = second[cpu]["dram_energy_uj"] - first[cpu]["dram_energy_uj"]
        assert grown_cpu > 0 and grown_dram > 0


def test_power_is_within_the_model(zd):
    body = assert_json(zd.get("/cpu/get_power"), 200)
    for index, power in body["power_mw"].items():
        base_w = 90 + 15 * int(index)  # simulated_cpus(): base +- 30 W, DRAM 18 +- 4 W
        assert (base_w - 31) * 1000 <= power["cpu_mw"] <= (base_w + 31) * 1000, body
        assert 13_000 <= power["dram_mw"] <= 23_000, body


def test_legacy_cpu_routes_and_unknown_cpu(zd):
    assert assert_json(zd.get("/cpu/2/supports_dram_energy"), 200) == {"dram_available": True}
    reply = zd.post("/cpu/1/get_index_energy", body={"cpu": True, "dram": False})
    body = assert_json(reply, 200)
    assert body["cpu_energy_uj"] > 0 and body["dram_energy_uj"] is None
    assert_error(zd.get("/cpu/get_power?cpu_ids=3"), 400, "CPU 3 not found")


def test_cpu_stream(zd):
    conn = UnixHTTPConnection(zd.socket_path, timeout=10)
    try:
        conn.request("GET", "/cpu/stream_power?cpu_ids=1")
        resp = conn.getresponse()
        assert resp.status == 200
        line = resp.readline()
        while not line.startswith(b"data: "):
            line = resp.readline()
        event = json.loads(line[6:])
        assert event["cpu_id"] == 1 and event["cpu_mw"] > 0 and event["dram_mw"] > 0
    finally:
        conn.close()
