"""An unprivileged user's process, connected on a real Unix socket, holds a lease; SIGKILL puts
the value back, and the lease names that user."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile

from zeusd.leases import events as ev
from zeusd.leases.owner import pin_unix_peer
from zeusd.transport.peercred import unix_peer

from tests.support.users import create_user, delete_user, needs_real_users, user_python

from .support import CONNECT_AND_SLEEP, POWER, Events, FakeKnobs, new_book

@needs_real_users
def test_a_real_users_process_is_the_owner(lease_dir):
    user = create_user()
    room = tempfile.mkdtemp(prefix="zeusd-lease-")
    os.chmod(room, 0o755)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(room, "s.sock"))
    os.chmod(os.path.join(room, "s.sock"), 0o666)
    listener.listen(1)
    child = subprocess.Popen(["setpriv", "--reuid", str(user.uid), "--regid", str(user.gid),
                              "--clear-groups", user_python(), "-c", CONNECT_AND_SLEEP,
                              os.path.join(room, "s.sock")])
    device, events = FakeKnobs(), Events()
    book = new_book(lease_dir, device, events)
    try:
        conn, _ = listener.accept()
        caller = unix_peer(conn)
        pinned = pin_unix_peer(conn, caller.uid, caller.pid, caller.start_time_ticks)
        assert (pinned.owner.uid, pinned.owner.pid) == (user.uid, child.pid)
        with book.change(pinned, 0, POWER, 300_000):
            device.hw[(0, POWER)] = 300_000
        conn.close()  # the connection ends; the lease does not
        assert book.leases()[0].holders[0][0].uid == user.uid
        child.kill()
        restored = events.wait(ev.RESTORED)
        assert restored.holder.uid == user.uid and device.hw[(0, POWER)] == 700_000
    finally:
        child.kill()
        child.wait()
        book.stop(keep_leases=True)
        listener.close()
        subprocess.run(["rm", "-rf", room], check=False)
        delete_user(user)
