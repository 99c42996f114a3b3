"""The policy file is hostile input: one test per refused kind of file."""

from __future__ import annotations

import os
import stat

import pytest

from zeusd.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy
from zeusd.policy.load import BUILTIN_SOURCE, MAX_POLICY_BYTES, check_descriptor

from tests.support.policy_files import needs_root, write_policy

GOOD = '[defaults]\noperations = ["gpu-read"]\n'


def refused(path: str, **kwargs) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path, **kwargs)
    message = str(info.value)
    assert message.startswith(path), message
    return message


def test_good_file_loads_and_hash_is_sha256_of_bytes(tmp_path):
    import hashlib

    path = write_policy(tmp_path, GOOD)
    policy = load_policy(path, check_owner=os.geteuid() == 0)
    assert policy.source == path
    assert policy.hash == hashlib.sha256(GOOD.encode()).hexdigest()


def test_symlink_is_refused(tmp_path):
    target = write_policy(tmp_path, GOOD, name="real.toml")
    link = str(tmp_path / "policy.toml")
    os.symlink(target, link)
    assert "refused: it is a symbolic link" in refused(link, check_owner=False)


def test_fifo_is_refused_without_hanging(tmp_path):
    path = str(tmp_path / "policy.toml")
    os.mkfifo(path)  # nobody writes: a blocking open would hang forever
    assert "refused: it is a FIFO (named pipe), not a regular file" in refused(
        path, check_owner=False)


def test_directory_is_refused(tmp_path):
    path = str(tmp_path / "policy.toml")
    os.mkdir(path)
    assert "refused: it is a directory, not a regular file" in refused(path, check_owner=False)


def test_device_node_is_refused(tmp_path):
    path = str(tmp_path / "policy.toml")
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # a nodev mount refuses this
    except OSError:
        path = "/dev/null"  # still a character device, root-owned
    assert "refused: it is a character device, not a regular file" in refused(
        path, check_owner=False)


@needs_root
def test_file_not_owned_by_root_is_refused(tmp_path):
    path = write_policy(tmp_path, GOOD)
    os.chown(path, 65534, 65534)
    message = refused(path)
    assert "refused: it is owned by uid 65534" in message
    assert "not root (fix: chown root:root" in message


def test_owner_check_can_be_skipped_for_drafts(tmp_path):
    path = write_policy(tmp_path, GOOD)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    assert load_policy(path, check_owner=False).source == path


def test_group_writable_file_is_refused(tmp_path):
    path = write_policy(tmp_path, GOOD, mode=0o664)
    message = refused(path, check_owner=False)
    assert "refused: it is group-writable (mode 0664)" in message
    assert "chmod go-w" in message


def test_world_writable_file_is_refused(tmp_path):
    path = write_policy(tmp_path, GOOD, mode=0o646)
    assert "refused: it is world-writable (mode 0646)" in refused(path, check_owner=False)


def test_group_and_world_writable_names_both(tmp_path):
    path = write_policy(tmp_path, GOOD, mode=0o666)
    assert "group- and world-writable" in refused(path, check_owner=False)


def test_check_runs_on_the_open_descriptor(tmp_path):
    path = write_policy(tmp_path, GOOD, mode=0o664)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(PolicyError, match="group-writable"):
            check_descriptor(fd, "the-name-given", check_owner=False)
    finally:
        os.close(fd)


def test_oversized_file_is_refused(tmp_path):
    path = write_policy(tmp_path, "#" * (MAX_POLICY_BYTES + 1))
    assert f"larger than {MAX_POLICY_BYTES} bytes" in refused(path, check_owner=False)


def test_not_utf8_is_refused(tmp_path):
    path = str(tmp_path / "policy.toml")
    with open(path, "wb") as file:
        file.write(b"# \xff\xfe\n")
    os.chmod(path, 0o644)
    assert "not UTF-8 text (bad byte at offset 2)" in refused(path, check_owner=False)


def test_missing_file_gives_builtin_policy_with_warning(tmp_path, caplog):
    path = str(tmp_path / "absent.toml")
    policy = load_policy(path)
    assert policy.source == BUILTIN_SOURCE
    assert policy.default_rule == "no-policy"
    assert len(policy.hash) == 64
    assert "does not exist: using the built-in policy" in caplog.text


def test_missing_file_is_an_error_when_asked(tmp_path):
    path = str(tmp_path / "absent.toml")
    assert "no such file" in refused(path, missing_ok=False)


def test_unreadable_path_names_the_reason(tmp_path):
    path = write_policy(tmp_path, GOOD)
    assert refused(path + "/x", check_owner=False) == (
        f"{path}/x: refused: {path} is not a directory")


def test_default_path():
    assert DEFAULT_POLICY_PATH == "/etc/zeusd/policy.toml"
