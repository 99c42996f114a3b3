"""HEAD on every GET route of the real daemon: GET's status and headers, no body."""

from __future__ import annotations

import pytest

from zeusd.api import cpu, gpu, legacy, meta, metrics, streams

# Every GET route, with a query that answers 200 (a GET of each is checked first).
GET_ROUTES = [
    "/discover", "/time", "/gpu/get_power", "/gpu/get_cumulative_energy?gpu_ids=0",
    "/gpu/get_power_limit", "/gpu/get_power_limit_constraints?gpu_ids=1,2",
    "/gpu/get_persistence_mode", "/gpu/get_supported_clocks?gpu_ids=0",
    "/cpu/get_cumulative_energy?cpu=true&dram=true", "/cpu/get_power",
    "/cpu/0/supports_dram_energy",
    "/metrics",
]
STREAMS = ["/gpu/stream_power", "/cpu/stream_power?cpu_ids=0"]
# Headers whose value may differ between two answers a moment apart.
VOLATILE = {"date", "content-length"}


@pytest.fixture(scope="module")
def daemon(start_zeusd):
    return start_zeusd(rapl=True, enable="gpu-control,gpu-read,cpu-read,metrics")


def test_every_get_route_is_listed():
    """A new GET route must be added above (HEAD is then checked for it too)."""
    routes = set()

    class Recorder:
        def add_route(self, template, resource, **kw):
            if hasattr(resource, "on_get"):
                routes.add(template)

    recorder = Recorder()
    meta.add_routes(recorder, None)
    gpu.add_routes(recorder, None, _Reads())
    legacy.add_routes(recorder, None)
    cpu.add_routes(recorder, None)
    streams.add_routes(recorder, None)
    metrics.add_routes(recorder, None)
    listed = {path.split("?")[0].replace("/0/", "/{cpu_id:index}/")
              for path in GET_ROUTES + STREAMS}
    assert routes - {"/auth/whoami"} == listed  # whoami: checked in test_head_keeps_gets_errors


class _Reads:
    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_like_get_without_a_body(daemon, path):
    client = daemon.client()
    got = client.get(path)
    assert got.status == 200, got.body
    head = client.request("HEAD", path)
    assert head.status == 200
    assert head.body == b""
    same = {k: v for k, v in got.headers.items() if k not in VOLATILE}
    assert {k: v for k, v in head.headers.items() if k not in VOLATILE} == same
    assert int(head.headers["content-length"]) > 0
    assert client.get("/time").status == 200  # the connection is still usable after HEAD


@pytest.mark.parametrize("path", STREAMS)
def test_head_on_a_stream_answers_its_headers_and_ends(daemon, path):
    """A GET would stream forever: HEAD gets the stream's headers and the answer ends."""
    client = daemon.client()
    head = client.request("HEAD", path)
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-type"] == "text/event-stream"
    assert head.headers["cache-control"] == "no-cache"
    assert client.get("/time").status == 200  # the same connection serves the next request


def test_head_content_length_is_gets_for_a_fixed_body(daemon):
    client = daemon.client()
    got = client.get("/gpu/get_power_limit")
    head = client.request("HEAD", "/gpu/get_power_limit")
    assert head.headers["content-length"] == str(len(got.body))


def test_head_keeps_gets_errors(daemon):
    client = daemon.client()
    for path, status in (("/gpu/get_power_limit?gpu_ids=9", 400),
                         ("/gpu/get_power?bogus=1", 400),
                         ("/auth/whoami", 404), ("/gpu/stream_power?gpu_ids=9", 400),
                         ("/cpu/stream_power?snapshot=maybe", 400)):
        got = client.get(path)
        head = client.request("HEAD", path)
        assert (head.status, head.body) == (status, b""), path
        assert got.status == status, path
        assert head.headers["content-length"] == str(len(got.body)), path


def test_head_on_a_stream_holds_no_stream_slot(daemon):
    """Each HEAD gives its slot back at once: more HEADs than the per-caller stream cap pass."""
    client = daemon.client()
    for _ in range(40):
        assert client.request("HEAD", "/gpu/stream_power").status == 200
    assert client.get("/gpu/get_power").status == 200


def test_post_routes_still_refuse_head(daemon):
    reply = daemon.client().request("HEAD", "/gpu/set_power_limit?gpu_ids=0&power_limit_mw=300000&block=true")
    assert reply.status == 405
