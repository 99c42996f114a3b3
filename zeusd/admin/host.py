"""What `zeusd doctor` asks the host: systemd, the installed units, the socket, persistenced.

Read-only: it runs `systemctl show`, reads files, and (for the sandbox check) starts a
transient unit that only opens NVML.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys

UNIT = "zeusd.service"
UNIT_FILES = ("/etc/systemd/system/zeusd.service", "/lib/systemd/system/zeusd.service",
              "/usr/lib/systemd/system/zeusd.service")
DROP_IN_GLOBS = ("/usr/lib/systemd/system/zeusd.service.d/*.conf",
                 "/lib/systemd/system/zeusd.service.d/*.conf",
                 "/run/systemd/system/zeusd.service.d/*.conf",
                 "/etc/systemd/system/zeusd.service.d/*.conf")
PROBE_TIMEOUT_S = 60


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 here."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def unit_properties(*names: str) -> dict[str, list[str]] | None:
    """`systemctl show zeusd.service -p ...`: each property's values (DeviceAllow repeats).
    None when systemd does not run here or the unit is not installed."""
    if not systemd_running():
        return None
    args = ["systemctl", "show", UNIT] + [f"-p{n}" for n in ("LoadState", *names)]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    props: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props.setdefault(key, []).append(value)
    if props.get("LoadState") != ["loaded"]:
        return None
    return props


def unit_file_text(unit_file: str | None) -> tuple[str, str] | None:
    """(where, text) of the unit file and its drop-ins in systemd's order, or None."""
    paths = [unit_file] if unit_file else [p for p in UNIT_FILES if os.path.exists(p)][:1]
    if not paths or not os.path.exists(paths[0]):
        return None
    if not unit_file:
        paths += sorted(p for g in DROP_IN_GLOBS for p in glob.glob(g))
    text = ""
    for path in paths:
        with open(path) as f:
            text += f.read() + "\n"
    return ", ".join(paths), text


# The service's properties that decide whether NVML can start in its sandbox: device
# access, capabilities, and the process restrictions a driver library could trip over
# (seccomp, W^X memory, personality). Copied verbatim from `systemctl show zeusd.service`.
SANDBOX_PROPERTIES = ("DevicePolicy", "DeviceAllow", "CapabilityBoundingSet", "NoNewPrivileges",
                      "MemoryDenyWriteExecute", "LockPersonality", "SystemCallArchitectures",
                      "SystemCallFilter", "SystemCallErrorNumber")


def sandbox_probe(props: dict[str, list[str]]) -> tuple[str, dict]:
    """Open NVML in a transient unit with the service's sandbox properties.

    Returns ("ok"|"failed"|"not checked", details). `systemd-run --pipe --wait` runs
    `zeusd doctor --probe-nvml` with SANDBOX_PROPERTIES copied from zeusd.service, so a
    device list, system call filter or memory protection that stops NVML shows here."""
    if not systemd_running():
        return "not checked", {"why": "systemd is not running here (no /run/systemd/system)"}
    if shutil.which("systemd-run") is None:
        return "not checked", {"why": "systemd-run is not installed"}
    argv = ["systemd-run", "--pipe", "--wait", "--quiet", "--collect"]
    for name in SANDBOX_PROPERTIES:
        argv += [arg for value in props.get(name, []) if value for arg in ("-p", f"{name}={value}")]
    for name in ("PYTHONPATH", "LD_LIBRARY_PATH"):
        if os.environ.get(name):
            argv += ["-E", f"{name}={os.environ[name]}"]
    argv += [sys.executable, "-m", "zeusd", "doctor", "--probe-nvml"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return "not checked", {"why": f"systemd-run failed: {exc}"}
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return "not checked", {"why": "the probe printed nothing (systemd-run exit "
                               f"{res.returncode}: {res.stderr.strip()[-300:]})"}
    result = json.loads(lines[-1])
    result["properties"] = [n for n in SANDBOX_PROPERTIES if props.get(n)]
    return ("ok" if result.get("ok") else "failed"), result


def persistenced_running(proc_root: str = "/proc") -> bool:
    """Is an nvidia-persistenced process alive? (comm is cut to 15 characters)."""
    for comm in glob.glob(os.path.join(proc_root, "[0-9]*", "comm")):
        try:
            with open(comm) as f:
                if f.read().strip() == "nvidia-persiste":
                    return True
        except OSError:
            continue
    return False


def socket_state(path: str) -> dict | None:
    """Owner, group and mode of the socket file, or None when it is absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return {"path": path, "is_socket": stat.S_ISSOCK(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "owner": _name(st.st_uid, user=True),
            "group": _name(st.st_gid, user=False), "mode": f"{stat.S_IMODE(st.st_mode):04o}"}


def _name(ident: int, user: bool) -> str:
    import grp
    import pwd

    try:
        return pwd.getpwuid(ident).pw_name if user else grp.getgrgid(ident).gr_name
    except KeyError:
        return str(ident)
