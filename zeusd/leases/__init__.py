"""Leases: what a client changed is put back when that client's process exits.

A lease is held per (GPU index, knob), the knobs being ``power_limit`` (mW, int),
``gpu_locked_clocks`` and ``mem_locked_clocks`` ((min_mhz, max_mhz), or None for
"not locked") and ``persistence_mode`` (bool). A client's first change of a knob
captures the value before it and opens a lease owned by the calling *process*
(pinned by a pidfd, so closing an HTTP connection ends nothing); later changes by
the same process keep the first capture. When the process exits, its pidfd turns
readable, one epoll thread wakes and the capture is written back at once, by
compare-and-swap: only if the knob still holds what the lease set (an
administrator's later change wins, and is reported). Leases are files, fsync'd
before every hardware write, so a daemon crash loses nothing: the next start
re-adopts the leases of processes that still live and restores the others.

Integration (how the daemon wires this in)
==========================================

Start (daemon.py, after the GPU manager exists, before serving)::

    book = LeaseBook(state_dir + "/leases", ManagedKnobs(manager), on_event=audit_lease)
    book.start()   # re-adopt living owners; restore (by CAS) the leases of dead ones

``state_dir`` is ``$STATE_DIRECTORY`` (the unit's ``StateDirectory=zeusd``, mode
0700, so ``/var/lib/zeusd``), a ``--lease-dir`` flag for ``make demo``. Not
``/run/zeusd``: a tmpfs is fine for crashes but the socket's directory must stay
0755. A directory that is not ours or lets others in raises ``StoreError``: a
start error (``zeusd: error: ...``), the unit then fails rather than trust it.
Corrupt or hostile lease files never stop the start; they are logged and listed
in ``book.rejected_files`` (and left in place for the administrator).

Identity (transport). The transport already reads SO_PEERCRED (uid, pid, start
time) at accept. Add to the WSGI environ a callable (e.g. ``zeusd.pin_owner``)
that returns ``pin_unix_peer(sock, caller.uid, caller.pid, caller.start_time_ticks)``:
SO_PEERPIDFD on the connection (Linux 6.5+), else ``pidfd_open`` checked against
the accept-time start time. Call it only for a write whose rule restores on exit
(reads cost no descriptor), once per ``book.change`` call: the book takes over
each pidfd and closes the ones it does not keep. ``OwnerGone`` there means the client already exited:
refuse the change (409 "the calling process has exited"); it would be undone at once.
TCP callers (tokens) have no process: pass ``pinned=None``; they never open a
lease (their changes are permanent, as with ``restore_on_exit = false``) but do
meet conflicts like anybody.

The GPU write path (service/gpu_control.py), per GPU and knob, after the policy
allowed the change and BEFORE queueing it (so a conflict is a synchronous 409,
also for ``block=false``)::

    change = book.change(pinned, gpu, knob, value,
                         restore_on_exit=rule.restore_on_exit,
                         may_share=rule.share_leases,      # the policy switch to share
                         override=caller.is_root or rule.override_leases)

It may raise ``LeaseConflict`` (409; body names holder_uid, holder_pid,
holder_command, since), ``LeaseBusy`` (409: the knob is being written or
restored, or 128 processes already hold leases), ``OSError`` (the lease file
could not be written: refuse with 503, fail closed) or the capture read's own
error. A multi-GPU request begins every GPU first and, if one raises, aborts
the others (``change.abort()``) before anything is queued. Then, in the GPU's
worker job::

    try: apply(device, ...)                     # the hardware write
    except GpuTimedOut: change.abort(maybe_applied=True); raise  # may still happen
    except Exception: change.abort(); raise     # nothing changed
    else: change.commit()

and a queued job that is dropped (``on_drop``) calls ``change.abort()``. The
value before is read by the book through ``ManagedKnobs`` (in the GPU's FIFO,
ahead of the write); pass ``before=`` when it was read already. Knob per
operation: set/reset_gpu_locked_clocks -> ``gpu_locked_clocks`` (reset is the
value None), set/reset_mem_locked_clocks -> ``mem_locked_clocks``,
reset_locked_clocks -> both (two changes), set_power_limit -> ``power_limit``,
set_persistence_mode -> ``persistence_mode``. Every change goes through the book,
also those that open no lease: the book remembers the daemon's last write of the
clock knobs, which NVML cannot read back.

Release early (a route, e.g. ``POST /leases/release?gpu_ids=..``, from an HTTP
thread): ``book.release((caller.pid, caller.start_time_ticks), gpu_index, knob)``;
it restores now, by CAS, and returns what the caller no longer holds.

Listing (a read route and ``zeusd leases``): ``book.leases()`` -> ``LeaseView``
(GPU, knob, captured, set value, holders with uid/pid/comm/cmdline and since,
age); the route keeps the GPUs the caller may read. ``/discover`` counts them.
``book.has_leases()`` is the idle-exit condition's lease half.

Stop. After waitress stopped and streams ended, while the GPU manager still runs
(restores go through it): ``book.stop(keep_leases=keep_leases_on_stop(dir,
config.keep_leases_on_stop))``, then ``manager.drain()``/``close()``. ``stop``
restores every lease (CAS) unless told to keep them. systemd does not tell the
service a stop from a restart (see ``shutdown.py``), so a restart that should keep
leases says so beforehand with ``request_keep(dir)`` — to be exposed as ``zeusd
leases keep-on-restart`` and run by the package's postinst before it restarts the
service on an upgrade — and ``--keep-leases-on-stop`` keeps them on every stop.
A SIGKILLed daemon restores nothing; its next activation (``Restart=on-failure``
or the next connection) does, in ``book.start()``.

Audit: ``on_event(LeaseEvent)`` is called once per event, outside the book's lock,
from whichever thread caused it (HTTP thread, GPU worker, the watcher thread);
``audit_lease = events.to_auditor(auditor)`` writes one record per event
(``ZEUSD_EVENT=lease_<kind>``, fields as ``ZEUSD_<NAME>``). Kinds: opened, extended, shared, conflict,
override (one per displaced holder), restored, restore_skipped (the value was
changed by someone else: ``current`` says what it holds), restore_failed
(device error; the lease ends), released, adopted, restored_at_start, dropped
(overridden by a permanent change, or recorded before the last reboot).
``fields()`` gives gpu_index, knob, captured, set_value, current, holder_uid,
holder_pid, holder_command, other_uid/pid/command (the refused or overriding
process), reason, since_s.

Limitations. NVML has no getter for locked clocks: the capture of a clock knob is
the daemon's own last write of it ("not locked" if it never wrote one), and the
CAS compares with the daemon's last write, so a clock change by ``nvidia-smi``
behind the daemon's back is invisible (the restore overwrites it); after a
restart the last write is taken from the lease file. A restore that fails on the
device is reported (restore_failed) and not retried. Each owner costs one
descriptor while it holds leases (at most 128 owners; waitress's select() cannot
watch descriptors above 1023).
"""

from .book import LeaseBook
from .device import NO_READING, GpuKnobs, KnobIO, ManagedKnobs
from .errors import LeaseBusy, LeaseConflict
from .events import LeaseEvent, to_auditor
from .owner import Owner, OwnerGone, PinnedOwner, pin_unix_peer
from .records import StoreError
from .shutdown import keep_leases_on_stop, request_keep
from .state import Change, LeaseView

__all__ = ["Change", "GpuKnobs", "KnobIO", "LeaseBook", "LeaseBusy", "LeaseConflict", "LeaseEvent",
           "LeaseView", "ManagedKnobs", "NO_READING", "Owner", "OwnerGone", "PinnedOwner",
           "StoreError", "keep_leases_on_stop", "pin_unix_peer", "request_keep", "to_auditor"]
