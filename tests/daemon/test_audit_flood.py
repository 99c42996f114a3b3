"""A denial flood from an unprivileged user against the real daemon (issue #8.8): every
denial is in the audit, as a record of its own or counted in a coalesced one, also when the
daemon stops in the middle; the flood costs the log a few records, and no GPU changes."""

from __future__ import annotations

import time

import pytest

from tests.support.checks import query
from tests.support.policy_daemon import PolicyDaemon
from tests.support.users import Accounts, needs_real_users, requests_as
from zeusd.audit_flood import BURST, WINDOW_S

pytestmark = needs_real_users

POLICY = '[defaults]\noperations = ["gpu-read"]\n'
FLOOD = 600


def denied_writes(count: int) -> list[tuple[str, str]]:
    return [("POST", query("/gpu/set_power_limit", gpu_ids=i % 4, power_limit_mw=300_000 + i,
                           block=True)) for i in range(count)]


def counted(daemon, uid: int, since: int = 0) -> tuple[int, int]:
    """(denials the audit accounts for, records it took) for ``uid`` after ``since``."""
    records = daemon.audit(since, caller_uid=str(uid), decision="deny")
    return sum(int(r["count"]) for r in records), len(records)


@pytest.fixture(scope="module")
def flood():
    with Accounts() as accounts:
        user = accounts.user("fl")
        daemon = PolicyDaemon(POLICY)
        try:
            yield daemon, user
        finally:
            daemon.stop()
            assert "Traceback" not in daemon.log(), daemon.log()


def test_a_flood_of_denials_is_counted_exactly_in_few_records(flood):
    daemon, user = flood
    mark = daemon.gpus.mark()
    since = daemon.log_mark()
    replies = requests_as(user.name, daemon.address, denied_writes(FLOOD))
    assert {r["status"] for r in replies} == {403}
    deadline = time.monotonic() + 10 * WINDOW_S + 10
    while counted(daemon, user.uid, since)[0] < FLOOD and time.monotonic() < deadline:
        time.sleep(WINDOW_S / 4)
    total, records = counted(daemon, user.uid, since)
    assert total == FLOOD
    assert records < FLOOD // 4, records  # a burst per window, then a record per GPU
    assert daemon.gpus.since(mark) == []


def test_counts_pending_at_stop_are_written(flood):
    daemon, user = flood
    since = daemon.log_mark()
    replies = requests_as(user.name, daemon.address, denied_writes(3 * BURST))
    assert [r["status"] for r in replies] == [403] * (3 * BURST)
    daemon.stop()  # at once: the window has not ended
    assert counted(daemon, user.uid, since)[0] == 3 * BURST
