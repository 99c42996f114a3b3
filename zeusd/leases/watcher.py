"""One thread that waits, with epoll, for any watched process to exit.

No polling loop: the thread sleeps in epoll_wait until a pidfd becomes readable
(its process exited) or the wake-up eventfd is written (stop). Watches are
one-shot: a pidfd that fired is removed before ``on_exit`` runs, so a slow
restore never makes it fire again.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import Callable, Hashable

log = logging.getLogger(__name__)


class ExitWatcher:
    """Calls ``on_exit(key)`` on the watcher thread when the process behind a watched pidfd exits.

    The watcher never closes a pidfd: the caller owns them (and must ``unwatch``
    before closing one, or epoll would keep watching a reused descriptor number).
    """

    def __init__(self, on_exit: Callable[[Hashable], None]) -> None:
        self._on_exit = on_exit
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._keys: dict[int, Hashable] = {}
        self._soon: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="zeusd-lease-watcher", daemon=True)
        self._thread.start()

    def watch(self, key: Hashable, pidfd: int) -> None:
        with self._lock:
            self._keys[pidfd] = key
            self._epoll.register(pidfd, select.EPOLLIN | select.EPOLLONESHOT)

    def unwatch(self, pidfd: int) -> None:
        with self._lock:
            if self._keys.pop(pidfd, None) is not None and not self._epoll.closed:
                self._epoll.unregister(pidfd)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the watcher thread (a restore that must not run on the caller's thread,
        e.g. a GPU worker that would then wait for itself)."""
        with self._lock:
            if not self._stopping:
                self._soon.append(fn)
                os.eventfd_write(self._wake, 1)
                return
        fn()  # stopped: nobody else will run it

    def stop(self) -> None:
        """Ends the thread and closes epoll; pending exits are not reported any more."""
        with self._lock:
            self._stopping = True
        os.eventfd_write(self._wake, 1)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._lock:
            self._keys.clear()
            self._epoll.close()
        os.close(self._wake)

    def _run(self) -> None:
        while not self._stopping:
            for fd, _ in self._epoll.poll():
                if fd == self._wake:
                    self._run_soon()
                    continue
                if self._stopping:
                    continue
                with self._lock:
                    key = self._keys.pop(fd, None)
                    if key is not None:
                        self._epoll.unregister(fd)
                if key is not None:
                    self._report(key)

    def _run_soon(self) -> None:
        os.eventfd_read(self._wake)
        with self._lock:
            soon, self._soon = self._soon, []
        for fn in soon:
            self._guarded(fn, "a deferred restore")

    def _report(self, key: Hashable) -> None:
        self._guarded(lambda: self._on_exit(key), f"restoring the leases of {key}")

    @staticmethod
    def _guarded(fn: Callable[[], None], what: str) -> None:
        try:
            fn()
        except Exception:  # one failed restore must not end the watching of every other owner
            log.exception("%s failed", what)
