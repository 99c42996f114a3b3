"""Drive zeusd with the released zeus 0.16 client: reads, a power stream, and writes of
each GPU's CURRENT value only. Part of tools/real_node_check.sh; prints one JSON line.

    PYTHONPATH=<zeus 0.16 client dir> python3 -S tools/real_node_zeus.py SOCKET

Never writes a value the GPU does not already have, never locks clocks, never resets.
Exit status 0 when every step passed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

SOCKET = sys.argv[1]

import zeus  # noqa: E402
from zeus.utils.zeusd import ZeusdClient, ZeusdConfig  # noqa: E402


def reads(c: ZeusdClient) -> dict:
    power = c.get_gpu_power()
    energy = c.get_gpu_energy(c.gpu_ids)
    return {"gpu_ids": c.gpu_ids, "names": [g.name for g in c.gpus],
            "power_mw": {str(k): v for k, v in power.power_mw.items()},
            "energy_mj": {str(k): v for k, v in energy.items()},
            "power_limit_mw": {str(k): v for k, v in c.get_power_limit().items()},
            "constraints_mw": {str(k): list(v) for k, v in
                               c.get_power_limit_constraints().items()},
            "persistence": {str(k): v for k, v in c.get_persistence_mode().items()}}


def same_value_writes(c: ZeusdClient) -> dict:
    """Set each GPU's power limit and persistence mode to what it reports now; read back."""
    out = {}
    for gpu in c.gpu_ids:
        limit = c.get_power_limit([gpu])[gpu]
        persistence = c.get_persistence_mode([gpu])[gpu]
        c.set_power_limit([gpu], limit, block=True)
        c.set_persistence_mode([gpu], persistence, block=True)
        after = (c.get_power_limit([gpu])[gpu], c.get_persistence_mode([gpu])[gpu])
        out[str(gpu)] = {"wrote": [limit, persistence], "read_back": list(after),
                         "ok": after == (limit, persistence)}
    return out


def stream(gpu_count: int, wait_s: float = 10.0) -> dict:
    """zeus's PowerStreamingClient until every GPU has a reading."""
    import zeus as zeus_pkg

    # zeus.monitor's __init__ imports heavy optional packages; power_streaming needs httpx only.
    monitor = types.ModuleType("zeus.monitor")
    monitor.__path__ = [os.path.join(os.path.dirname(zeus_pkg.__file__), "monitor")]
    sys.modules["zeus.monitor"] = monitor
    from zeus.monitor.power_streaming import PowerStreamingClient

    client = PowerStreamingClient(servers=[ZeusdConfig.uds(socket_path=SOCKET)],
                                  reconnect_delay_s=0.2)
    deadline = time.monotonic() + wait_s
    readings = None
    try:
        while time.monotonic() < deadline:
            readings = client.get_power().get(SOCKET)
            if readings and len(readings.gpu_power_w) == gpu_count:
                break
            time.sleep(0.1)
    finally:
        client.stop()
    gpu_w = {str(k): v for k, v in readings.gpu_power_w.items()} if readings else {}
    return {"gpu_power_w": gpu_w, "ok": len(gpu_w) == gpu_count}


def main() -> int:
    result: dict = {"zeus_version": zeus.__version__}
    try:
        c = ZeusdClient(ZeusdConfig.uds(socket_path=SOCKET))
        result["reads"] = reads(c)
        result["writes"] = same_value_writes(c)
        result["stream"] = stream(len(c.gpu_ids))
    except Exception as exc:  # noqa: BLE001 - report any client failure as the result
        result["error"] = f"{type(exc).__name__}: {exc}"
    ok = "error" not in result and all(w["ok"] for w in result["writes"].values()) \
        and result["stream"]["ok"] and len(result["reads"]["gpu_ids"]) > 0
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
