"""PolicyStore: load at start-up, atomic swap on a good reload, keep the old on a bad one."""

from __future__ import annotations

import hashlib
import logging
import os
import threading

import pytest

from zeusd import operations as ops
from zeusd.operations import GpuChange
from zeusd.policy import PolicyError, PolicyStore

from tests.support.policy_files import unix_caller, write_policy

READS = '[defaults]\noperations = ["gpu-read", "cpu-read"]\n'
WRITES = '[defaults]\noperations = ["gpu-read", "cpu-read", "set_power_limit"]\n'


class RecordingAuditor:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def event(self, message: str, **fields) -> None:
        self.events.append((message, fields))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_start_up_with_a_bad_file_raises(tmp_path):
    path = write_policy(tmp_path, "[defaults]\nbogus = 1\n")
    with pytest.raises(PolicyError, match='defaults.bogus: unknown key "bogus"'):
        PolicyStore(path, check_owner=False)


def test_start_up_logs_the_hash_in_force(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zeusd.policy")
    auditor = RecordingAuditor()
    store = PolicyStore(write_policy(tmp_path, READS), check_owner=False, auditor=auditor)
    assert store.current.hash == sha(READS)
    assert f"policy {sha(READS)} in force" in caplog.text
    message, fields = auditor.events[0]
    assert message.startswith(f"policy {sha(READS)} in force")
    assert fields["policy_hash"] == sha(READS) and fields["policy_event"] == "loaded"


def test_good_reload_swaps_the_policy(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zeusd.policy")
    path = write_policy(tmp_path, READS)
    store = PolicyStore(path, check_owner=False)
    before = store.current
    change = GpuChange(ops.SET_POWER_LIMIT, 0, power_limit_mw=300000)
    assert not before.decide_change(unix_caller(1001), change).allowed
    write_policy(tmp_path, WRITES)
    assert store.reload() is True
    assert store.current is not before and store.current.hash == sha(WRITES)
    assert store.current.decide_change(unix_caller(1001), change).allowed
    assert before.decide_change(unix_caller(1001), change).allowed is False  # old object intact
    assert f"policy {sha(WRITES)} in force" in caplog.text


def test_bad_reload_keeps_the_old_policy_and_says_which(tmp_path, caplog):
    auditor = RecordingAuditor()
    path = write_policy(tmp_path, READS)
    store = PolicyStore(path, check_owner=False, auditor=auditor)
    before = store.current
    write_policy(tmp_path, '[defaults]\noperations = ["fly"]\n')
    assert store.reload() is False
    assert store.current is before
    expected = f"policy reload rejected, policy {sha(READS)} stays in force"
    assert expected in caplog.text and 'unknown operation "fly"' in caplog.text
    message, fields = auditor.events[-1]
    assert message.startswith(expected)
    assert fields["policy_event"] == "rejected" and fields["priority"] == 3


def test_reload_refuses_a_file_made_group_writable(tmp_path):
    path = write_policy(tmp_path, READS)
    store = PolicyStore(path, check_owner=False)
    write_policy(tmp_path, WRITES, mode=0o664)
    assert store.reload() is False
    assert store.current.hash == sha(READS)


def test_reload_of_a_deleted_file_keeps_the_policy_in_force(tmp_path, caplog):
    path = write_policy(tmp_path, WRITES)
    store = PolicyStore(path, check_owner=False)
    os.unlink(path)
    assert store.reload() is False
    assert store.current.hash == sha(WRITES)
    assert (f"policy reload rejected, policy {sha(WRITES)} stays in force: {path}: no such "
            "file (moved or deleted?)") in caplog.text
    assert "built-in" not in caplog.text


def test_a_file_created_after_a_start_without_one_is_loaded(tmp_path):
    path = os.path.join(tmp_path, "policy.toml")
    store = PolicyStore(path, check_owner=False)
    assert store.current.source == "built-in (file missing)"
    assert store.reload() is False  # still absent: an error, the built-in policy stays
    write_policy(tmp_path, WRITES)
    assert store.reload() is True and store.current.hash == sha(WRITES)


def test_a_broken_auditor_does_not_break_reload(tmp_path):
    class Broken:
        def event(self, message, **fields):
            raise RuntimeError("journal gone")

    store = PolicyStore(write_policy(tmp_path, READS), check_owner=False, auditor=Broken())
    assert store.reload() is True


def test_readers_always_see_a_whole_policy_during_reloads(tmp_path):
    path = write_policy(tmp_path, READS)
    store = PolicyStore(path, check_owner=False)
    valid = {sha(READS), sha(WRITES)}
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(store.current.hash)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for text in (WRITES, READS) * 10:
            write_policy(tmp_path, text)
            assert store.reload()
    finally:
        stop.set()
        thread.join()
    assert seen <= valid
