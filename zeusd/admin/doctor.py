"""`zeusd doctor`: is this node ready for zeusd, and if not, what fixes it?

Read-only unless --write-check. Exit status 0 when no check found a problem, 1 when
one did (each problem is printed with its fix), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys

from ..config import DEFAULT_SOCKET_PATH
from ..devices.loader import BACKEND_KINDS
from . import host
from .devices import (admitted_majors, char_devices, check_allow_list, systemctl_device_allow,
                      unit_device_allow)
from .gpus import gpu_check, open_gpus, persistence_check
from .report import INFO, NOT_CHECKED, OK, PROBLEM, WARNING, Check, problems, render_json, \
    render_text

EXPECTED_SOCKET = ("root", "zeusd", "0660")  # zeusd.socket's SocketUser/SocketGroup/SocketMode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zeusd doctor", description=(
        "Check that this node is ready for zeusd: driver, device access under the unit's "
        "sandbox, GPUs, socket, policy. Read-only unless --write-check."))
    p.add_argument("--gpu-backend", choices=BACKEND_KINDS, default="nvml")
    p.add_argument("--simulated-gpus", metavar="SPEC", default=None)
    p.add_argument("--policy", default="/etc/zeusd/policy.toml", metavar="PATH")
    p.add_argument("--socket-path", default=DEFAULT_SOCKET_PATH)
    p.add_argument("--unit-file", metavar="PATH", default=None,
                   help="read DeviceAllow= from this unit file instead of systemd")
    p.add_argument("--write-check", action="store_true",
                   help="write each GPU's current power limit and persistence mode back "
                        "(never a different value) to see which setters work")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--no-sandbox-probe", action="store_true",
                   help="do not start a transient unit to open NVML under the unit's sandbox")
    p.add_argument("--dev-root", default="/dev", help=argparse.SUPPRESS)
    p.add_argument("--proc-root", default="/proc", help=argparse.SUPPRESS)
    p.add_argument("--probe-nvml", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    opts = build_parser().parse_args(argv)
    if opts.probe_nvml:
        return probe_nvml()
    checks = run_checks(opts)
    print(render_json(checks) if opts.json else render_text(checks))
    return 1 if problems(checks) else 0


def probe_nvml() -> int:
    """Inside the transient unit: can NVML start and see the GPUs? One JSON line."""
    from ..devices.errors import NvmlError
    from ..devices.nvml import NvmlBackend

    try:
        backend = NvmlBackend()
    except NvmlError as exc:
        print(json.dumps({"ok": False, "error": f"{exc.function} failed ({exc.text})"}))
        return 1
    print(json.dumps({"ok": True, "gpus": len(backend.devices())}))
    backend.close()
    return 0


def run_checks(opts) -> list[Check]:
    library, backend = open_gpus(opts.gpu_backend, opts.simulated_gpus, opts.dev_root,
                                 opts.proc_root)
    devices = _proc_devices(opts.proc_root)
    checks = [library, nodes_check(opts.dev_root, devices)]
    checks += [allow_list_check(opts.unit_file, devices), sandbox_check(opts)]
    gpus = []
    if backend is not None:
        try:
            gpus = [gpu_check(gpu, opts.write_check) for gpu in backend.devices()]
        finally:
            backend.close()
    checks += gpus
    checks.append(persistence_check(gpus, opts.gpu_backend,
                                    host.persistenced_running(opts.proc_root)))
    checks += [socket_check(opts.socket_path), policy_check(opts.policy)]
    return checks


def _proc_devices(proc_root: str) -> list[tuple[int, str]]:
    try:
        with open(os.path.join(proc_root, "devices")) as f:
            return char_devices(f.read())
    except OSError:
        return []


def nodes_check(dev_root: str, devices: list[tuple[int, str]]) -> Check:
    """/dev/nvidia* character nodes, each with its /proc/devices name(s)."""
    names: dict[int, list[str]] = {}
    for major, name in devices:
        names.setdefault(major, []).append(name)
    nodes = {}
    for entry, st in _nvidia_char_nodes(dev_root):
        major = os.major(st.st_rdev)
        nodes[entry] = f"{major}:{os.minor(st.st_rdev)} {'/'.join(names.get(major, ['?']))}"
    if not nodes:
        status = PROBLEM if any(n.startswith("nvidia") for _, n in devices) else NOT_CHECKED
        fix = "`nvidia-modprobe -c 0` or `nvidia-smi` once as root makes them" \
            if status == PROBLEM else None
        return Check("device nodes", status, f"no /dev/nvidia* character devices in {dev_root}",
                     fix)
    return Check("device nodes", OK, ", ".join(f"{k} ({v})" for k, v in nodes.items()),
                 data={"nodes": nodes})


def _nvidia_char_nodes(dev_root: str):
    """(name, stat) of each /dev/nvidia* character device (not nvidia-caps/, a directory)."""
    try:
        entries = sorted(e for e in os.listdir(dev_root) if e.startswith("nvidia"))
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            st = os.stat(os.path.join(dev_root, entry))
        except OSError:  # a dangling link
            continue
        if stat.S_ISCHR(st.st_mode):
            found.append((entry, st))
    return found


def allow_list_check(unit_file: str | None, devices: list[tuple[int, str]]) -> Check:
    """The installed unit's DeviceAllow= against /proc/devices."""
    props = None if unit_file else host.unit_properties("DevicePolicy", "DeviceAllow")
    if props is not None:
        entries = systemctl_device_allow("\n".join(f"DeviceAllow={v}"
                                                   for v in props.get("DeviceAllow", [])))
        where = "systemctl show zeusd.service"
    else:
        found = host.unit_file_text(unit_file)
        if found is None:
            return Check("device allow-list", NOT_CHECKED, "no zeusd.service unit installed "
                             "(give --unit-file to check one)")
        where, text = found
        entries = unit_device_allow(text)
    listed = " ".join(f"{e.spec} {e.perms}" for e in entries) or "(none)"
    if not any(n.startswith("nvidia") for _, n in devices):
        return Check("device allow-list", NOT_CHECKED, f"{listed} (from {where}); "
                              "no NVIDIA driver in /proc/devices to compare it with")
    found_problems = check_allow_list(entries, devices)
    admitted = ", ".join(f"{m}:{p}" for m, p in sorted(admitted_majors(entries, devices).items()))
    data = {"source": where, "entries": [f"{e.spec} {e.perms}" for e in entries],
            "admitted_majors": admitted}
    if found_problems:
        return Check("device allow-list", PROBLEM, "; ".join(p.what for p in found_problems),
                              " ".join(dict.fromkeys(p.fix for p in found_problems)), data)
    return Check("device allow-list", OK, f"{listed} (from {where}) admits majors "
                          f"{admitted} on this driver", data=data)


def sandbox_check(opts) -> Check:
    if opts.gpu_backend != "nvml":
        return Check("sandbox", NOT_CHECKED, "the simulated backend opens no device")
    if opts.no_sandbox_probe:
        return Check("sandbox", NOT_CHECKED, "--no-sandbox-probe given")
    props = host.unit_properties(*host.SANDBOX_PROPERTIES)
    if props is None:
        return Check("sandbox", NOT_CHECKED, "systemd is not running here or zeusd.service is "
                     "not installed, so the unit's sandbox cannot be reproduced")
    outcome, data = host.sandbox_probe(props)
    if outcome == "ok":
        return Check("sandbox", OK, f"NVML starts under the unit's {', '.join(data['properties'])} "
                     f"and sees {data.get('gpus')} GPU(s)", data=data)
    if outcome == "failed":
        return Check("sandbox", PROBLEM, f"NVML does not start under the unit's sandbox: "
                     f"{data.get('error')}", "fix DeviceAllow= as the device allow-list check "
                     "says; if that is right, relax SystemCallFilter= (drop ~@resources), then "
                     "MemoryDenyWriteExecute= (`systemctl edit zeusd.service`) and report it",
                     data)
    return Check("sandbox", NOT_CHECKED, data.get("why", "unknown"), data=data)


def socket_check(path: str) -> Check:
    state = host.socket_state(path)
    if state is None:
        return Check("socket", WARNING, f"{path} does not exist (is zeusd.socket started?)",
                     "`systemctl enable --now zeusd.socket`")
    shown = f"{path}: {state['owner']}:{state['group']} {state['mode']}"
    if not state["is_socket"]:
        return Check("socket", PROBLEM, f"{path} is not a socket", f"remove it and "
                     "`systemctl restart zeusd.socket`", state)
    if int(state["mode"], 8) & 0o002:
        return Check("socket", PROBLEM, f"{shown}: anyone on the machine can connect",
                     "set SocketMode=0660 in zeusd.socket (`systemctl edit zeusd.socket`)", state)
    status = OK if (state["owner"], state["group"], state["mode"]) == EXPECTED_SOCKET else INFO
    return Check("socket", status, shown + ("" if status == OK else
                                             " (the package ships root:zeusd 0660)"), data=state)


def policy_check(path: str) -> Check:
    from ..policy import PolicyError, load_policy
    from .policy_text import describe_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        return Check("policy", PROBLEM, str(exc), f"fix it and check with `zeusd policy check "
                     f"{path}`, then `systemctl try-reload-or-restart zeusd`")
    summary = f"{len(policy.rules)} rule(s); {describe_policy(policy)[-1]}"
    return Check("policy", OK, f"{policy.source} sha256 {policy.hash[:12]}: {summary}",
                 data={"hash": policy.hash, "source": policy.source, "rules": len(policy.rules)})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
