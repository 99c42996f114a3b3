"""Denial floods: past a small burst, a caller's denials are coalesced into counted records.

Anyone who can reach the socket can make zeusd deny as fast as it answers.
One journal record per denial would let that caller exhaust journald's rate
limit for the unit (by default 10000 messages per 30 s) and so make the
journal drop *other* records, allowed changes included. So, per caller (Unix
uid, token subject, or anonymous TCP) and per window of ``window_s``:

- the first ``burst`` denials are written at once, each with ``ZEUSD_COUNT=1``
  (a person at a terminal never gets past this);
- further denials are only counted, per kind (operation, GPU, rule, policy,
  process: every field but the message and the values asked for);
- when the window ends, one record per kind says how many there were
  (``ZEUSD_COUNT=n``, ``ZEUSD_COALESCED=true``, the last one's fields and message).

Summed over records, ``ZEUSD_COUNT`` is exactly the number of denials, and a
flooding caller costs the journal at most ``burst`` + (kinds it used) records
per window. Allowed changes and policy events are never coalesced. Pending
counts are written at exit.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref

WINDOW_S = 1.0
BURST = 10
_CALLER_FIELDS = ("ZEUSD_CALLER_TRANSPORT", "ZEUSD_CALLER_UID", "ZEUSD_CALLER_TOKEN_SUBJECT")
_NOT_IN_KIND = frozenset(("MESSAGE", "ZEUSD_NEW_VALUE", "ZEUSD_OLD_VALUE", "PRIORITY"))


class _Window:
    """One caller's denials in one window: how many were written, what was counted."""

    __slots__ = ("opened_s", "written", "counted")

    def __init__(self, opened_s: float) -> None:
        self.opened_s = opened_s
        self.written = 0
        self.counted: dict[tuple, list] = {}  # kind -> [count, last fields]


class DenialCoalescer:
    """``offer(fields)`` -> write now?; counted denials are passed to ``emit`` later."""

    def __init__(self, emit, *, window_s: float = WINDOW_S, burst: int = BURST,
                 clock=time.monotonic, background: bool = True) -> None:
        self._emit = emit
        self.window_s = window_s
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, _Window] = {}
        self._wake = threading.Event()
        if background:
            self._start_flusher()

    def offer(self, fields: dict[str, str]) -> bool:
        """True: write this denial now. False: it was counted for its window's record."""
        caller = tuple(fields.get(name, "") for name in _CALLER_FIELDS)
        now = self._clock()
        ended = None
        with self._lock:
            window = self._windows.get(caller)
            if window is not None and now - window.opened_s >= self.window_s:
                ended, window = window, None  # over, though not flushed yet: a fresh budget
            if window is None:
                window = self._windows[caller] = _Window(now)
                self._wake.set()
            if window.written < self.burst:
                window.written += 1
                write_now = True
            else:
                self._count(window, fields)
                write_now = False
        if ended is not None:
            self._write_counts(ended, now)
        return write_now

    @staticmethod
    def _count(window: _Window, fields: dict[str, str]) -> None:
        kind = tuple(sorted((k, v) for k, v in fields.items() if k not in _NOT_IN_KIND))
        entry = window.counted.get(kind)
        if entry is None:
            window.counted[kind] = [1, fields]
        else:
            entry[0] += 1
            entry[1] = fields

    def flush(self, *, everything: bool = False) -> None:
        """Write the counts of the windows that have ended (of all: ``everything``)."""
        now = self._clock()
        ended = []
        with self._lock:
            for caller, window in list(self._windows.items()):
                if everything or now - window.opened_s >= self.window_s:
                    ended.append(window)
                    del self._windows[caller]
        for window in ended:
            self._write_counts(window, now)

    def _write_counts(self, window: _Window, now: float) -> None:
        for count, fields in window.counted.values():
            self._emit(summary(fields, count, now - window.opened_s, self.burst))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._windows)

    def _start_flusher(self) -> None:
        ref = weakref.ref(self)
        thread = threading.Thread(target=_flush_loop, args=(ref, self._wake, self.window_s),
                                  name="zeusd-audit-flush", daemon=True)
        thread.start()
        atexit.register(_flush_at_exit, ref)


def summary(fields: dict[str, str], count: int, span_s: float, burst: int) -> dict[str, str]:
    """The record standing for ``count`` denials like ``fields``."""
    record = dict(fields)
    record["ZEUSD_COUNT"] = str(count)
    record["ZEUSD_COALESCED"] = "true"
    record["MESSAGE"] = (f"{fields.get('MESSAGE', '')} [{count} denials like this one in "
                         f"{span_s:.1f} s, past the first {burst} written one by one]")
    return record


def _flush_loop(ref, wake: threading.Event, window_s: float) -> None:
    while True:
        wake.wait()  # sleep until some caller was denied
        time.sleep(window_s)
        coalescer = ref()
        if coalescer is None:
            return
        coalescer.flush()
        wake.clear()  # before looking: a window opened from now on sets it again
        if coalescer.pending:
            wake.set()
        del coalescer


def _flush_at_exit(ref) -> None:
    coalescer = ref()
    if coalescer is not None:
        coalescer.flush(everything=True)
