"""Query-style CPU (RAPL) routes and the legacy CPU routes of zeus-ml 0.11+."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .. import operations as ops
from .params import optional_ids, parse_bool, parse_json_body, parse_query, path_index
from .respond import Answer, caller_of, json_answer, send_json

if TYPE_CHECKING:
    from ..service.reads import CpuReads


class CpuEnergy:
    group = ops.CPU_READ

    def __init__(self, reads: CpuReads) -> None:
        self.reads = reads

    def prepare(self, query_string: str):
        """Parse the query (400 if it is bad): a call ``(caller, environ) -> Answer``."""
        params = parse_query(query_string, ("cpu_ids", "cpu", "dram"), ("cpu", "dram"))
        cpu, dram = parse_bool(params["cpu"]), parse_bool(params["dram"])
        return functools.partial(self.answer, optional_ids(params, "cpu"), cpu, dram)

    def answer(self, cpu_ids, cpu: bool, dram: bool, caller, environ) -> Answer:
        return json_answer(self.reads.cumulative_energy(caller, cpu_ids, cpu, dram))

    def on_get(self, req, resp) -> None:
        self.prepare(req.query_string)(caller_of(req), req.env).to_falcon(resp)


class CpuPower:
    group = ops.CPU_READ

    def __init__(self, reads: CpuReads) -> None:
        self.reads = reads

    def prepare(self, query_string: str):
        """Parse the query (400 if it is bad): a call ``(caller, environ) -> Answer``."""
        params = parse_query(query_string, ("cpu_ids",), ())
        return functools.partial(self.answer, optional_ids(params, "cpu"))

    def answer(self, cpu_ids, caller, environ) -> Answer:
        return json_answer(self.reads.power(caller, cpu_ids))

    def on_get(self, req, resp) -> None:
        self.prepare(req.query_string)(caller_of(req), req.env).to_falcon(resp)


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
