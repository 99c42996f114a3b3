"""Connection slots: one user cannot take them all; root and the policy's members keep a
reserve; trickled or idle connections are closed by deadlines that bytes do not renew."""

from __future__ import annotations

import time

import pytest

from tests.support.checks import assert_ok_empty, query
from tests.support.hostile import Attacker, body_of, status_of
from tests.support.sim import SET_POWER
from tests.support.users import UserAgent, needs_real_users

pytestmark = needs_real_users

PER_PEER, TOTAL, RESERVED = 10, 24, 8
POLICY = """version = 1
[defaults]
operations = ["gpu-read"]
[[rule]]
name = "members"
users = [{uid}]
operations = ["set_power_limit", "gpu-read"]
"""


@pytest.fixture(scope="module")
def users(accounts):
    return {"mallory": accounts.user("mal"), "eve": accounts.user("eve"),
            "member": accounts.user("mem")}


@pytest.fixture(scope="module")
def zd(start_zeusd, users):
    return start_zeusd(policy_text=POLICY.format(uid=users["member"].uid), args=(
        "--max-connections", str(TOTAL), "--reserved-connections", str(RESERVED),
        "--max-connections-per-peer", str(PER_PEER), "--request-read-timeout-s", "2",
        "--idle-timeout-s", "60"))


@pytest.fixture
def attackers(zd, users):
    made = {}

    def get(name):
        if name not in made:
            made[name] = Attacker(users[name], zd.socket_path)
        return made[name]
    yield get
    for attacker in made.values():
        attacker.close()


def held_and_refused(attacker, group, wait_s=1.5):
    """Connections the daemon kept open (no answer) and the answers of those it refused."""
    replies = attacker.call("replies", name=group, wait_s=wait_s)["replies"]
    held = [r for r in replies if not r["eof"] and not r["data"]]
    refused = [r for r in replies if r["eof"]]
    return held, refused


def test_one_user_cannot_take_every_slot_and_root_and_members_are_served(zd, users, attackers):
    mark = zd.gpus.mark()
    mallory, eve = attackers("mallory"), attackers("eve")
    mallory.call("open", name="hold", n=4 * PER_PEER)
    held, refused = held_and_refused(mallory, "hold")
    assert len(held) == PER_PEER and len(refused) == 3 * PER_PEER
    for reply in refused:
        assert status_of(reply["data"]) == 429
        assert body_of(reply["data"]) == {"error": (
            f"Too many connections: uid {mallory.uid} already holds {PER_PEER} connections, "
            "the limit per caller; close some or reuse one.")}
    # A second user takes what is left outside the reserve, and no more.
    eve.call("open", name="hold", n=PER_PEER)
    held, refused = held_and_refused(eve, "hold")
    assert len(held) == TOTAL - RESERVED - PER_PEER
    assert {status_of(r["data"]) for r in refused} == {503}
    assert body_of(refused[0]["data"]) == {"error": (
        "Too many connections: the connections open to callers without a write grant are "
        "all in use.")}
    # The reserve: a member and root are served at once, on new connections.
    member = UserAgent(users["member"], zd.address)
    try:
        assert member.post(query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=400_000,
                                 block="true")).status == 200
    finally:
        member.close()
    assert_ok_empty(zd.client().post(query("/gpu/set_power_limit", gpu_ids="1",
                                           power_limit_mw=410_000, block="true")))
    # The held connections still work, and are still refused a change by the policy.
    mallory.call("send", name="hold", data="POST " + query(
        "/gpu/set_power_limit", gpu_ids="2", power_limit_mw=300_000, block="true")
        + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    answers = [r["data"] for r in mallory.call("replies", name="hold", wait_s=3)["replies"]]
    assert [status_of(a) for a in answers[:PER_PEER]] == [403] * PER_PEER
    assert zd.gpus.since(mark) == [(0, SET_POWER, [400_000]), (1, SET_POWER, [410_000])]
    # Slots come back when connections close.
    mallory.call("close", name="hold")
    eve.call("close", name="hold")
    time.sleep(0.5)  # the daemon notices the hang-ups on its next loop turn
    mallory.call("open", name="again", n=PER_PEER)
    held, refused = held_and_refused(mallory, "again")
    assert len(held) == PER_PEER and not refused
    assert "refused a connection from uid" in zd.log()


def test_a_trickled_request_is_cut_off_at_the_read_deadline(zd, attackers):
    mallory = attackers("mallory")
    mallory.call("open", name="trickle", n=3, send="GET /time HTTP/1.1\r\n")
    for i in range(10):  # a header line every 0.5 s, for longer than the 2 s deadline
        mallory.call("send", name="trickle", data=f"X-Slow-{i}: 1\r\n")
        time.sleep(0.5)
    replies = mallory.call("replies", name="trickle", wait_s=5)["replies"]
    for reply in replies:
        assert reply["eof"]
        assert status_of(reply["data"]) == 408
        assert body_of(reply["data"]) == {"error": (
            "Request Timeout: the request did not arrive within 2 s; closing the connection.")}


def test_idle_connections_close_and_blank_lines_do_not_keep_them(start_zeusd, users):
    idle_zd = start_zeusd(args=("--idle-timeout-s", "3"))
    mallory = Attacker(users["mallory"], idle_zd.socket_path)
    mallory.call("open", name="idle", n=2)
    mallory.call("open", name="blank", n=2)
    for _ in range(12):  # blank lines between requests, for longer than the 3 s idle limit
        mallory.call("send", name="blank", data="\r\n")
        time.sleep(0.5)
    for group in ("idle", "blank"):
        replies = mallory.call("replies", name=group, wait_s=6)["replies"]
        assert all(r["eof"] and r["data"] == "" for r in replies), replies
    # An idle connection that still sends requests is served as usual.
    assert mallory.call("request", method="GET", path="/time")["status"] == 200
    mallory.close()


def test_a_limit_that_leaves_nothing_unreserved_is_refused(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "zeusd", "serve", "--max-connections", "8",
                           "--reserved-connections", "8"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("zeusd: error: --reserved-connections must be below "
                           "--max-connections\n")


def test_tcp_callers_are_counted_per_address(start_zeusd):
    import socket

    tcp_zd = start_zeusd(tcp=True, args=("--max-connections-per-peer", "3"))
    host, port = tcp_zd.address.rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(5)]
    try:
        answers = []
        for sock in socks:
            sock.settimeout(1.5)
            try:
                answers.append(sock.recv(4096).decode())
            except TimeoutError:
                answers.append(None)  # held open, waiting for a request
        assert answers[:3] == [None] * 3
        for answer in answers[3:]:
            assert status_of(answer) == 429
            assert body_of(answer) == {"error": (
                "Too many connections: address 127.0.0.1 already holds 3 connections, the "
                "limit per caller; close some or reuse one.")}
    finally:
        for sock in socks:
            sock.close()
