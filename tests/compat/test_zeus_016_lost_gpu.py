"""zeus 0.16.0, unchanged, against a daemon with a lost GPU: reads of all GPUs still parse and
return the healthy GPUs (the lost one is named in a response header the client ignores), and
/discover with its extra ``gpu_health`` key still builds the client."""

from __future__ import annotations

import json

from tests.support.sim import SimGpus

CLIENT = "zeus-0.16.0"
DRIVER = "drive_zeus_query.py"
HEALTHY = ["0", "2", "3"]


def zeusd_options(tmp):
    """GPU 1 falls off the bus on its first call after start-up (info() makes 4 calls)."""
    lost = SimGpus(tmp, name="lost", faults=[{"gpu": 1, "lost": True, "after_calls": 4}])
    return {"args": ("--simulated-gpus", str(lost.spec_path))}  # the later flag wins


def test_reads_of_all_gpus_parse_and_leave_the_lost_one_out(compat):
    out = compat.drive(DRIVER, CLIENT, "reads_of_all")
    assert out["zeus_version"] == "0.16.0", out
    assert out["gpu_ids"] == [0, 1, 2, 3]  # /discover still lists it (gpu_health says lost)
    for key in ("power", "power_limit", "constraints", "persistence"):
        assert sorted(out[key]) == HEALTHY, (key, out)
    raw = compat.zeusd.get("/gpu/get_power_limit")
    assert list(json.loads(raw.headers["zeusd-unavailable-gpus"])) == ["1"]
    assert compat.zeusd.get("/discover").json()["gpu_health"]["1"]["state"] == "lost"
