"""Leases: what a client changed is put back when that client's process exits.

(The integration guide follows in the next commit.)
"""

from .book import Change, LeaseBook, LeaseView
from .device import NO_READING, GpuKnobs, KnobIO
from .errors import LeaseBusy, LeaseConflict
from .events import LeaseEvent
from .owner import Owner, OwnerGone, PinnedOwner, pin_unix_peer

__all__ = ["Change", "GpuKnobs", "KnobIO", "LeaseBook", "LeaseBusy", "LeaseConflict", "LeaseEvent",
           "LeaseView", "NO_READING", "Owner", "OwnerGone", "PinnedOwner", "pin_unix_peer"]
