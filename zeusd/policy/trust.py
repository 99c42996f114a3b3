"""Open the policy file through directories nobody else could have changed.

Checking the file alone (O_NOFOLLOW, owner, mode) is not enough: whoever can
write a directory on the way can rename the file away or swap the directory
for a symlink to a file of their own. So the path is walked from `/` one
component at a time with openat(O_NOFOLLOW | O_DIRECTORY), and each directory
is checked on the descriptor that the next step opens from, so the
directories checked are the ones the file is read through.

A directory is trusted when it is owned by root (or the daemon's own user) and
neither group nor others may write it, or when it is root-owned and sticky
(like /tmp: others may create entries but not rename or delete root's).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat

from zeusd.policy.model import PolicyError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_trusted(path: str, file_flags: int, *, check_owner: bool = True) -> int | None:
    """An fd for ``path`` opened with ``file_flags`` relative to its checked parent, or None
    when the file (or a directory on the way) does not exist."""
    absolute = os.path.abspath(path)
    *parents, name = absolute.split("/")[1:]
    directory = os.open("/", _DIR_FLAGS)
    try:
        walked = "/"
        check_directory(directory, walked, path, check_owner)
        for component in parents:
            walked = os.path.join(walked, component)
            child = _open_dir(component, directory, walked, path)
            if child is None:
                return None
            os.close(directory)
            directory = child
            check_directory(directory, walked, path, check_owner)
        return _open_file(name, directory, file_flags)
    finally:
        os.close(directory)


def _open_dir(component: str, parent: int, walked: str, path: str) -> int | None:
    try:
        return os.open(component, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _dir_error(component, parent, walked, path, error) from None


def _dir_error(component: str, parent: int, walked: str, path: str,
               error: OSError) -> PolicyError:
    try:
        is_link = stat.S_ISLNK(os.lstat(component, dir_fd=parent).st_mode)
    except OSError:
        is_link = False
    if is_link or error.errno == errno.ELOOP:
        target = os.path.realpath(walked)
        return PolicyError(f"{path}: refused: directory {walked} is a symbolic link (to "
                           f"{target}); zeusd follows no link on the way to the policy "
                           f"(fix: name the real path, --policy "
                           f"{os.path.join(target, os.path.basename(path))})")
    if error.errno == errno.ENOTDIR:
        return PolicyError(f"{path}: refused: {walked} is not a directory")
    return PolicyError(f"{path}: cannot open directory {walked}: {error.strerror}")


def _open_file(name: str, directory: int, flags: int) -> int | None:
    try:
        return os.open(name, flags, dir_fd=directory)
    except FileNotFoundError:
        return None


def check_directory(fd: int, walked: str, path: str, check_owner: bool) -> None:
    """Refuse a directory that someone other than root (or us) could change."""
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    trusted_owner = info.st_uid in (0, os.geteuid())
    if info.st_uid == 0 and mode & stat.S_ISVTX:
        return  # sticky and root's: others cannot rename or remove what is not theirs
    if check_owner and not trusted_owner:
        raise PolicyError(f"{path}: refused: directory {walked} is owned by "
                          f"{user_text(info.st_uid)}, who could replace the policy "
                          f"(fix: chown root {walked}, or keep the policy elsewhere)")
    writable = [who for bit, who in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others"))
                if mode & bit]
    if writable:
        raise PolicyError(f"{path}: refused: directory {walked} is writable by "
                          f"{' and '.join(writable)} (mode {mode:04o}), who could replace "
                          f"the policy (fix: chmod go-w {walked}, or make it sticky and "
                          f"root's: chmod +t)")


def user_text(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"
