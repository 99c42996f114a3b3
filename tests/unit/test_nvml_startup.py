"""When NVML cannot start, zeusd names the likely cause and the fix, one class at a time.

Each case runs the real NvmlBackend against the fake libnvidia-ml.so.1 in a child process,
with the fake's init failure modes (FAKE_NVML_INIT_ERROR, FAKE_NVML_CTL: open this node
first, as the real library opens /dev/nvidiactl) and a prepared /dev and /proc under a temp
dir that the diagnosis is pointed at (its dev_root/proc_root parameters). Capabilities are
really dropped with setpriv where a case needs it. The daemon test runs `zeusd serve`.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import env_with_repo, zeusd_command
from tests.unit.test_nvml_backend import REPO, child, fake_lib_dir  # noqa: F401 (fixtures)

DATA = Path(__file__).resolve().parent / "data" / "proc-devices"
NVRM_VERSION = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  "
                "Release Build  (dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 07:09:55 UTC 2025")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                                   reason="needs root and setpriv to drop capabilities")
DROP_SYS_ADMIN = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"]

DIAGNOSE = """
import json
from zeusd.devices.diagnose import diagnose_init_failure
from zeusd.devices.errors import NvmlError
from zeusd.devices.nvml import NvmlBackend
out = {}
try:
    NvmlBackend()
except NvmlError as e:
    d = diagnose_init_failure(e, dev_root=DEV, proc_root=PROC)
    out = {"code": e.code, "cause": d.cause, "line": d.line()}
"""


@pytest.fixture
def node(tmp_path):
    """A fake node's /dev and /proc: driver loaded (580 names), /dev/nvidiactl present."""
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    (proc / "driver" / "nvidia").mkdir(parents=True)
    (proc / "driver" / "nvidia" / "version").write_text(NVRM_VERSION + "\nGCC version: 12\n")
    (proc / "devices").write_text((DATA / "driver-580.txt").read_text())
    dev.mkdir()
    (dev / "nvidiactl").write_text("")
    return dev, proc


def diagnose(child, node, env=None, prefix=None, prelude_extra="") -> dict:  # noqa: F811
    dev, proc = node
    prelude = f"DEV, PROC = {str(dev)!r}, {str(proc)!r}\n" + prelude_extra + DIAGNOSE
    return child("", prelude=prelude, prefix=prefix,
                 env={"FAKE_NVML_CTL": str(dev / "nvidiactl"), **(env or {})})


def test_no_library(child, node):  # noqa: F811
    no_library = ("from zeusd.devices import nvml\n"
                  "def no_library(name, *a, **k):\n    raise OSError(name)\n"
                  "nvml.pynvml.CDLL = no_library  # as if no driver were installed\n")
    out = diagnose(child, node, prelude_extra=no_library)
    assert out["cause"] == "no-library"
    assert out["line"].startswith("Likely cause: libnvidia-ml.so.1 was not found")
    assert "install the NVIDIA driver" in out["line"] and "--gpu-backend simulated" in out["line"]


def test_driver_not_loaded(child, node):  # noqa: F811
    dev, proc = node
    shutil.rmtree(proc / "driver")
    (proc / "devices").write_text("Character devices:\n  1 mem\n\nBlock devices:\n  8 sd\n")
    (dev / "nvidiactl").unlink()
    out = diagnose(child, node)
    assert (out["code"], out["cause"]) == (9, "driver-not-loaded")
    assert "the NVIDIA kernel driver is not loaded" in out["line"]
    assert "Fix: load it with `modprobe nvidia`" in out["line"]


def test_device_node_missing(child, node):  # noqa: F811
    dev, _ = node
    (dev / "nvidiactl").unlink()
    out = diagnose(child, node)
    assert (out["code"], out["cause"]) == (9, "no-device-node")
    assert f"{dev}/nvidiactl does not exist" in out["line"]
    assert "nvidia-modprobe -c 0" in out["line"] and "nvidia-persistenced" in out["line"]


@needs_setpriv
def test_opening_nvidiactl_refused(child, node):  # noqa: F811
    dev, _ = node
    os.chmod(dev / "nvidiactl", 0)  # without CAP_DAC_OVERRIDE even root is refused, as by a cgroup
    out = diagnose(child, node, prefix=DROP_DAC)
    assert (out["code"], out["cause"]) == (17, "device-refused")
    assert f"opening {dev}/nvidiactl read-write is refused (Permission denied)" in out["line"]
    assert "DeviceAllow=char-nvidiactl rw, char-nvidia rw" in out["line"]


def test_opening_nvidiactl_fails_otherwise(child, node):  # noqa: F811
    if os.geteuid() != 0 or os.path.exists("/proc/driver/nvidia"):
        pytest.skip("needs root to mknod, and no NVIDIA driver (it would answer 195:255)")
    dev, _ = node
    (dev / "nvidiactl").unlink()
    os.mknod(dev / "nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))  # no driver behind it
    out = diagnose(child, node)
    if out.get("cause") == "device-refused":
        pytest.skip("this file system refuses device nodes (nodev)")
    assert (out["code"], out["cause"]) == (999, "device-error")
    assert f"opening {dev}/nvidiactl failed (No such device or address)" in out["line"]
    assert "ls -l /dev/nvidia*" in out["line"]


@needs_setpriv
def test_no_cap_sys_admin(child, node):  # noqa: F811
    out = diagnose(child, node, env={"FAKE_NVML_INIT_ERROR": "4"}, prefix=DROP_SYS_ADMIN)
    assert (out["code"], out["cause"]) == (4, "no-cap-sys-admin")
    assert "without CAP_SYS_ADMIN" in out["line"] and "run zeusd as root" in out["line"]


def test_no_permission_with_cap_sys_admin(child, node):  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_ADMIN) to tell NO_PERMISSION from a missing capability")
    out = diagnose(child, node, env={"FAKE_NVML_INIT_ERROR": "4"})
    assert (out["code"], out["cause"]) == (4, "no-permission")
    assert "'Insufficient Permissions' although the daemon has CAP_SYS_ADMIN" in out["line"]


def test_library_and_module_versions_differ(child, node):  # noqa: F811
    out = diagnose(child, node, env={"FAKE_NVML_INIT_ERROR": "18"})
    assert (out["code"], out["cause"]) == (18, "version-mismatch")
    assert "580.65.06" in out["line"] and "Fix: reboot" in out["line"]


def test_unknown_failure_with_everything_in_place(child, node):  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("needs root so that the missing capability is not taken for the cause")
    out = diagnose(child, node, env={"FAKE_NVML_INIT_ERROR": "999"})
    assert (out["code"], out["cause"]) == (999, "unknown")
    assert "NVML could not start (Unknown Error)" in out["line"] and "zeusd doctor" in out["line"]


def test_the_daemon_says_it_in_one_line_and_exits(fake_lib_dir, tmp_path):  # noqa: F811
    env = {**env_with_repo(), "LD_LIBRARY_PATH": str(fake_lib_dir),
           "FAKE_NVML_INIT_ERROR": "18", "FAKE_NVML_STATE": str(tmp_path / "state")}
    sock = tmp_path / "z.sock"
    proc = subprocess.run(zeusd_command("serve", "--socket-path", str(sock), "--enable",
                                        "gpu-read", "--policy", str(tmp_path / "none.toml")),
                          env=env, capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "zeusd: error: cannot open the GPUs: nvmlInit failed (RM has detected an NVML/RM "
        "version mismatch.). Likely cause: libnvidia-ml.so.1 and the loaded NVIDIA kernel "
        f"module are different versions (loaded: {_loaded_version()}); the driver was upgraded "
        "but the old module is still loaded. Fix: reboot, or stop every GPU user and reload "
        "the module (`rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia; modprobe nvidia`)"]
    assert "Traceback" not in proc.stderr and not sock.exists()


def _loaded_version() -> str:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip() or "unknown"
    except OSError:
        return "unknown"

