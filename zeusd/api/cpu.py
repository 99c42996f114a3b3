"""Query-style CPU (RAPL) routes and the legacy CPU routes of zeus-ml 0.11+."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import operations as ops
from .params import parse_bool, parse_id_list, parse_json_body, parse_query, path_index
from .respond import caller_of, send_json

if TYPE_CHECKING:
    from ..service.reads import CpuReads


class CpuEnergy:
    group = ops.CPU_READ

    def __init__(self, reads: CpuReads) -> None:
        self.reads = reads

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, ("cpu_ids", "cpu", "dram"), ("cpu", "dram"))
        cpu_ids = parse_id_list(params["cpu_ids"], "cpu") if "cpu_ids" in params else None
        cpu, dram = parse_bool(params["cpu"]), parse_bool(params["dram"])
        send_json(resp, self.reads.cumulative_energy(caller_of(req), cpu_ids, cpu, dram))


class CpuPower:
    group = ops.CPU_READ

    def __init__(self, reads: CpuReads) -> None:
        self.reads = reads

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, ("cpu_ids",), ())
        cpu_ids = parse_id_list(params["cpu_ids"], "cpu") if "cpu_ids" in params else None
        send_json(resp, self.reads.power(caller_of(req), cpu_ids))


class LegacyCpuDram:
    """GET /cpu/{cpu_id}/supports_dram_energy"""

    group = ops.CPU_READ
    legacy_errors = True

    def __init__(self, reads: CpuReads) -> None:
        self.reads = reads

    def on_get(self, req, resp, cpu_id: int) -> None:
        available = self.reads.dram_available(caller_of(req), path_index(cpu_id, "cpu"))
        send_json(resp, {"dram_available": available})


class LegacyCpuEnergy:
    """POST /cpu/{cpu_id}/get_index_energy with {"cpu": bool, "dram": bool}"""

    group = ops.CPU_READ
    legacy_errors = True

    def __init__(self, reads: CpuReads) -> None:
        self.reads = reads

    def on_post(self, req, resp, cpu_id: int) -> None:
        cpu_id = path_index(cpu_id, "cpu")
        body = parse_json_body(req.bounded_stream.read(), {"cpu": bool, "dram": bool})
        send_json(resp, self.reads.index_energy(caller_of(req), cpu_id, body["cpu"],
                                                body["dram"]))


def add_routes(app, reads: CpuReads) -> None:
    app.add_route("/cpu/get_cumulative_energy", CpuEnergy(reads))
    app.add_route("/cpu/get_power", CpuPower(reads))
    app.add_route("/cpu/{cpu_id:index}/supports_dram_energy", LegacyCpuDram(reads))
    app.add_route("/cpu/{cpu_id:index}/get_index_energy", LegacyCpuEnergy(reads))
