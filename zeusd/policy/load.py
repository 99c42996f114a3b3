"""Read the policy file as hostile input: check the open descriptor, then parse.

Stages (each failure names the file and what to do):
1. walk from / through directories only root can change (trust.py), then open
   without following a symlink, never blocking on a FIFO;
2. fstat the open descriptor: regular file, owned by root, not group/world-writable;
3. read at most MAX_POLICY_BYTES, decode UTF-8, parse TOML (parse.py does the rest).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat

from zeusd.policy.model import Policy
from zeusd.policy.model import READ_GROUPS, Grant, PolicyError
from zeusd.policy.parse import parse_policy
from zeusd.policy.trust import open_trusted, user_text

log = logging.getLogger(__name__)

DEFAULT_POLICY_PATH = "/etc/zeusd/policy.toml"
MAX_POLICY_BYTES = 1 << 20
BUILTIN_SOURCE = "built-in (file missing)"
BUILTIN_RULE = "no-policy"  # the decisions' rule name under the built-in policy
_BUILTIN_MARKER = b"zeusd built-in policy: file missing\n"

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def builtin_policy(path: str = DEFAULT_POLICY_PATH) -> Policy:
    """The policy used when the file does not exist: everybody reads, only root changes."""
    return Policy(
        hash=hashlib.sha256(_BUILTIN_MARKER).hexdigest(),
        source=BUILTIN_SOURCE,
        rules=(),
        defaults=Grant(operations=frozenset(READ_GROUPS)),
        default_rule=BUILTIN_RULE,
        path=path,
    )


def is_builtin(policy: Policy) -> bool:
    """Whether ``policy`` is the built-in one (no file), the one way this is asked."""
    return policy.default_rule == BUILTIN_RULE


def load_policy(path: str, *, check_owner: bool = True, missing_ok: bool = True) -> Policy:
    """Load and validate the policy at ``path``; raise PolicyError saying what is wrong.

    A missing file gives the built-in policy (with a warning) unless ``missing_ok`` is False.
    ``check_owner=False`` skips only the root-owner check (tests, drafts checked by a user).
    """
    data = read_policy_bytes(path, check_owner=check_owner)
    if data is None:
        if not missing_ok:
            raise PolicyError(f"{path}: no such file (moved or deleted?)")
        log.warning("%s does not exist: using the built-in policy (everybody may read, "
                    "only root may change settings)", path)
        return builtin_policy(path)
    return parse_policy(data, path)


def read_policy_bytes(path: str, *, check_owner: bool = True) -> bytes | None:
    """The file's bytes after the descriptor checks, or None if it does not exist."""
    try:
        fd = open_trusted(path, _OPEN_FLAGS, check_owner=check_owner)
    except OSError as error:
        raise _open_error(path, error) from None
    if fd is None:
        return None
    try:
        check_descriptor(fd, path, check_owner=check_owner)
        return _read_limited(fd, path)
    finally:
        os.close(fd)


def _open_error(path: str, error: OSError) -> PolicyError:
    if error.errno == errno.ELOOP:
        return PolicyError(f"{path}: refused: it is a symbolic link; zeusd reads only a regular "
                           f"file at that path (copy the target there instead of linking it)")
    return PolicyError(f"{path}: cannot open: {error.strerror}")


def check_descriptor(fd: int, path: str, *, check_owner: bool = True) -> None:
    """Refuse anything but a regular file, owned by root (or the daemon's own user), that
    only its owner can write."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a file")
        raise PolicyError(f"{path}: refused: it is {kind}, not a regular file")
    # The daemon's own user is accepted too: a file it could write itself grants it
    # nothing new (this is what lets an unprivileged `make demo` read its policy).
    if check_owner and info.st_uid not in (0, os.geteuid()):
        raise PolicyError(f"{path}: refused: it is owned by {user_text(info.st_uid)}, not root "
                          f"(fix: chown root:root {path})")
    writable = [who for bit, who in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "world"))
                if info.st_mode & bit]
    if writable:
        mode = stat.S_IMODE(info.st_mode)
        raise PolicyError(f"{path}: refused: it is {'- and '.join(writable)}-writable "
                          f"(mode {mode:04o}); only root may be able to change it "
                          f"(fix: chmod go-w {path})")


def _read_limited(fd: int, path: str) -> bytes:
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: refused: larger than {MAX_POLICY_BYTES} bytes")
        chunks.append(chunk)
