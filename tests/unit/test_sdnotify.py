"""sd_notify goes through systemd-python where it is installed and through our own datagram
only where it is not; both deliver the same state to a real $NOTIFY_SOCKET."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys

import pytest

from tests.support.daemon import REPO
from tests.support.harness import short_dir
from zeusd.transport import sdnotify

# The distribution's Python, where the .deb's python3-systemd lives (the test venv has none).
SYSTEM_PYTHON = "/usr/bin/python3"


def _system_python_has_systemd() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import systemd.daemon"],
                          capture_output=True, timeout=60).returncode == 0


@pytest.fixture
def notify_socket():
    directory = short_dir("zsn-")
    path = str(directory / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    yield path, sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def without_systemd_python(monkeypatch):
    """sdnotify as imported where `import systemd.daemon` fails; restored afterwards."""
    monkeypatch.setitem(sys.modules, "systemd", None)
    monkeypatch.setitem(sys.modules, "systemd.daemon", None)
    yield importlib.reload(sdnotify)
    monkeypatch.undo()
    importlib.reload(sdnotify)


def test_without_systemd_python_our_datagram_reaches_the_socket(without_systemd_python,
                                                                notify_socket, monkeypatch):
    path, sock = notify_socket
    assert without_systemd_python.systemd_notify is None
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert without_systemd_python.notify("READY=1") is True
    assert sock.recv(256) == b"READY=1"


def test_without_systemd_python_and_without_systemd_nothing_is_sent(without_systemd_python,
                                                                    monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert without_systemd_python.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/zeusd-notify")
    assert without_systemd_python.notify("READY=1") is False


@pytest.mark.skipif(not _system_python_has_systemd(),
                    reason="needs python3-systemd for /usr/bin/python3 (the .deb's dependency)")
@pytest.mark.parametrize("state", ["READY=1", "STOPPING=1"])
def test_with_systemd_python_its_notify_sends_the_state(notify_socket, state):
    path, sock = notify_socket
    # Our own sender is removed: only systemd-python's can deliver the datagram.
    script = ("import sys; from zeusd.transport import sdnotify; "
              "assert sdnotify.systemd_notify is not None, 'systemd-python not used'; "
              "sdnotify._send = None; "
              f"sys.exit(0 if sdnotify.notify({state!r}) else 3)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "PYTHONPATH": str(REPO),
           "NOTIFY_SOCKET": path}
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert sock.recv(256) == state.encode()
