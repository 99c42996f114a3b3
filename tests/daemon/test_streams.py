"""SSE power streams against the real daemon (docs/api.md "Power streams", upstream 5.2's stream tests)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from tests.support.checks import assert_error, assert_json
from tests.support.client import UnixHTTPConnection
from tests.support.daemon import env_with_repo
from tests.support.rapl import FakeRapl
from tests.support.users import requests_as

EVENT = re.compile(rb"^data: (\{[^\n]*\})\n\n$")
NUM_WORKERS = 4  # stream cap: max(1, 4 - 2) = 2


class Stream:
    """One open SSE response on its own connection; ``chunks()`` reads as they arrive."""

    def __init__(self, zd, path: str, timeout: float = 10.0) -> None:
        self.conn = UnixHTTPConnection(zd.socket_path, timeout=timeout)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.buffer = b""

    def body(self) -> bytes:
        return self.resp.read()

    def chunk(self) -> bytes:
        """The next SSE block (event or comment), ``\\n\\n`` included."""
        while b"\n\n" not in self.buffer:
            data = self.resp.read1(65536)
            if not data:
                raise EOFError(f"stream ended; unread {self.buffer!r}")
            self.buffer += data
        block, _, self.buffer = self.buffer.partition(b"\n\n")
        return block + b"\n\n"

    def event(self) -> dict:
        """The next data event, skipping keepalive comments."""
        while True:
            block = self.chunk()
            if not block.startswith(b":"):
                match = EVENT.match(block)
                assert match, block
                return json.loads(match.group(1))

    def close(self) -> None:
        self.resp.close()  # the response's file holds the socket open too
        self.conn.close()


@pytest.fixture(scope="module")
def zd(start_zeusd, tmp_path_factory):
    rapl = FakeRapl(tmp_path_factory.mktemp("rapl"), dram=(True, False))
    return start_zeusd(rapl=rapl, enable="gpu-read,cpu-read", policy_text=NOBODY_POLICY,
                       args=("--num-workers", str(NUM_WORKERS)))


NOBODY_POLICY = """\
version = 1

[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "no-read-3"
users = ["nobody"]
gpus = [3]
operations = []
"""


@pytest.fixture
def streams():
    opened: list[Stream] = []

    def open_stream(zd, path: str) -> Stream:
        stream = open_when_free(zd, path)  # the previous test's streams may still be closing
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def open_when_free(zd, path: str, deadline_s: float = 10.0) -> Stream:
    """Open a stream, retrying while the cap still counts a stream that is going away."""
    deadline = time.monotonic() + deadline_s
    while True:
        stream = Stream(zd, path)
        if stream.status == 200 or time.monotonic() > deadline:
            return stream
        stream.body()
        stream.close()
        time.sleep(0.1)


def test_gpu_power_stream_receives_events(zd, streams):
    stream = streams(zd, "/gpu/stream_power?gpu_ids=0")
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-cache"
    first = stream.chunk()
    match = EVENT.match(first)
    assert match, first
    event = json.loads(match.group(1))
    assert set(event) == {"timestamp_ms", "gpu_id", "power_mw"}
    assert event["gpu_id"] == 0
    assert isinstance(event["power_mw"], int) and 0 < event["power_mw"] <= 700_000
    assert isinstance(event["timestamp_ms"], int)
    assert abs(event["timestamp_ms"] / 1000 - time.time()) < 10


def test_first_event_is_flushed_before_the_next_request(zd, streams):
    """The first event arrives while the connection stays open (no 18 KB send buffer)."""
    stream = streams(zd, "/gpu/stream_power?gpu_ids=1")
    assert stream.event()["gpu_id"] == 1
    assert stream.event()["gpu_id"] == 1  # and the stream keeps going


def test_stream_polls_only_the_subscribed_gpus(zd, streams):
    stream = streams(zd, "/gpu/stream_power?gpu_ids=1,2")
    seen = {stream.event()["gpu_id"] for _ in range(12)}
    assert seen == {1, 2}


def test_stream_without_ids_follows_every_gpu(zd, streams):
    stream = streams(zd, "/gpu/stream_power")
    seen: set[int] = set()
    deadline = time.monotonic() + 5
    while seen != {0, 1, 2, 3} and time.monotonic() < deadline:
        seen.add(stream.event()["gpu_id"])
    assert seen == {0, 1, 2, 3}


def test_cpu_power_stream_receives_events(zd, streams):
    stream = streams(zd, "/cpu/stream_power")
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream"
    events = {}
    while len(events) < 2:
        event = stream.event()
        events[event["cpu_id"]] = event
    assert set(events[0]) == {"timestamp_ms", "cpu_id", "cpu_mw", "dram_mw"}
    assert isinstance(events[0]["cpu_mw"], int) and isinstance(events[0]["dram_mw"], int)
    assert events[1]["dram_mw"] is None  # package 1 has no DRAM domain


def test_cpu_power_comes_from_energy_deltas(zd, streams):
    stream = streams(zd, "/cpu/stream_power?cpu_ids=0")
    assert stream.event()["cpu_id"] == 0
    counter = 10_000_000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counter += 5_000  # 5 mJ per write: a few W at 10 Hz
        zd.rapl.set(0, cpu_uj=counter)
        event = stream.event()
        if event["cpu_mw"] > 0:
            break
    assert event["cpu_mw"] > 0


def test_snapshot_shape(zd, streams):
    gpu = streams(zd, "/gpu/stream_power?gpu_ids=0,1&snapshot=true")
    event = gpu.event()
    assert set(event) == {"timestamp_ms", "power_mw"}
    assert set(event["power_mw"]) <= {"0", "1"} and event["power_mw"]
    assert all(isinstance(v, int) for v in event["power_mw"].values())
    cpu = streams(zd, "/cpu/stream_power?snapshot=true")
    snapshot = {}
    while set(snapshot) != {"0", "1"}:
        snapshot = cpu.event()["power_mw"]
    assert set(snapshot["0"]) == {"cpu_mw", "dram_mw"} and snapshot["1"]["dram_mw"] is None


@pytest.mark.parametrize("path,message", [
    ("/gpu/stream_power?gpu_ids=7", "Unknown GPU indices: [7]. Available: [0, 1, 2, 3]"),
    ("/gpu/stream_power?gpu_ids=0,5,9", "Unknown GPU indices: [5, 9]. Available: [0, 1, 2, 3]"),
    ("/cpu/stream_power?cpu_ids=2", "Unknown CPU indices: [2]. Available: [0, 1]"),
    ("/gpu/stream_power?gpu_ids=", "gpu_ids must contain at least one GPU index"),
    ("/gpu/stream_power?gpu_ids=x", "Invalid GPU index: x"),
    ("/cpu/stream_power?cpu_ids=0,,1", "cpu_ids contains an empty CPU index"),
    ("/gpu/stream_power?snapshot=yes",
     "Query deserialize error: provided string was not `true` or `false`"),
    ("/gpu/stream_power?cpu_ids=0",
     "Query deserialize error: unknown field `cpu_ids`, expected one of `gpu_ids`, `snapshot`"),
])
def test_bad_requests(zd, path, message):
    assert_error(zd.get(path), 400, message)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to ask as another user")
def test_policy_applies_to_streamed_gpus(zd):
    replies = requests_as("nobody", zd.address, [("GET", "/gpu/stream_power?gpu_ids=3"),
                                                  ("GET", "/gpu/stream_power?gpu_ids=0,3")])
    for reply in replies:
        assert reply["status"] == 403, reply
        assert "no-read-3" in reply["body"] or "GPU 3" in reply["body"], reply


def test_disabled_groups_are_404(start_zeusd):
    control_only = start_zeusd(enable="gpu-control")
    assert_error(control_only.get("/gpu/stream_power"), 404,
                 "API group 'gpu-read' is not enabled on this server.")
    assert_error(control_only.get("/cpu/stream_power"), 404,
                 "API group 'cpu-read' is not enabled on this server.")


def test_stream_cap_leaves_workers_for_other_requests(zd, streams):
    first = streams(zd, "/gpu/stream_power?gpu_ids=0")
    second = streams(zd, "/gpu/stream_power?gpu_ids=1")
    assert (first.status, second.status) == (200, 200)
    third = Stream(zd, "/gpu/stream_power?gpu_ids=2")
    assert third.status == 429
    assert json.loads(third.body()) == {
        "error": "Too many open power streams (2); close one or retry later."}
    third.close()
    power = assert_json(zd.get("/gpu/get_power?gpu_ids=3"), 200)
    assert set(power["power_mw"]) == {"3"}
    first.event(), second.event()  # both streams still flow
    second.close()
    fourth = open_when_free(zd, "/gpu/stream_power?gpu_ids=2")
    assert fourth.status == 200  # the disconnected client released its slot
    assert fourth.event()["gpu_id"] == 2
    fourth.close()


def test_idle_stream_carries_keepalive_comments(start_zeusd, tmp_path):
    rapl = FakeRapl(tmp_path / "rapl")  # counters never move: power stays flat at 0
    daemon = start_zeusd(rapl=rapl, enable="cpu-read",
                         env={**env_with_repo(), "ZEUSD_STREAM_KEEPALIVE_S": "0.3"})
    stream = Stream(daemon, "/cpu/stream_power")
    try:
        assert EVENT.match(stream.chunk())  # the current value first
        assert stream.chunk() == b": keepalive\n\n"
        assert stream.chunk() == b": keepalive\n\n"
    finally:
        stream.close()


def test_sigterm_ends_open_streams(start_zeusd):
    daemon = start_zeusd()
    opened = [Stream(daemon, f"/gpu/stream_power?gpu_ids={i}") for i in (0, 1)]
    for stream in opened:
        stream.event()
    start = time.monotonic()
    code = daemon.daemon.stop(timeout_s=10)
    elapsed = time.monotonic() - start
    assert code == 0, daemon.log()
    assert elapsed < 4, f"took {elapsed:.1f} s: waitress waited for the stream threads"
    for stream in opened:
        with pytest.raises((EOFError, OSError)):
            while True:
                stream.chunk()
        stream.close()
