"""Bodies are refused by size before they are read, and Expect: 100-continue never hangs."""

from __future__ import annotations

import pytest

from tests.support.hostile import Attacker, body_of, status_of
from tests.support.users import needs_real_users

pytestmark = needs_real_users

CAP = 16384
TOO_LARGE = {"error": f"Request body too large: zeusd accepts at most {CAP} bytes; the request "
                      "was not processed."}
LEGACY = (
    "POST /gpu/0/set_power_limit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    "Content-Type: application/json\r\n")


@pytest.fixture(scope="module")
def zd(start_zeusd):
    return start_zeusd()


@pytest.fixture(scope="module")
def mallory(accounts, zd):
    attacker = Attacker(accounts.user("mal"), zd.socket_path)
    yield attacker
    attacker.close()


def answers(attacker, group, data, wait_s=10):
    attacker.call("open", name=group, n=1, send=data)
    reply = attacker.call("replies", name=group, wait_s=wait_s)["replies"][0]
    attacker.call("close", name=group)
    return reply


def test_a_huge_content_length_is_refused_before_any_body_byte(zd, mallory):
    mark = zd.gpus.mark()
    reply = answers(mallory, "huge", LEGACY + "Content-Length: 1073741824\r\n\r\n")
    assert status_of(reply["data"]) == 413 and reply["eof"]
    assert body_of(reply["data"]) == TOO_LARGE
    assert zd.gpus.since(mark) == []


def test_a_chunked_body_is_counted_as_it_arrives(zd, mallory):
    mark = zd.gpus.mark()
    chunk = "4000\r\n" + "[" * 0x4000 + "\r\n"
    reply = answers(mallory, "chunked", LEGACY + "Transfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    assert status_of(reply["data"]) == 413
    assert body_of(reply["data"]) == TOO_LARGE
    assert zd.gpus.since(mark) == []


def test_a_body_at_the_cap_is_read_and_decided(zd, mallory):
    mark = zd.gpus.mark()
    body = '{"power_limit_mw": 300000, "block": true}'.ljust(CAP)
    reply = answers(mallory, "at-cap", LEGACY + f"Content-Length: {CAP}\r\n\r\n" + body)
    assert status_of(reply["data"]) == 403  # the built-in policy: only root changes GPUs
    assert zd.gpus.since(mark) == []


def test_expect_continue_on_a_bodiless_request_is_answered(mallory):
    reply = answers(mallory, "expect-get",
                    "GET /time HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n")
    assert status_of(reply["data"]) == 200
    assert "timestamp_ms" in body_of(reply["data"])


def test_expect_continue_with_a_body_within_the_cap_proceeds(zd, mallory):
    mark = zd.gpus.mark()
    body = '{"power_limit_mw": 300000, "block": true}'
    mallory.call("open", name="expect", n=1, send=LEGACY + f"Content-Length: {len(body)}\r\n"
                 "Expect: 100-continue\r\n\r\n")
    first = mallory.call("replies", name="expect", wait_s=1)["replies"][0]
    assert first["data"] == "HTTP/1.1 100 Continue\r\n\r\n"
    mallory.call("send", name="expect", data=body)
    reply = mallory.call("replies", name="expect", wait_s=10)["replies"][0]
    mallory.call("close", name="expect")
    assert status_of(reply["data"]) == 403
    assert zd.gpus.since(mark) == []


def test_expect_continue_over_the_cap_is_refused_without_continue(mallory):
    reply = answers(mallory, "expect-big", LEGACY + "Content-Length: 1000000\r\n"
                    "Expect: 100-continue\r\n\r\n")
    assert status_of(reply["data"]) == 413
    assert "100 Continue" not in reply["data"]


MALFORMED = ("Malformed request: {why}; the request was not processed.")


@pytest.mark.parametrize("head, why", [
    # Past Python's 4300-digit int-string limit (waitress's int() would raise ValueError).
    (LEGACY + "Content-Length: " + "9" * 5000 + "\r\n\r\n",
     "the Content-Length header has 5000 characters; at most 19 digits are accepted"),
    (LEGACY + "Content-Length: " + "0" * 4999 + "5\r\n\r\n",
     "the Content-Length header has 5000 characters; at most 19 digits are accepted"),
    # urlsplit's ValueError on a malformed IPv6 authority.
    ("GET http://[::1/time HTTP/1.1\r\nHost: x\r\n\r\n",
     "the request line or a header could not be parsed"),
    (LEGACY + "Content-Length: abc\r\n\r\n", "Content-Length is invalid"),
])
def test_an_unparsable_head_is_answered_400_and_closed(zd, mallory, head, why):
    mark = zd.gpus.mark()
    reply = answers(mallory, "unparsable", head)
    assert status_of(reply["data"]) == 400 and reply["eof"], reply
    assert "content-type: application/json" in reply["data"].lower()
    assert body_of(reply["data"]) == {"error": MALFORMED.format(why=why)}
    assert zd.gpus.since(mark) == []
    log = zd.log()
    assert "uncaptured python exception" not in log and "Traceback" not in log, log[-2000:]


@pytest.mark.parametrize("head, status, error", [
    (LEGACY + "X-Big: " + "a" * 40_000 + "\r\n\r\n", 431,
     "Request Header Fields Too Large: exceeds max_header of 32768"),
    (LEGACY + "Transfer-Encoding: gzip\r\n\r\n", 501,
     "Not Implemented: Transfer-Encoding requested is not supported"),
])
def test_waitress_refusals_answer_json(zd, mallory, head, status, error):
    mark = zd.gpus.mark()
    reply = answers(mallory, "refused", head)
    # (the status line of an oversized head is HTTP/1.0: waitress never parsed its version)
    assert int(reply["data"].split(" ", 2)[1]) == status and reply["eof"], reply
    assert body_of(reply["data"]) == {"error": f"{error}; the request was not processed."}
    assert zd.gpus.since(mark) == []
