"""The fast lane answers exactly as Falcon does. Two daemons' apps over real services
(simulated H200s, a real policy, the real auditor), one with the fast lane and one serving
everything through Falcon, get the same requests from the same callers; every answer
(status, headers, body), every audit record and the GPUs' state must be the same.
Then what only the fast lane does: it keeps one parsed plan per query, bounded."""

from __future__ import annotations

import io
import json
import sys

import falcon
import pytest

from zeusd.api import fast_lane
from zeusd.api.fast_lane import FastLane
from zeusd.api.respond import Answer
from zeusd.audit import Auditor
from zeusd.cli import build_parser
from zeusd.config import serve_config
from zeusd.daemon import build_services
from zeusd.identity import ENVIRON_KEY, UNKNOWN_UNIX, Caller
from zeusd.policy import PolicyStore

POLICY = """version = 1
[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "tuners"
users = [1001]
gpus = [0, 1]
operations = ["set_power_limit", "set_persistence_mode", "set_gpu_locked_clocks",
              "reset_gpu_locked_clocks", "gpu-read", "cpu-read"]
power_limit_w = [300, 600]
restore_on_exit = false
"""
ROOT = Caller(transport="unix", pid=1, uid=0, gid=0, groups=(0,), start_time_ticks=1)
ALICE = Caller(transport="unix", pid=4242, uid=1001, gid=1001, groups=(1001,),
               start_time_ticks=7)
BOB = Caller(transport="unix", pid=4343, uid=1002, gid=1002, groups=(1002,),
             start_time_ticks=9)
SET = "/gpu/set_power_limit?gpu_ids={}&power_limit_mw={}&block={}"
# (caller, method, path with query, JSON body or None): valid, denied and malformed requests.
CORPUS = [
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=0", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=1,0,1", None),
    (ALICE, "GET", "/gpu/get_power_limit", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=9", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=a", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=0&gpu_ids=1", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpus=0", None),
    (ALICE, "GET", "/gpu/get_power_limit?gpu_ids=0%2C1", None),
    (ALICE, "GET", "/gpu/get_power?gpu_ids=0", None),
    (ALICE, "GET", "/gpu/get_cumulative_energy?gpu_ids=0,1", None),
    (ALICE, "GET", "/gpu/get_power_limit_constraints?gpu_ids=0", None),
    (ALICE, "GET", "/gpu/get_persistence_mode", None),
    (ALICE, "GET", "/gpu/get_supported_clocks?gpu_ids=0", None),
    (UNKNOWN_UNIX, "GET", "/gpu/get_power_limit?gpu_ids=0", None),
    (ALICE, "HEAD", "/gpu/get_power_limit?gpu_ids=0", None),
    (ALICE, "POST", "/gpu/get_power_limit?gpu_ids=0", None),
    (ALICE, "GET", "/gpu/get_power_limit/", None),
    (ALICE, "POST", SET.format(0, 400000, "true"), None),
    (ALICE, "POST", SET.format(0, 400000, "true"), None),
    (ALICE, "POST", SET.format("0,1", 450000, "true"), None),
    (ALICE, "POST", SET.format(0, 700000, "true"), None),  # above the rule's range: 403
    (ALICE, "POST", SET.format(0, 5000, "true"), None),  # under the GPU's minimum: 400
    (ALICE, "POST", SET.format(2, 400000, "true"), None),  # no rule for GPU 2: 403
    (ALICE, "POST", SET.format(7, 400000, "true"), None),  # no GPU 7: 400
    (ALICE, "POST", SET.format(0, 400000, "maybe"), None),
    (ALICE, "POST", SET.format(0, "4e5", "true"), None),
    (ALICE, "POST", SET.format(0, 99999999999, "true"), None),
    (ALICE, "POST", "/gpu/set_power_limit?gpu_ids=0&block=true", None),
    (ALICE, "POST", SET.format(1, 500000, "false"), None),
    (ALICE, "GET", SET.format(0, 400000, "true"), None),
    (BOB, "POST", SET.format(0, 400000, "true"), None),
    (UNKNOWN_UNIX, "POST", SET.format(0, 400000, "true"), None),
    (ROOT, "POST", SET.format(3, 650000, "true"), None),
    (ALICE, "POST", "/gpu/set_persistence_mode?gpu_ids=0&enabled=true&block=true", None),
    (ALICE, "POST", "/gpu/set_gpu_locked_clocks?gpu_ids=0&min_clock_mhz=1000"
                    "&max_clock_mhz=1500&block=true", None),
    (ALICE, "POST", "/gpu/set_gpu_locked_clocks?gpu_ids=0&min_clock_mhz=1500"
                    "&max_clock_mhz=1000&block=true", None),
    (ALICE, "POST", "/gpu/reset_gpu_locked_clocks?gpu_ids=0&block=true", None),
    (ALICE, "POST", "/gpu/set_mem_locked_clocks?gpu_ids=0&min_clock_mhz=1000"
                    "&max_clock_mhz=1500&block=true", None),
    (ALICE, "POST", "/gpu/0/set_power_limit", {"power_limit_mw": 420000, "block": True}),
    (ALICE, "GET", "/cpu/get_cumulative_energy?cpu=true&dram=false", None),
    (ALICE, "GET", "/cpu/get_cumulative_energy?cpu=yes&dram=false", None),
    (ALICE, "GET", "/cpu/get_power", None),
    (ALICE, "GET", "/cpu/get_power?cpu_ids=5", None),
    (ALICE, "GET", "/metrics", None),
    (ALICE, "GET", "/nowhere?gpu_ids=0", None),
]


class Stack:
    """zeusd's app over real services on 4 simulated H200s, its audit records in a file."""

    def __init__(self, tmp_path, name: str, fast: bool, groups: str) -> None:
        home = tmp_path / name
        home.mkdir()
        self.home = str(home).encode()
        policy = home / "policy.toml"  # the same path for both: denials quote it
        policy.write_text(POLICY)
        args = build_parser().parse_args(
            ["serve", "--gpu-backend", "simulated", "--simulated-gpus", "h200x4",
             "--cpu-backend", "simulated", "--socket-path", str(home / "zeusd.sock"),
             "--policy", str(policy), "--enable", groups])
        config = serve_config(args)
        self.audit = open(tmp_path / f"{name}.audit", "w+")
        auditor = Auditor(use_journal=False, stream=self.audit)
        services, _ = build_services(config, PolicyStore(config.policy_path, auditor=auditor),
                                     auditor)
        self.services = services
        self.app = services.create_app(config.enabled_groups, fast_lane=fast)

    def call(self, caller, method: str, target: str, body) -> tuple:
        path, _, query = target.partition("?")
        data = json.dumps(body).encode() if body is not None else b""
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "SERVER_NAME": "localhost", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr,
                   "wsgi.multithread": True, "wsgi.multiprocess": False,
                   "wsgi.run_once": False, "wsgi.version": (1, 0), "SCRIPT_NAME": "",
                   "CONTENT_LENGTH": str(len(data)), "HTTP_HOST": "localhost",
                   ENVIRON_KEY: caller}
        if body is not None:
            environ["CONTENT_TYPE"] = "application/json"
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers

        chunks = b"".join(self.app(environ, start_response))
        body_bytes = (b"" if method == "HEAD" else chunks).replace(self.home, b"HOME")
        # waitress capitalizes header names and sends them sorted: order is not on the wire
        headers = sorted((k.lower(), v) for k, v in started["headers"])
        return started["status"], headers, body_bytes

    def audit_records(self) -> list[str]:
        self.audit.flush()
        self.audit.seek(0)
        return self.audit.read().replace(self.home.decode(), "HOME").splitlines()

    def gpu_state(self) -> list:
        manager = self.services.manager
        return [manager.run_one(i, lambda d: (d.get_power_limit_mw(), d.get_persistence_mode()),
                                "test: state") for i in manager.indices]


@pytest.mark.parametrize("groups", ["gpu-control,gpu-read,cpu-read,metrics", "gpu-read"])
def test_same_answers_records_and_gpus_as_falcon(tmp_path, groups):
    # names of one length: a denial quotes the policy's path, the bodies are compared
    fast, falcon = Stack(tmp_path, "fast", True, groups), Stack(tmp_path, "slow", False, groups)
    assert isinstance(fast.app, FastLane) and not isinstance(falcon.app, FastLane)
    for caller, method, target, body in CORPUS * 2:  # twice: the second time from plans
        got, want = fast.call(caller, method, target, body), falcon.call(caller, method,
                                                                          target, body)
        if any(part in target for part in MEASURED):  # the values move on between calls
            assert _shape(got) == _shape(want), (method, target)
        else:
            assert got == want, (caller.uid, method, target)
        assert fast.gpu_state() == falcon.gpu_state(), target
    # sorted: a write to GPUs 0 and 1 runs on both at once, its two records in either order
    assert sorted(fast.audit_records()) == sorted(falcon.audit_records())
    if "gpu-control" in groups:
        assert any("ZEUSD_DECISION=deny" in r or "decision=deny" in r
                   for r in fast.audit_records())
        assert any("applied" in r for r in fast.audit_records())
    assert fast.app.plans, "the fast lane kept no plan"
    if "metrics" in groups:  # /metrics counts each request under the same labels
        assert fast.services.metrics_service.requests.snapshot() == \
            falcon.services.metrics_service.requests.snapshot()


class Counting:
    """A resource whose parsing is counted; its answer says which caller it served."""

    group = "gpu-read"

    def __init__(self) -> None:
        self.parsed: list[str] = []

    def prepare(self, query_string: str):
        self.parsed.append(query_string)
        if query_string == "bad":
            raise ValueError("unparsable")
        return lambda caller, environ: Answer(str(caller.uid).encode())

    def on_get(self, req, resp) -> None:
        resp.data = b"falcon"

    on_put = on_get


def _lane() -> tuple[FastLane, Counting]:
    resource = Counting()
    app = falcon.App()
    app.add_route("/r", resource)
    return FastLane(app, {("GET", "/r"): resource}), resource


def _get(lane, query: str, caller=ALICE, method: str = "GET") -> bytes:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/r", "QUERY_STRING": query,
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
               ENVIRON_KEY: caller}
    return b"".join(lane(environ, lambda status, headers, exc_info=None: None))


def test_a_query_is_parsed_once_and_its_plan_serves_every_caller():
    lane, resource = _lane()
    assert [_get(lane, "x=1"), _get(lane, "x=1", BOB), _get(lane, "x=1")] == \
        [b"1001", b"1002", b"1001"]
    assert resource.parsed == ["x=1"]


def test_what_does_not_parse_or_match_goes_to_falcon_and_is_not_kept():
    lane, resource = _lane()
    assert _get(lane, "bad") == b"falcon"  # Falcon parses it again and answers its error
    assert _get(lane, "x=1", method="PUT") == b"falcon"  # a method it has no plan for
    assert resource.parsed == ["bad"] and lane.plans == {}


def test_kept_plans_are_bounded(monkeypatch):
    """A caller sending ever new queries cannot grow the daemon's memory: past the bound,
    and for long queries, a plan serves its request and is not kept."""
    monkeypatch.setattr(fast_lane, "MAX_PLANS", 3)
    lane, resource = _lane()
    for i in range(10):
        assert _get(lane, f"x={i}") == b"1001"
    long_query = "x=" + "1" * fast_lane.MAX_KEPT_QUERY_CHARS
    lane.plans.clear()
    assert _get(lane, long_query) == b"1001" and _get(lane, long_query) == b"1001"
    assert lane.plans == {} and resource.parsed.count(long_query) == 2
    for i in range(10):
        _get(lane, f"x={i}")
    assert len(lane.plans) == 3


def test_no_fast_lane_when_tokens_are_on(tmp_path):
    """With a signing key every request passes Falcon's gate, which reads the token."""
    from zeusd.api.app import create_app

    stack = Stack(tmp_path, "keyed", True, "gpu-read")
    services = stack.services
    kwargs = dict(enabled_groups=frozenset({"gpu-read"}), discovery=services.discovery,
                  gpu_control=services.gpu_control, gpu_reads=services.gpu_reads,
                  cpu_reads=services.cpu_reads)
    assert isinstance(create_app(signing_key=None, **kwargs), FastLane)
    assert isinstance(create_app(signing_key=b"k" * 32, **kwargs), falcon.App)


MEASURED = ("/get_power?", "/get_power_limit_constraints", "energy", "/cpu/get_power",
            "/metrics")


def _shape(answer: tuple) -> tuple:
    """Status, headers but the length, and the body's keys (measured values differ)."""
    status, headers, body = answer
    kept = [h for h in headers if h[0] != "content-length"]
    if not body.startswith(b"{"):
        return status, kept, body.splitlines()[:1]

    def keys(value):
        return {k: keys(v) for k, v in value.items()} if isinstance(value, dict) else None
    return status, kept, keys(json.loads(body))
