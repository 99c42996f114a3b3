"""Query-style CPU (RAPL) routes and the legacy CPU routes of zeus-ml 0.11+."""

from __future__ import annotations

from .. import operations as ops
from ..errors import BadRequest, ZeusdError
from .params import parse_bool, parse_id_list, parse_json_body, parse_query, path_index
from .respond import LegacyError, caller_of, send_json


class CpuEnergy:
    group = ops.CPU_READ

    def __init__(self, reads) -> None:
        self.reads = reads

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, ("cpu_ids", "cpu", "dram"), ("cpu", "dram"))
        cpu_ids = parse_id_list(params["cpu_ids"], "cpu") if "cpu_ids" in params else None
        cpu, dram = parse_bool(params["cpu"]), parse_bool(params["dram"])
        send_json(resp, self.reads.cumulative_energy(caller_of(req), cpu_ids, cpu, dram))


class CpuPower:
    group = ops.CPU_READ

    def __init__(self, reads) -> None:
        self.reads = reads

    def on_get(self, req, resp) -> None:
        params = parse_query(req.query_string, ("cpu_ids",), ())
        cpu_ids = parse_id_list(params["cpu_ids"], "cpu") if "cpu_ids" in params else None
        send_json(resp, self.reads.power(caller_of(req), cpu_ids))


class LegacyCpuDram:
    """GET /cpu/{cpu_id}/supports_dram_energy"""

    group = ops.CPU_READ

    def __init__(self, reads) -> None:
        self.reads = reads

    def on_get(self, req, resp, cpu_id: int) -> None:
        try:
            cpu_id = path_index(cpu_id, "cpu")
            self.reads.gate.allowed(caller_of(req), [cpu_id], [c.index for c in self.reads.cpus],
                                    gpu_scoped=False)
            if cpu_id >= len(self.reads.cpus):
                raise BadRequest(f"CPU index {cpu_id} does not exist.")
        except ZeusdError as exc:
            raise LegacyError(exc) from None
        send_json(resp, {"dram_available": self.reads.cpus[cpu_id].dram_available})


class LegacyCpuEnergy:
    """POST /cpu/{cpu_id}/get_index_energy with {"cpu": bool, "dram": bool}"""

    group = ops.CPU_READ

    def __init__(self, reads) -> None:
        self.reads = reads

    def on_post(self, req, resp, cpu_id: int) -> None:
        try:
            cpu_id = path_index(cpu_id, "cpu")
            body = parse_json_body(req.bounded_stream.read(), {"cpu": bool, "dram": bool})
            if cpu_id >= len(self.reads.cpus):
                raise BadRequest(f"CPU index {cpu_id} does not exist.")
            result = self.reads.cumulative_energy(caller_of(req), [cpu_id], body["cpu"],
                                                  body["dram"])
        except ZeusdError as exc:
            raise LegacyError(exc) from None
        send_json(resp, result[str(cpu_id)])


def add_routes(app, reads) -> None:
    app.add_route("/cpu/get_cumulative_energy", CpuEnergy(reads))
    app.add_route("/cpu/get_power", CpuPower(reads))
    app.add_route("/cpu/{cpu_id:index}/supports_dram_energy", LegacyCpuDram(reads))
    app.add_route("/cpu/{cpu_id:index}/get_index_energy", LegacyCpuEnergy(reads))
