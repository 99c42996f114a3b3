#!/usr/bin/env python3
"""Check zeusd against a real NVIDIA GPU, changing nothing.

Reads every value through the daemon (or, with ``--direct-only``, through
zeusd's NvmlBackend) and compares it with a direct pynvml read. Its only writes
set the power limit and the persistence mode to exactly the value the GPU
reports just before; it never touches locked clocks and never resets anything.

    sudo python3 tools/gpu_check.py                      # starts zeusd on /tmp/zeusd-check.sock
    sudo python3 tools/gpu_check.py --socket /run/zeusd/zeusd.sock   # a running daemon
    sudo python3 tools/gpu_check.py --direct-only        # NvmlBackend vs. raw pynvml

Prints a PASS/FAIL table; exit status 0 if every row passed, 1 otherwise, 2 on usage errors.
Standard library and pynvml only (plus zeusd itself for --direct-only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

try:
    import pynvml
except ImportError:
    from zeusd.devices._vendor import pynvml

DEFAULT_SOCKET = "/tmp/zeusd-check.sock"
POWER_TOLERANCE_MW = 25_000  # or 15 %, whichever is larger: power moves between two reads
ENERGY_SLACK_MJ = 1_000


@dataclass
class Row:
    check: str
    gpu: int
    ours: object
    nvml: object
    ok: bool
    note: str = ""


# ----- direct pynvml reads (independent of zeusd's code) -----


def raw_reads(handle) -> dict:
    """Every value the checks compare, read with pynvml directly."""
    bus_id = pynvml.nvmlDeviceGetPciInfo(handle).busId
    bus_id = bus_id.decode() if isinstance(bus_id, bytes) else bus_id
    domain, bus, rest = bus_id.lower().split(":")
    return {
        "name": pynvml.nvmlDeviceGetName(handle),
        "uuid": pynvml.nvmlDeviceGetUUID(handle),
        "pci_address": f"{int(domain, 16):04x}:{bus}:{rest}",
        "power_limit_mw": pynvml.nvmlDeviceGetPowerManagementLimit(handle),
        "constraints_mw": list(pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)),
        "persistence": pynvml.nvmlDeviceGetPersistenceMode(handle) == pynvml.NVML_FEATURE_ENABLED,
        "energy_available": _energy_mj(handle) is not None,
    }


def _energy_mj(handle) -> int | None:
    try:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError_NotSupported:
        return None


def raw_power_mw(handle) -> int:
    sample = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
    if sample.nvmlReturn == pynvml.NVML_SUCCESS:
        return int(sample.value.uiVal if sample.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                   else sample.value.ullVal)
    return pynvml.nvmlDeviceGetPowerUsage(handle)


# ----- comparisons -----


def exact(check: str, gpu: int, ours, theirs) -> Row:
    return Row(check, gpu, ours, theirs, ours == theirs)


def near_power(gpu: int, ours_mw: int, theirs_mw: int) -> Row:
    tolerance_mw = max(POWER_TOLERANCE_MW, theirs_mw * 0.15)
    return Row("power_mw", gpu, ours_mw, theirs_mw, abs(ours_mw - theirs_mw) <= tolerance_mw,
               f"within {tolerance_mw / 1000:.0f} W")


def bracketed_energy(gpu: int, before_mj, ours_mj, after_mj) -> Row:
    if before_mj is None:
        return Row("energy_mj", gpu, ours_mj, None, ours_mj is None, "no counter")
    ok = ours_mj is not None and before_mj - ENERGY_SLACK_MJ <= ours_mj <= after_mj + ENERGY_SLACK_MJ
    return Row("energy_mj", gpu, ours_mj, f"{before_mj}..{after_mj}", ok, "between two direct reads")


# ----- through the daemon -----


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request(socket_path: str, method: str, path: str) -> tuple[int, object]:
    conn = UnixHTTPConnection(socket_path)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    return response.status, json.loads(body) if body.strip() else None


def get_ok(socket_path: str, path: str):
    status, body = request(socket_path, "GET", path)
    if status != 200:
        raise RuntimeError(f"GET {path} -> {status}: {body}")
    return body


def check_daemon(socket_path: str, handles: list) -> list[Row]:
    discover = get_ok(socket_path, "/discover")
    rows = [exact("gpu_count", -1, len(discover["gpus"]), len(handles))]
    for gpu in discover["gpus"]:
        i = gpu["id"]
        raw = raw_reads(handles[i])
        rows += [
            exact("name", i, gpu["name"], raw["name"]),
            exact("pci_address", i, gpu["pci_address"], raw["pci_address"]),
            exact("energy_available", i, gpu["cumulative_energy_available"], raw["energy_available"]),
            exact("power_limit_mw", i, get_ok(socket_path, f"/gpu/get_power_limit?gpu_ids={i}")[str(i)]["power_limit_mw"],
                  raw["power_limit_mw"]),
        ]
        limits = get_ok(socket_path, f"/gpu/get_power_limit_constraints?gpu_ids={i}")[str(i)]
        rows.append(exact("constraints_mw", i, [limits["min_power_limit_mw"], limits["max_power_limit_mw"]],
                          raw["constraints_mw"]))
        rows.append(exact("persistence", i, get_ok(socket_path, f"/gpu/get_persistence_mode?gpu_ids={i}")[str(i)]["enabled"],
                          raw["persistence"]))
        before = _energy_mj(handles[i])
        status, body = request(socket_path, "GET", f"/gpu/get_cumulative_energy?gpu_ids={i}")
        ours = body[str(i)]["energy_mj"] if status == 200 else None
        rows.append(bracketed_energy(i, before, ours, _energy_mj(handles[i])))
        ours_power = get_ok(socket_path, f"/gpu/get_power?gpu_ids={i}")["power_mw"][str(i)]
        rows.append(near_power(i, ours_power, raw_power_mw(handles[i])))
        rows += daemon_rewrites(socket_path, i, handles[i])
    return rows


def daemon_rewrites(socket_path: str, i: int, handle) -> list[Row]:
    """Write back the value the GPU reports now; check the call succeeds and changes nothing."""
    limit_mw = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
    status, body = request(socket_path, "POST", f"/gpu/set_power_limit?gpu_ids={i}&power_limit_mw={limit_mw}&block=true")
    rows = [Row("rewrite_power_limit", i, status, 200, status == 200, str(body or "")),
            exact("power_limit_after", i, pynvml.nvmlDeviceGetPowerManagementLimit(handle), limit_mw)]
    enabled = pynvml.nvmlDeviceGetPersistenceMode(handle) == pynvml.NVML_FEATURE_ENABLED
    flag = "true" if enabled else "false"
    status, body = request(socket_path, "POST", f"/gpu/set_persistence_mode?gpu_ids={i}&enabled={flag}&block=true")
    after = pynvml.nvmlDeviceGetPersistenceMode(handle) == pynvml.NVML_FEATURE_ENABLED
    rows += [Row("rewrite_persistence", i, status, 200, status == 200, str(body or "")),
             exact("persistence_after", i, after, enabled)]
    return rows


# ----- through NvmlBackend, no daemon -----


def check_direct(handles: list) -> list[Row]:
    from zeusd.devices.nvml import NvmlBackend

    backend = NvmlBackend()
    rows = [exact("gpu_count", -1, len(backend.devices()), len(handles))]
    for gpu in backend.devices():
        i, handle, raw = gpu.index, handles[gpu.index], raw_reads(handles[gpu.index])
        info = gpu.info()
        rows += [
            exact("name", i, info.name, raw["name"]),
            exact("uuid", i, info.uuid, raw["uuid"]),
            exact("pci_address", i, info.pci_address, raw["pci_address"]),
            exact("energy_available", i, info.cumulative_energy_available, raw["energy_available"]),
            exact("power_limit_mw", i, gpu.get_power_limit_mw(), raw["power_limit_mw"]),
            exact("constraints_mw", i, list(gpu.get_power_limit_constraints_mw()), raw["constraints_mw"]),
            exact("persistence", i, gpu.get_persistence_mode(), raw["persistence"]),
            exact("memory_clocks_mhz", i, gpu.get_supported_memory_clocks_mhz(),
                  pynvml.nvmlDeviceGetSupportedMemoryClocks(handle)),
        ]
        mem_mhz = gpu.get_supported_memory_clocks_mhz()[0]
        rows.append(exact("graphics_clocks_mhz", i, gpu.get_supported_graphics_clocks_mhz(mem_mhz),
                          pynvml.nvmlDeviceGetSupportedGraphicsClocks(handle, mem_mhz)))
        before = _energy_mj(handle)
        ours = gpu.get_total_energy_mj() if info.cumulative_energy_available else None
        rows.append(bracketed_energy(i, before, ours, _energy_mj(handle)))
        rows.append(near_power(i, gpu.get_power_mw(), raw_power_mw(handle)))
        rows += direct_rewrites(gpu, handle)
    backend.close()
    return rows


def direct_rewrites(gpu, handle) -> list[Row]:
    limit_mw = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
    gpu.set_power_limit_mw(limit_mw)
    enabled = pynvml.nvmlDeviceGetPersistenceMode(handle) == pynvml.NVML_FEATURE_ENABLED
    gpu.set_persistence_mode(enabled)
    return [exact("power_limit_after", gpu.index, pynvml.nvmlDeviceGetPowerManagementLimit(handle), limit_mw),
            exact("persistence_after", gpu.index,
                  pynvml.nvmlDeviceGetPersistenceMode(handle) == pynvml.NVML_FEATURE_ENABLED, enabled)]


# ----- running -----


def start_daemon(socket_path: str, timeout_s: float = 30.0) -> subprocess.Popen:
    """Start ``python -m zeusd serve`` on ``socket_path`` and wait for /discover."""
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    cmd = [sys.executable, "-m", "zeusd", "serve", "--gpu-backend", "nvml", "--mode", "uds",
           "--socket-path", socket_path]
    log_path = socket_path + ".log"
    with open(log_path, "wb") as log:  # keeps its output out of the table
        daemon = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    print(f"started zeusd (pid {daemon.pid}); its log: {log_path}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"zeusd exited with status {daemon.returncode} at start-up; see {log_path}")
        try:
            request(socket_path, "GET", "/discover")
            return daemon
        except OSError:
            time.sleep(0.2)
    daemon.terminate()
    raise RuntimeError(f"zeusd did not answer on {socket_path} within {timeout_s:.0f} s; see {log_path}")


def print_table(rows: list[Row]) -> None:
    print(f"{'check':<22} {'gpu':>3}  {'zeusd':<28} {'nvml':<28} result")
    for r in rows:
        gpu = "-" if r.gpu < 0 else str(r.gpu)
        result = "PASS" if r.ok else "FAIL"
        note = f"  ({r.note})" if r.note else ""
        print(f"{r.check:<22} {gpu:>3}  {str(r.ours)[:28]:<28} {str(r.nvml)[:28]:<28} {result}{note}")
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", metavar="PATH", help="check the daemon already listening here")
    parser.add_argument("--socket-path", default=DEFAULT_SOCKET, help="where to start our own daemon")
    parser.add_argument("--direct-only", action="store_true", help="check NvmlBackend against pynvml; no daemon")
    args = parser.parse_args(argv)
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        print(f"gpu_check: cannot initialise NVML: {err}. Is the NVIDIA driver installed?", file=sys.stderr)
        return 2
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    daemon = None
    try:
        if args.direct_only:
            rows = check_direct(handles)
        else:
            daemon = None if args.socket else start_daemon(args.socket_path)
            rows = check_daemon(args.socket or args.socket_path, handles)
    except Exception as err:  # noqa: BLE001 - any failure fails the check, with its reason
        print(f"gpu_check: check aborted: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=15)
    print_table(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
