"""Lease files: written before the hardware write, root-only, strictly read; a daemon crash
(the book dropped without a clean stop) loses nothing."""

from __future__ import annotations

import json
import os
import stat

import pytest

from zeusd.leases import events as ev
from zeusd.leases.records import StoreError

from .support import GPU_CLOCKS, POWER, Events, new_book, write


def _files(lease_dir) -> list[str]:
    return sorted(os.listdir(lease_dir))


def _crashed_with_lease(lease_dir, device, children, gpu=0, knob=POWER, value=300_000):
    """A book with one lease, then dropped the way a SIGKILLed daemon leaves it: files only."""
    book = new_book(lease_dir, device, Events())
    job = children()
    write(book, device, job.pin(), gpu, knob, value)
    book.stop(keep_leases=True)
    return job


def _read(lease_dir, name="gpu0.power_limit.lease.json") -> dict:
    return json.loads((lease_dir / name).read_text())


def test_intent_is_on_disk_before_the_hardware_write(book, device, children, lease_dir):
    seen = []
    device.on_apply = lambda gpu, knob, value: seen.append(_read(lease_dir))
    job = children()
    with book.change(job.pin(), 0, POWER, 300_000):
        seen.append(_read(lease_dir))
        device.apply(0, POWER, 300_000)
    intent, committed = seen[0], _read(lease_dir)
    assert (intent["captured"], intent["set"], intent["pending"]) == (700_000, [], [300_000])
    assert (committed["captured"], committed["set"], committed["pending"]) == (700_000, [300_000], [])
    assert committed["holders"][0]["pid"] == job.pid
    assert committed["holders"][0]["start_ticks"] == job.start_ticks


def test_files_are_root_only(book, device, children, lease_dir):
    write(book, device, children().pin(), 0, POWER, 300_000)
    assert stat.S_IMODE(os.lstat(lease_dir).st_mode) == 0o700
    (name,) = _files(lease_dir)
    assert stat.S_IMODE(os.lstat(lease_dir / name).st_mode) == 0o600


def test_crash_then_start_adopts_a_living_owner(lease_dir, device, children):
    first = Events()
    book = new_book(lease_dir, device, first)
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    write(book, device, job.pin(), 0, GPU_CLOCKS, (900, 1980))
    book.stop(keep_leases=True)  # what a SIGKILLed daemon leaves: the files, nothing restored
    assert device.hw[(0, POWER)] == 300_000
    events = Events()
    book = new_book(lease_dir, device, events)
    try:
        assert events.kinds() == [ev.ADOPTED, ev.ADOPTED]
        assert {v.knob for v in book.leases()} == {POWER, GPU_CLOCKS}
        job.kill()
        events.wait(ev.RESTORED, 2)
        assert device.hw[(0, POWER)] == 700_000 and device.hw[(0, GPU_CLOCKS)] is None
        assert _files(lease_dir) == []
    finally:
        book.stop(keep_leases=True)


def test_owner_gone_while_down_is_restored_at_start(lease_dir, device, children):
    job = _crashed_with_lease(lease_dir, device, children)
    job.kill()
    events = Events()
    book = new_book(lease_dir, device, events)
    try:
        (event,) = events.all
        assert (event.kind, event.holder.pid) == (ev.RESTORED_AT_START, job.pid)
        assert device.hw[(0, POWER)] == 700_000 and _files(lease_dir) == []
        assert not book.has_leases()
    finally:
        book.stop(keep_leases=True)


def test_pid_reuse_counts_as_dead(lease_dir, device, children):
    _crashed_with_lease(lease_dir, device, children)
    record = _read(lease_dir)
    record["holders"][0]["start_ticks"] -= 1  # the same pid, but another process than recorded
    (lease_dir / "gpu0.power_limit.lease.json").write_text(json.dumps(record))
    events = Events()
    book = new_book(lease_dir, device, events)
    try:
        assert events.kinds() == [ev.RESTORED_AT_START]
        assert device.hw[(0, POWER)] == 700_000
    finally:
        book.stop(keep_leases=True)


def test_crash_between_intent_and_hardware_write(lease_dir, device, children):
    book = new_book(lease_dir, device, Events())
    job = children()
    book.change(job.pin(), 0, POWER, 300_000)  # recorded; the daemon dies before the write
    book.stop(keep_leases=True)
    job.kill()
    events = Events()
    book = new_book(lease_dir, device, events)
    try:
        assert events.kinds() == [ev.RESTORED_AT_START]
        assert device.applied == []  # still at the captured value: nothing to write
    finally:
        book.stop(keep_leases=True)


def test_records_from_an_earlier_boot_are_dropped(lease_dir, device, children):
    _crashed_with_lease(lease_dir, device, children)
    record = _read(lease_dir)
    record["boot_id"] = "00000000-0000-0000-0000-000000000000"
    (lease_dir / "gpu0.power_limit.lease.json").write_text(json.dumps(record))
    events = Events()
    book = new_book(lease_dir, device, events)
    try:
        (event,) = events.all
        assert (event.kind, event.reason) == (ev.DROPPED, "recorded before the last reboot")
        assert device.applied == [] and _files(lease_dir) == []
    finally:
        book.stop(keep_leases=True)


def _hostile_files(lease_dir, good: str) -> list[str]:
    """Write one file of each hostile kind beside the good one; return their names."""
    (lease_dir / "gpu1.power_limit.lease.json").write_text("{not json")
    (lease_dir / "gpu1.persistence_mode.lease.json").write_text(json.dumps({"version": 1}))
    wrong_name = json.loads((lease_dir / good).read_text())
    (lease_dir / "gpu1.gpu_locked_clocks.lease.json").write_text(json.dumps(wrong_name))
    os.symlink(lease_dir / good, lease_dir / "gpu1.mem_locked_clocks.lease.json")
    os.mkfifo(lease_dir / "gpu0.persistence_mode.lease.json", 0o600)
    (lease_dir / "gpu0.mem_locked_clocks.lease.json").write_text("x" * 20000)
    (lease_dir / "gpu0.gpu_locked_clocks.lease.json").write_text(
        (lease_dir / good).read_text().replace("power_limit", "gpu_locked_clocks"))
    (lease_dir / "notes.txt").write_text("hello")
    for name in os.listdir(lease_dir):
        if name != good and not os.path.islink(lease_dir / name):
            os.chmod(lease_dir / name, 0o600)
    os.chmod(lease_dir / "gpu0.gpu_locked_clocks.lease.json", 0o644)  # readable by others
    (lease_dir / ".tmp-gpu0.power_limit.lease.json").write_text("half written")
    return sorted(n for n in os.listdir(lease_dir) if n != good and not n.startswith(".tmp-"))


def test_hostile_and_corrupt_files_are_skipped(lease_dir, device, children):
    _crashed_with_lease(lease_dir, device, children)
    rejected = _hostile_files(lease_dir, "gpu0.power_limit.lease.json")
    events = Events()
    book = new_book(lease_dir, device, events)
    try:
        assert sorted(book.rejected_files) == rejected
        assert events.kinds() == [ev.ADOPTED]  # the good lease is still there
        assert ".tmp-gpu0.power_limit.lease.json" not in _files(lease_dir)
        assert device.applied == []
    finally:
        book.stop(keep_leases=True)


def test_a_file_owned_by_someone_else_is_skipped(lease_dir, device, children):
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to another user)")
    _crashed_with_lease(lease_dir, device, children)
    os.chown(lease_dir / "gpu0.power_limit.lease.json", 65534, 65534)
    book = new_book(lease_dir, device, Events())
    try:
        assert book.rejected_files == ["gpu0.power_limit.lease.json"] and not book.has_leases()
    finally:
        book.stop(keep_leases=True)


def test_an_open_directory_is_refused(tmp_path, device):
    os.mkdir(tmp_path / "open", 0o755)
    os.chmod(tmp_path / "open", 0o755)
    with pytest.raises(StoreError) as err:
        new_book(tmp_path / "open", device, Events())
    assert str(err.value) == (f"{tmp_path}/open: mode 0755 lets others in; expected 0700 "
                              "(chmod 700 it)")
    os.mkdir(tmp_path / "real", 0o700)
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(StoreError) as err:
        new_book(tmp_path / "link", device, Events())
    assert str(err.value) == f"{tmp_path}/link: not a directory (a symlink or other file)"


def test_a_failed_intent_write_refuses_the_change(book, device, children, lease_dir):
    job = children()
    write(book, device, job.pin(), 0, POWER, 300_000)
    os.rename(lease_dir, str(lease_dir) + ".moved")
    try:
        with pytest.raises(OSError):
            book.change(children().pin(), 1, POWER, 300_000)
        with pytest.raises(OSError):
            book.change(job.pin(), 0, POWER, 400_000)
        (view,) = book.leases()
        assert (view.gpu_index, view.set_value, view.state) == (0, 300_000, "live")
    finally:
        os.rename(str(lease_dir) + ".moved", lease_dir)
