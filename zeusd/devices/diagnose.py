"""Why NVML could not start, from what zeusd can see, and what fixes it.

nvmlInit's own code often hides the cause: a devices cgroup that blocks
/dev/nvidiactl shows up as UNKNOWN or OPERATING_SYSTEM, a missing node as
DRIVER_NOT_LOADED. So after a failure we look at the machine in the order the
driver needs things: the library, the kernel module (/proc/driver/nvidia,
/proc/devices), the device node, opening it, then the privileges. ``dev_root`` and
``proc_root`` are parameters so tests (and `zeusd doctor`) can point them at a
prepared directory.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from .errors import LIB_RM_VERSION_MISMATCH, LIBRARY_NOT_FOUND, NO_PERMISSION, NvmlError

# /proc/devices names of the NVIDIA GPU major (195). Up to driver 535 one name,
# "nvidia-frontend" (nv-frontend.c); from 545 "nvidia" (GPUs, minors 0-247) and
# "nvidiactl" (minor 255) (nv.c). NVML opens /dev/nvidiactl and /dev/nvidiaN read-write.
GPU_MAJOR_NAMES = ("nvidia", "nvidiactl", "nvidia-frontend")
CAP_SYS_ADMIN_BIT = 21


@dataclass(frozen=True)
class Diagnosis:
    """``cause`` is a stable key (for `zeusd doctor --json` and tests)."""

    cause: str
    likely: str
    fix: str

    def line(self) -> str:
        return f"Likely cause: {self.likely}. Fix: {self.fix}"


def has_cap_sys_admin(status_path: str = "/proc/self/status") -> bool:
    """CAP_SYS_ADMIN (bit 21) in the effective set; euid 0 when that cannot be read.

    Root is not enough on its own: a unit's CapabilityBoundingSet= can take it away."""
    effective = _cap_eff(status_path)
    return os.geteuid() == 0 if effective is None else effective


def _cap_eff(status_path: str) -> bool | None:
    """CAP_SYS_ADMIN in CapEff, or None when it cannot be read."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN_BIT & 1)
    except (OSError, ValueError):
        pass
    return None


def driver_version(proc_root: str = "/proc") -> str | None:
    """The loaded kernel module's version line, e.g. 'NVRM version: NVIDIA UNIX ... 580.65.06 ...'."""
    try:
        with open(os.path.join(proc_root, "driver", "nvidia", "version")) as f:
            return f.readline().strip() or None
    except OSError:
        return None


def gpu_major_names(proc_root: str = "/proc") -> list[str]:
    """The NVIDIA GPU major's names in /proc/devices ([] when the module is not loaded)."""
    try:
        with open(os.path.join(proc_root, "devices")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    names = [line.split(None, 1)[1].strip() for line in lines
             if len(line.split(None, 1)) == 2 and line.split()[0].isdigit()]
    return [n for n in names if n in GPU_MAJOR_NAMES]


def diagnose_init_failure(error: NvmlError, dev_root: str = "/dev", proc_root: str = "/proc",
                          cap_sys_admin: bool | None = None) -> Diagnosis:
    """The likely cause of nvmlInit's ``error`` on this machine, and its fix."""
    if error.code == LIBRARY_NOT_FOUND:
        return Diagnosis("no-library", "libnvidia-ml.so.1 was not found (the NVIDIA driver's "
                         "user-space library is not installed, or not in the loader's path)",
                         "install the NVIDIA driver (its libnvidia-ml.so.1 must match the kernel "
                         "module), run `ldconfig`, or try zeusd with --gpu-backend simulated")
    if error.code == LIB_RM_VERSION_MISMATCH:
        loaded = driver_version(proc_root) or "unknown"
        return Diagnosis("version-mismatch", "libnvidia-ml.so.1 and the loaded NVIDIA kernel "
                         f"module are different versions (loaded: {loaded}); the driver was "
                         "upgraded but the old module is still loaded",
                         "reboot, or stop every GPU user and reload the module "
                         "(`rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia; modprobe nvidia`)")
    found = _node_problem(dev_root, proc_root)
    if found is not None:
        return found
    if cap_sys_admin is None:
        cap_sys_admin = has_cap_sys_admin()
    if error.code == NO_PERMISSION or not cap_sys_admin:
        return _permission(cap_sys_admin)
    return Diagnosis("unknown", f"NVML could not start ({error.text}) although the driver is "
                     f"loaded and {dev_root}/nvidiactl opens",
                     "run `zeusd doctor` for the details and compare with `nvidia-smi`; "
                     "`dmesg | grep NVRM` shows the driver's own errors")


def _node_problem(dev_root: str, proc_root: str) -> Diagnosis | None:
    """Driver not loaded, node missing, or opening it refused; None when it opens."""
    ctl = os.path.join(dev_root, "nvidiactl")
    if not os.path.isdir(os.path.join(proc_root, "driver", "nvidia")) \
            and not gpu_major_names(proc_root):
        return Diagnosis("driver-not-loaded", "the NVIDIA kernel driver is not loaded (no "
                         f"{proc_root}/driver/nvidia and no nvidia major in {proc_root}/devices)",
                         "load it with `modprobe nvidia` (install the driver if that fails); "
                         "zeusd.service starts after systemd-modules-load.service, so listing "
                         "nvidia in /etc/modules-load.d/ loads it at boot")
    if not os.path.exists(ctl):
        return Diagnosis("no-device-node", f"{ctl} does not exist: the driver is loaded but "
                         "its device nodes were not made (inside the service's sandbox the "
                         "driver's nvidia-modprobe helper cannot make them)",
                         "create them outside the sandbox: `nvidia-modprobe -c 0` or "
                         "`nvidia-smi` once as root, or enable nvidia-persistenced.service "
                         "(zeusd.service starts after it)")
    try:
        fd = os.open(ctl, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return Diagnosis("device-refused", f"opening {ctl} read-write is refused "
                             f"({exc.strerror}): a devices cgroup (the unit's DevicePolicy= "
                             "and DeviceAllow=) or the node's mode blocks it",
                             "allow the NVIDIA majors read-write in the unit: "
                             "DeviceAllow=char-nvidiactl rw, char-nvidia rw, "
                             "char-nvidia-frontend rw, char-nvidia-caps r (the current zeusd "
                             "package ships them; `zeusd doctor` compares them with "
                             "/proc/devices)")
        return Diagnosis("device-error", f"opening {ctl} failed ({exc.strerror})",
                         "check the node with `ls -l /dev/nvidia*` and `dmesg | grep NVRM`")
    os.close(fd)
    return None


def _permission(cap_sys_admin: bool) -> Diagnosis:
    if not cap_sys_admin:
        return Diagnosis("no-cap-sys-admin", "NVML refused the daemon: it runs without "
                         "CAP_SYS_ADMIN", "run zeusd as root (the packaged zeusd.service "
                         "does; keep CAP_SYS_ADMIN in CapabilityBoundingSet=), or serve reads "
                         "only with --enable gpu-read,cpu-read")
    return Diagnosis("no-permission", "NVML answered 'Insufficient Permissions' although the "
                     "daemon has CAP_SYS_ADMIN: the driver restricts access (e.g. "
                     "NVreg_DeviceFileMode/Uid/Gid module options, or a MIG/vGPU setting)",
                     "check `ls -l /dev/nvidia*` and the nvidia module options in "
                     "/etc/modprobe.d/, then run `zeusd doctor`")
