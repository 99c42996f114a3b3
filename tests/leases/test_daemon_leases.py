"""Leases through the real daemon: a real user's process (in the policy's group) changes
GPUs over the HTTP API, a new connection per request as zeus 0.16 does, and is SIGKILLed;
what it changed comes back exactly. Conflicts, root's override, compare-and-swap, and the
daemon's own SIGKILL and restart."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.support.client import Client
from tests.support.sim import RESET_GPU_CLOCKS, SET_GPU_CLOCKS, SET_POWER
from tests.support.users import Accounts, needs_real_users

from .daemon_world import POLICY, Job, LeaseDaemon, set_gpu_clocks, set_power

pytestmark = needs_real_users
DEFAULT_MW = 700_000  # the simulated H200's power limit at start


@pytest.fixture(scope="module")
def accounts():
    with Accounts() as made:
        group = made.group("job")
        yield {"group": group, "alice": made.user("a", supplementary=(group,)),
               "bob": made.user("b", supplementary=(group,))}


@pytest.fixture
def zd(accounts):
    daemon = LeaseDaemon(POLICY.format(group=accounts["group"].name, extra=""))
    yield daemon
    daemon.stop()


def cells(table: str) -> list[list[str]]:
    """A printed lease table's cells, without the AGE column (it moves on)."""
    return [re.split(r"\s{2,}", line.strip())[:-1] for line in table.splitlines()]


def by_knob(leases: list[dict]) -> dict:
    return {(lease["gpu_id"], lease["knob"]): lease for lease in leases}


def test_a_killed_jobs_power_limit_and_clocks_come_back_exactly(zd, accounts):
    mark = zd.gpus.mark()
    job = Job(accounts["alice"], zd.socket_path, [set_power(0, 300), set_gpu_clocks(0, 900, 1500)])
    assert [status for status, _ in job.replies] == [200, 200]
    leases = by_knob(zd.leases())
    assert (leases[(0, "power_limit")]["captured"], leases[(0, "power_limit")]["set_value"]) \
        == (DEFAULT_MW, 300_000)
    clocks = leases[(0, "gpu_locked_clocks")]
    assert (clocks["captured"], clocks["set_value"]) == (None, [900, 1500])
    assert (clocks["holders"][0]["pid"], clocks["holders"][0]["uid"]) == \
        (job.pid, accounts["alice"].uid)
    assert Client(zd.address).get("/discover").json()["leases"] == {"enabled": True, "count": 2}
    job.kill()
    zd.wait_power(0, DEFAULT_MW)
    # one watcher restores the owner's leases in (GPU, knob) order: clocks, then power
    assert zd.gpus.since(mark) == [(0, SET_POWER, [300_000]), (0, SET_GPU_CLOCKS, [900, 1500]),
                                   (0, RESET_GPU_CLOCKS, []), (0, SET_POWER, [DEFAULT_MW])]
    assert zd.power_limit_mw(0) == DEFAULT_MW and zd.leases() == []
    restored = zd.audit(event="lease_restored")
    assert sorted(r["knob"] for r in restored) == ["gpu_locked_clocks", "power_limit"]
    assert {r["holder_uid"] for r in restored} == {str(accounts["alice"].uid)}


def test_a_connection_per_request_in_both_api_styles_ends_no_lease(zd, accounts):
    legacy = ["POST", "/gpu/1/set_power_limit", {"power_limit_mw": 280_000, "block": True}]
    job = Job(accounts["alice"], zd.socket_path,
              [set_power(1, 300), legacy, ["GET", "/gpu/get_power_limit?gpu_ids=1", None]])
    try:
        assert [s for s, _ in job.replies] == [200, 200, 200]
        assert json.loads(job.replies[2][1])["1"]["power_limit_mw"] == 280_000
        lease, = zd.leases()  # three connections opened and closed: the lease is still there
        assert (lease["captured"], lease["set_value"]) == (DEFAULT_MW, 280_000)  # first capture
        opened = zd.audit(event="change", operation="set_power_limit", outcome="applied")
        assert [r["old_value_source"] for r in opened] == ["gpu", "zeusd_last_write"]
    finally:
        job.kill()
    zd.wait_power(1, DEFAULT_MW)


def test_a_second_process_gets_409_naming_the_holder_then_may_act(zd, accounts):
    first = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
    mark = zd.gpus.mark()
    second = Job(accounts["bob"], zd.socket_path, [set_power(0, 250)])
    try:
        (status, body), = second.replies
        error = json.loads(body)
        assert status == 409
        assert (error["holder_uid"], error["holder_pid"], error["knob"], error["gpu_index"]) == \
            (accounts["alice"].uid, first.pid, "power_limit", 0)
        assert error["error"].startswith(f"GPU 0 power_limit is held by uid {accounts['alice'].uid}"
                                         f" pid {first.pid} (python")
        assert zd.gpus.since(mark) == []  # the refused change changed nothing
        assert zd.audit(event="lease_conflict", other_uid=str(accounts["bob"].uid))
        first.kill()
        zd.wait_power(0, DEFAULT_MW)
        third = Job(accounts["bob"], zd.socket_path, [set_power(0, 250)])
        assert third.replies[0][0] == 200
        third.kill()
        zd.wait_power(0, DEFAULT_MW)
    finally:
        first.kill()
        second.kill()


def test_roots_override_keeps_the_original_capture(zd, accounts):
    job = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
    root = Client(zd.address)
    assert root.post("/gpu/set_power_limit?gpu_ids=0&power_limit_mw=400000&block=true").status \
        == 200
    lease, = zd.leases()
    assert (lease["captured"], lease["set_value"], lease["holders"][0]["pid"]) == \
        (DEFAULT_MW, 400_000, os.getpid())  # root (this test process) holds it now
    assert zd.audit(event="lease_override", holder_pid=str(job.pid))
    mark = zd.gpus.mark()
    job.kill()  # no longer a holder: nothing is restored
    time.sleep(0.2)  # (a wrong restore would show in the journal)
    assert zd.gpus.since(mark) == [] and zd.power_limit_mw(0) == 400_000
    released = root.post("/leases/release?gpu_ids=0").json()["released"]
    assert released == [{"gpu_id": 0, "knob": "power_limit", "pid": os.getpid()}]
    assert zd.power_limit_mw(0) == DEFAULT_MW  # the job's capture, not root's 700 W by chance
    assert zd.gpus.since(mark) == [(0, SET_POWER, [DEFAULT_MW])]


def test_the_daemons_sigkill_loses_nothing(zd, accounts):
    alive = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
    gone = Job(accounts["bob"], zd.socket_path, [set_power(1, 250), set_gpu_clocks(1, 900, 1200)])
    try:
        zd.kill()
        gone.kill()  # exits while no daemon runs
        mark = zd.gpus.mark()
        zd.start_again()
        assert sorted(zd.gpus.since(mark)) == [(1, RESET_GPU_CLOCKS, []),
                                               (1, SET_POWER, [DEFAULT_MW])]
        lease, = zd.leases()  # the living owner's lease was adopted again
        assert (lease["gpu_id"], lease["holders"][0]["pid"]) == (0, alive.pid)
        assert zd.audit(event="lease_adopted", holder_pid=str(alive.pid))
        assert len(zd.audit(event="lease_restored_at_start")) == 2
        alive.kill()
        zd.wait_power(0, DEFAULT_MW)
    finally:
        alive.kill()
        gone.kill()


def test_a_change_made_while_zeusd_was_down_is_kept(zd, accounts):
    """Compare-and-swap: the knob no longer holds what the lease set, so it is left alone."""
    job = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
    zd.kill()
    with open(zd.gpus.journal_path, "a") as journal:  # an administrator's nvidia-smi -pl 420
        journal.write(json.dumps({"gpu": 0, "call": SET_POWER, "args": [420_000]}) + "\n")
    job.kill()
    mark = zd.gpus.mark()
    zd.start_again()
    skipped, = zd.audit(event="lease_restore_skipped")
    assert (skipped["knob"], skipped["current"]) == ("power_limit", "420000")
    assert zd.gpus.since(mark) == [] and zd.power_limit_mw(0) == 420_000


def test_stop_restores_every_lease_and_a_restart_asked_to_keep_them_does_not(zd, accounts):
    job = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
    try:
        assert zd.run_admin("leases", "keep-on-restart").returncode == 0
        assert zd.terminate() == 0
        assert zd.power_limit_mw_offline(0) == 300_000  # kept for the next start
        zd.start_again()
        assert zd.leases()[0]["holders"][0]["pid"] == job.pid
        mark = zd.gpus.mark()
        assert zd.terminate() == 0  # a plain stop: restored
        assert zd.gpus.since(mark) == [(0, SET_POWER, [DEFAULT_MW])]
        zd.start_again()
        assert zd.leases() == []
    finally:
        job.kill()


def test_zeusctl_and_zeusd_leases_show_them_and_only_the_owners_user_releases(zd, accounts):
    from tests.support.ctl import zeusctl_as

    job = Job(accounts["alice"], zd.socket_path, [set_power(0, 300), set_gpu_clocks(0, 900, 1500)])
    try:
        ctl = ("--socket", zd.socket_path)
        listed = zeusctl_as(accounts["bob"], *ctl, "leases")
        rows = cells(listed.stdout)
        holder = f"uid {accounts['alice'].uid} pid {job.pid} (python3)"
        assert listed.code == 0 and rows == [
            ["GPU", "KNOB", "HOLDER", "CAPTURED", "SET"],
            ["0", "gpu_locked_clocks", holder, "not locked", "900-1500 MHz"],
            ["0", "power_limit", holder, "700000 mW", "300000 mW"]]
        status = zeusctl_as(accounts["bob"], *ctl, "status", "--gpu", "0").stdout.splitlines()
        assert status[0].split()[-1] == "LEASES"
        assert status[1].endswith(f"gpu_locked_clocks by pid {job.pid}; power_limit by pid "
                                  f"{job.pid}")
        admin = zd.run_admin("leases")
        assert (admin.returncode, cells(admin.stdout)) == (0, rows)  # the files say the same
        mark = zd.gpus.mark()
        other = zeusctl_as(accounts["bob"], *ctl, "release")
        assert (other.code, other.stdout) == (0, "nothing to release\n")
        assert zd.gpus.since(mark) == [] and len(zd.leases()) == 2
        mine = zeusctl_as(accounts["alice"], *ctl, "release", "--knob", "power_limit")
        assert (mine.code, mine.stdout) == (0, f"released GPU 0 power_limit (pid {job.pid}): "
                                               "restored\n")
        assert zd.gpus.since(mark) == [(0, SET_POWER, [DEFAULT_MW])]
        assert [l["knob"] for l in zd.leases()] == ["gpu_locked_clocks"]
        assert zd.audit(event="lease_released", knob="power_limit")
    finally:
        job.kill()


@pytest.mark.parametrize(("query", "message"), [
    ("knob=fan", "unknown knob 'fan' (known: power_limit, gpu_locked_clocks, mem_locked_clocks, "
                 "persistence_mode)"),
    ("pid=-1", "pid must be self, any or a process id, got '-1'"),
    ("gpu_ids=", "gpu_ids must contain at least one GPU index"),
    ("color=red", None),
])
def test_release_refuses_bad_queries_and_changes_nothing(zd, accounts, query, message):
    job = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
    try:
        mark = zd.gpus.mark()
        reply = Client(zd.address).post(f"/leases/release?{query}")
        assert reply.status == 400
        if message is not None:
            assert reply.json()["error"] == message
        assert zd.gpus.since(mark) == [] and len(zd.leases()) == 1
    finally:
        job.kill()


def test_a_sharing_rules_processes_share_and_the_last_exit_restores(accounts):
    zd = LeaseDaemon(POLICY.format(group=accounts["group"].name, extra="share_leases = true"))
    jobs = []
    try:
        first = Job(accounts["alice"], zd.socket_path, [set_power(0, 300)])
        jobs.append(first)
        second = Job(accounts["bob"], zd.socket_path, [set_power(0, 280)])
        jobs.append(second)
        assert second.replies[0][0] == 200
        lease, = zd.leases()
        assert lease["captured"] == DEFAULT_MW and \
            sorted(h["pid"] for h in lease["holders"]) == sorted([first.pid, second.pid])
        mark = zd.gpus.mark()
        first.kill()
        time.sleep(0.2)  # (a restore now would be wrong, and would show in the journal)
        assert zd.gpus.since(mark) == [] and zd.power_limit_mw(0) == 280_000
        second.kill()
        zd.wait_power(0, DEFAULT_MW)
    finally:
        for job in jobs:
            job.kill()
        zd.stop()
