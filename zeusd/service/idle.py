"""Idle exit (socket activation's other half): with ``--exit-idle-after``, the daemon ends
itself once it has held no lease, served no stream and seen no request for that long;
systemd's zeusd.socket keeps listening and starts it again on the next connection.

Leases keep it running: they are restored by the watcher of a live daemon, so a daemon
holding one must stay (a stopped one would restore them all).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time

log = logging.getLogger(__name__)


class Activity:
    """Requests in flight and when the last one ended (the transport counts them)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._busy = 0
        self._last = clock()

    def begin(self) -> None:
        with self._lock:
            self._busy += 1
            self._last = self._clock()

    def end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last = self._clock()

    def touch(self) -> None:
        with self._lock:
            self._last = self._clock()

    def idle_for_s(self) -> float:
        with self._lock:
            return 0.0 if self._busy else self._clock() - self._last


ACTIVITY = Activity()  # one per process: the transport's tasks report to it


def idle_for_s(activity: Activity, book, streams_hub) -> float:
    """How long nothing has kept the daemon: 0 while a lease or a stream is open."""
    if (book is not None and book.has_leases()) or streams_hub.open_count:
        return 0.0
    return activity.idle_for_s()


def has_pending_connections(sockets) -> bool:
    """A listening socket with a connection not yet accepted (the one that woke us, say)."""
    try:
        return bool(select.select(sockets, [], [], 0)[0])
    except (OSError, ValueError):
        return True  # cannot tell: stay


def start_idle_exit(limit_s: float, book, streams_hub, sockets, activity: Activity = ACTIVITY,
                    stop=lambda: os.kill(os.getpid(), signal.SIGTERM)) -> threading.Thread:
    """A thread that calls ``stop`` (a SIGTERM to this process: the ordinary stop) once the
    daemon has been idle for ``limit_s`` and no connection waits on ``sockets``. The clock
    starts now (start-up is not idleness: the connection that started us may be waiting)."""
    check_s = min(max(limit_s / 10, 0.05), 5.0)
    activity.touch()

    def watch() -> None:
        while True:
            time.sleep(check_s)
            idle_s = idle_for_s(activity, book, streams_hub)
            if idle_s >= limit_s and not has_pending_connections(sockets):
                log.info("idle for %.0f s (no leases, streams or requests): exiting; the "
                         "socket starts zeusd again on the next connection", idle_s)
                stop()
                return

    thread = threading.Thread(target=watch, name="zeusd-idle-exit", daemon=True)
    thread.start()
    return thread
