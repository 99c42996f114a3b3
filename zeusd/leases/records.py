"""Lease files: one per (GPU, knob), written and fsync'd before the hardware write.

Each write is atomic: a new file (0600, O_EXCL, O_NOFOLLOW) is written and
fsync'd, renamed over the old one, and the directory fsync'd, so after a crash
a lease file is either the old or the new version, never half of each. The
directory must be a real directory owned by the daemon's user with no group or
other access (0700). Reading is strict: a file that is not a regular file owned
by us with mode 0600, or whose content is not exactly a lease, is logged and
skipped; nothing in it can stop the daemon from starting.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass, field

from . import knobs
from .owner import Owner

log = logging.getLogger(__name__)

VERSION = 1
SUFFIX = ".lease.json"
TMP_PREFIX = ".tmp-"
IGNORED = ("keep-leases-on-next-stop", "keep-leases-on-next-stop.new")  # see shutdown.py
MAX_FILE_BYTES = 16 * 1024
MAX_GPU_INDEX = 1023
MAX_HOLDERS = 64
_RECORD_KEYS = {"version", "boot_id", "gpu_index", "knob", "captured", "set", "pending",
                "holders", "opened_s"}
_HOLDER_KEYS = {"uid", "pid", "start_ticks", "comm", "cmdline", "since_s", "shareable"}


class StoreError(Exception):
    """The state directory itself cannot be trusted or used (wrong owner, mode, not a directory)."""


class BadRecord(ValueError):
    """A lease file's content is not a lease."""


@dataclass
class Holder:
    owner: Owner
    since_s: float
    shareable: bool = False


@dataclass
class LeaseRecord:
    """The durable part of a lease. ``set`` and ``pending`` are lists of zero or one value
    (a clock value may be None, so None cannot mean "absent"): ``pending`` is a value being
    written right now, whose hardware write may or may not have happened."""

    gpu_index: int
    knob: str
    captured: object
    opened_s: float
    boot_id: str
    set: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    holders: list[Holder] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"gpu{self.gpu_index}.{self.knob}{SUFFIX}"

    def ours(self) -> list:
        """Values the hardware may hold because of this lease (a CAS matches any of them)."""
        return self.set + self.pending

    def to_json(self) -> dict:
        return {"version": VERSION, "boot_id": self.boot_id, "gpu_index": self.gpu_index,
                "knob": self.knob, "captured": knobs.to_json(self.captured),
                "set": [knobs.to_json(v) for v in self.set],
                "pending": [knobs.to_json(v) for v in self.pending],
                "holders": [{**h.owner.to_json(), "since_s": h.since_s, "shareable": h.shareable}
                            for h in self.holders],
                "opened_s": self.opened_s}


def parse_record(data: object) -> LeaseRecord:
    """Strictly: exactly the keys, types and ranges a lease has; BadRecord otherwise."""
    obj = _exact(data, _RECORD_KEYS, "lease")
    if obj["version"] != VERSION:
        raise BadRecord(f"version {obj['version']!r}, expected {VERSION}")
    gpu = _int(obj["gpu_index"], "gpu_index", 0, MAX_GPU_INDEX)
    knob = obj["knob"]
    if knob not in knobs.KNOBS:
        raise BadRecord(f"unknown knob {knob!r}")
    try:
        captured = knobs.check(knob, obj["captured"])
        values = {name: _values(knob, obj[name], name) for name in ("set", "pending")}
    except knobs.BadValue as exc:
        raise BadRecord(str(exc)) from exc
    holders = obj["holders"]
    if not isinstance(holders, list) or len(holders) > MAX_HOLDERS:
        raise BadRecord("holders: expected a list of at most %d" % MAX_HOLDERS)
    return LeaseRecord(gpu, knob, captured, _time(obj["opened_s"], "opened_s"),
                       _str(obj["boot_id"], "boot_id", 64), values["set"], values["pending"],
                       [_holder(h) for h in holders])


def _holder(data: object) -> Holder:
    obj = _exact(data, _HOLDER_KEYS, "holder")
    owner = Owner(_int(obj["uid"], "uid", 0, 2**32 - 1), _int(obj["pid"], "pid", 1, 2**22),
                  _int(obj["start_ticks"], "start_ticks", 0, 2**63 - 1),
                  _str(obj["comm"], "comm", 64), _str(obj["cmdline"], "cmdline", 1024))
    if type(obj["shareable"]) is not bool:
        raise BadRecord("holder shareable: expected a bool")
    return Holder(owner, _time(obj["since_s"], "since_s"), obj["shareable"])


def _values(knob: str, data: object, name: str) -> list:
    if not isinstance(data, list) or len(data) > 1:
        raise BadRecord(f"{name}: expected a list of at most one value")
    return [knobs.check(knob, v) for v in data]


def _exact(data: object, keys: set, what: str) -> dict:
    if not isinstance(data, dict) or set(data) != keys:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise BadRecord(f"{what}: expected keys {sorted(keys)}, found {found}")
    return data


def _int(value: object, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise BadRecord(f"{name}: expected an int in {low}..{high}, got {value!r}")
    return value


def _time(value: object, name: str) -> float:
    if type(value) not in (int, float) or not 0 <= value < 2**40:
        raise BadRecord(f"{name}: expected seconds since the epoch, got {value!r}")
    return float(value)


def _str(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise BadRecord(f"{name}: expected a string of at most {limit} characters")
    return value


class RecordStore:
    """The lease directory. Every method either completes durably or raises OSError."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._check_directory()

    def _check_directory(self) -> None:
        st = os.lstat(self.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{self.directory}: not a directory (a symlink or other file)")
        if st.st_uid != os.geteuid():
            raise StoreError(f"{self.directory}: owned by uid {st.st_uid}, expected {os.geteuid()}")
        if st.st_mode & 0o077:
            raise StoreError(f"{self.directory}: mode {stat.S_IMODE(st.st_mode):04o} lets others "
                             "in; expected 0700 (chmod 700 it)")

    def write(self, record: LeaseRecord) -> None:
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        tmp = os.path.join(self.directory, TMP_PREFIX + record.filename)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, os.path.join(self.directory, record.filename))
        self._sync_directory()

    def delete(self, record: LeaseRecord) -> None:
        try:
            os.unlink(os.path.join(self.directory, record.filename))
        except FileNotFoundError:
            return
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load_all(self, remove_leftovers: bool = True) -> tuple[list[LeaseRecord], list[str]]:
        """(records, rejected file names). Left-over temporary files are removed, unless
        ``remove_leftovers`` is False (a reader beside a running daemon: the file may be a
        write in progress)."""
        records, rejected = [], []
        for name in sorted(os.listdir(self.directory)):
            if name in IGNORED:
                continue
            if name.startswith(TMP_PREFIX):
                if remove_leftovers:
                    self._remove_quietly(name)
                continue
            try:
                records.append(self._load(name))
            except (BadRecord, OSError, ValueError) as exc:
                log.error("lease file %s/%s skipped: %s", self.directory, name, exc)
                rejected.append(name)
        return records, rejected

    def _load(self, name: str) -> LeaseRecord:
        if not name.endswith(SUFFIX):
            raise BadRecord("not a lease file name")
        fd = os.open(os.path.join(self.directory, name), os.O_RDONLY | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            _check_file(st)
            raw = os.read(fd, MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_FILE_BYTES:
            raise BadRecord(f"larger than {MAX_FILE_BYTES} bytes")
        record = parse_record(json.loads(raw.decode("utf-8")))
        if record.filename != name:
            raise BadRecord(f"content names {record.filename}")
        return record

    def _remove_quietly(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except OSError as exc:
            log.warning("cannot remove %s/%s: %s", self.directory, name, exc)


def _check_file(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise BadRecord("not a regular file")
    if st.st_uid != os.geteuid():
        raise BadRecord(f"owned by uid {st.st_uid}, not {os.geteuid()}")
    if st.st_mode & 0o077:
        raise BadRecord(f"mode {stat.S_IMODE(st.st_mode):04o}, expected 0600")
