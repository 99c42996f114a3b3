"""HEAD on every GET route of the real daemon: GET's status and headers, no body."""

from __future__ import annotations

from importlib.metadata import version

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
# waitress before 3.0 closes the connection after any HEAD answer that has a Content-Length
# (it counts the missing body as "too few bytes"); from 3.0 the connection stays open.
KEEPS_CONNECTION = int(version("waitress").split(".")[0]) >= 3


def head(daemon, path: str):
    """A HEAD on its own connection (see KEEPS_CONNECTION)."""
    client = daemon.client()
    try:
        return client.request("HEAD", path)
    finally:
        client.close()


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
    got = daemon.get(path)
    assert got.status == 200, got.body
    answer = head(daemon, path)
    assert (answer.status, answer.body) == (200, b"")
    same = {k: v for k, v in got.headers.items() if k not in VOLATILE}
    assert {k: v for k, v in answer.headers.items() if k not in VOLATILE} == same
    assert int(answer.headers["content-length"]) > 0


@pytest.mark.skipif(not KEEPS_CONNECTION, reason="waitress < 3 closes it after a HEAD")
def test_keep_alive_survives_head(daemon):
    client = daemon.client()
    assert client.request("HEAD", "/gpu/get_power_limit").status == 200
    assert client.get("/time").status == 200
    assert client.request("HEAD", "/gpu/stream_power").status == 200
    assert client.get("/time").status == 200


@pytest.mark.parametrize("path", STREAMS)
def test_head_on_a_stream_answers_its_headers_and_ends(daemon, path):
    """A GET would stream forever: HEAD gets the stream's headers and the answer ends."""
    answer = head(daemon, path)
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.headers["cache-control"] == "no-cache"


def test_head_content_length_is_gets_for_a_fixed_body(daemon):
    got = daemon.get("/gpu/get_power_limit")
    assert head(daemon, "/gpu/get_power_limit").headers["content-length"] == str(len(got.body))


def test_head_keeps_gets_errors(daemon):
    for path, status in (("/gpu/get_power_limit?gpu_ids=9", 400),
                         ("/gpu/get_power?bogus=1", 400),
                         ("/auth/whoami", 404), ("/gpu/stream_power?gpu_ids=9", 400),
                         ("/cpu/stream_power?snapshot=maybe", 400)):
        got = daemon.get(path)
        answer = head(daemon, path)
        assert (answer.status, answer.body) == (status, b""), path
        assert got.status == status, path
        assert answer.headers["content-length"] == str(len(got.body)), path


def test_head_on_a_stream_holds_no_stream_slot(daemon):
    """Each HEAD gives its slot back at once: more HEADs than the per-caller stream cap pass."""
    for _ in range(40):
        assert head(daemon, "/gpu/stream_power").status == 200
    assert daemon.get("/gpu/get_power").status == 200


def test_post_routes_still_refuse_head(daemon):
    assert head(daemon, "/gpu/set_power_limit?gpu_ids=0&power_limit_mw=300000&block=true"
                ).status == 405
