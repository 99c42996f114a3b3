"""`zeusctl watch`: live power per GPU from the daemon's SSE stream, with a sparkline each.

On a terminal the view is redrawn in place (ANSI cursor movement); piped, each
refresh is printed as a plain block, and ``--json`` passes the events through
one per line. ``--count`` / ``--duration`` end it, so scripts and tests can use it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

from .output import print_json, sparkline, table
from .transport import Daemon
from .units import format_power

HISTORY = 40  # samples kept per GPU for the sparkline


class PowerView:
    """The last ``HISTORY`` power samples of each GPU, and their rendering."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.samples: dict[int, deque] = {i: deque(maxlen=HISTORY) for i in names}

    def add(self, event: dict) -> None:
        self.samples.setdefault(event["gpu_id"], deque(maxlen=HISTORY)).append(event["power_mw"])

    def render(self) -> str:
        rows = [[str(i), self.names.get(i, "?"), format_power(s[-1] if s else None),
                 sparkline(list(s))] for i, s in sorted(self.samples.items())]
        return table(["GPU", "NAME", "POWER", "HISTORY"], rows)


class Screen:
    """Draws frames: in place on a TTY, one after another otherwise."""

    def __init__(self, out: TextIO, interval_s: float) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval_s = interval_s
        self.lines = 0
        self.last_s = float("-inf")
        self.shown: str | None = None

    def draw(self, frame: str, force: bool = False) -> None:
        """Draw at most once per interval; ``force`` draws a frame not shown yet (the last)."""
        now = time.monotonic()
        if frame == self.shown or (not force and now - self.last_s < self.interval_s):
            return
        self.last_s, self.shown = now, frame
        if self.tty and self.lines:
            self.out.write(f"\x1b[{self.lines}F\x1b[J")  # up to the frame's start, clear below
        self.out.write(frame + ("\n" if self.tty else "\n\n"))
        self.out.flush()
        self.lines = frame.count("\n") + 1


def watch(daemon: Daemon, gpu_ids: list[int] | None, count: int | None,
          duration_s: float | None, interval_s: float, as_json: bool,
          out: TextIO | None = None) -> int:
    """Returns the number of events read. Ends after ``count`` events or ``duration_s``."""
    out = out or sys.stdout
    names = {g["id"]: g["name"] for g in daemon.get("/discover")["gpus"]
             if gpu_ids is None or g["id"] in gpu_ids}
    params = {"gpu_ids": ",".join(map(str, gpu_ids))} if gpu_ids is not None else None
    view, screen = PowerView(names), Screen(out, interval_s)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    seen = 0
    events = daemon.events("/gpu/stream_power", params)
    try:
        while count is None or seen < count:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                daemon.set_read_timeout(left)
            event = next(events, None)
            if event is None:
                break  # the daemon ended the stream (it is stopping)
            seen += 1
            if as_json:
                print_json(event, out)
            else:
                view.add(event)
                screen.draw(view.render())
    except TimeoutError:
        pass  # --duration ran out while waiting for the next event
    finally:
        daemon.close()
    if not as_json:
        screen.draw(view.render(), force=True)
    return seen
