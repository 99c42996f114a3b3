"""Stop restores, a restart that asked beforehand keeps: the one-shot marker."""

from __future__ import annotations

import json
import os

from zeusd.leases import events as ev
from zeusd.leases.shutdown import KEEP_MARKER, keep_leases_on_stop, request_keep, take_keep_request

from .support import POWER, Events, new_book, write


def test_a_requested_restart_keeps_and_a_plain_stop_restores(lease_dir, device, children):
    events = Events()
    book = new_book(lease_dir, device, events)
    write(book, device, children().pin(), 0, POWER, 300_000)
    request_keep(str(lease_dir))
    book.stop(keep_leases=keep_leases_on_stop(str(lease_dir), always_keep=False))
    assert device.hw[(0, POWER)] == 300_000 and KEEP_MARKER not in os.listdir(lease_dir)
    book = new_book(lease_dir, device, events)
    assert events.kinds() == [ev.OPENED, ev.ADOPTED] and book.rejected_files == []
    book.stop(keep_leases=keep_leases_on_stop(str(lease_dir), always_keep=False))
    assert device.hw[(0, POWER)] == 700_000 and os.listdir(lease_dir) == []


def test_the_marker_is_one_shot_and_expires(tmp_path):
    request_keep(str(tmp_path), ttl_s=60, now_s=1000.0)
    assert not take_keep_request(str(tmp_path), now_s=1060.5)
    assert os.listdir(tmp_path) == []
    request_keep(str(tmp_path), ttl_s=60, now_s=1000.0)
    assert take_keep_request(str(tmp_path), now_s=1059.0)
    assert not take_keep_request(str(tmp_path), now_s=1059.0)
    assert keep_leases_on_stop(str(tmp_path), always_keep=True)


def test_a_hostile_marker_does_not_keep(tmp_path):
    path = tmp_path / KEEP_MARKER
    for content, mode in [(json.dumps({"boot_id": "x", "expires_s": 2**40}), 0o600),
                          ("{not json", 0o600), (json.dumps({"expires_s": "never"}), 0o600)]:
        path.write_text(content)
        os.chmod(path, mode)
        assert not take_keep_request(str(tmp_path)) and not path.exists()
    request_keep(str(tmp_path))
    os.chmod(path, 0o644)
    assert not take_keep_request(str(tmp_path))
    os.symlink("/etc/hostname", path)
    assert not take_keep_request(str(tmp_path))
