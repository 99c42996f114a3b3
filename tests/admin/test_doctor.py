"""`zeusd doctor`, run as an administrator runs it (a real process), on the simulated
backend and on the fake libnvidia-ml.so.1, against prepared /proc and /dev trees and unit
files: every problem makes it exit 1 and comes with its fix; a write check writes only
the value each GPU already has."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import REPO, env_with_repo, write_policy, zeusd_command
from tests.support.harness import short_dir
from tests.support.sim import SET_PERSISTENCE, SET_POWER, SimGpus
from tests.unit.test_nvml_backend import fake_lib_dir  # noqa: F401 (fixture)

DATA = REPO / "tests" / "unit" / "data" / "proc-devices"
UNIT = REPO / "packaging" / "systemd" / "zeusd.service"
OLD_UNIT = "[Service]\nDevicePolicy=closed\nDeviceAllow=char-nvidia-frontend rw\n" \
           "DeviceAllow=char-nvidia-caps r\n"


pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to mknod the NVIDIA device nodes")


@pytest.fixture
def root(tmp_path):
    """A node's /proc (driver 580 loaded) and /dev (nvidiactl, nvidia0), a valid policy."""
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    (proc / "driver" / "nvidia").mkdir(parents=True)
    (proc / "devices").write_text((DATA / "driver-580.txt").read_text())
    dev.mkdir()
    for name, minor in (("nvidiactl", 255), ("nvidia0", 0)):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(195, minor))
    write_policy(tmp_path / "policy.toml", '[defaults]\noperations = ["gpu-read"]\n')
    return tmp_path


def doctor(root: Path, *args: str, env: dict | None = None, prefix=()) -> tuple[int, dict]:
    argv = [*prefix, *zeusd_command("doctor", "--json", "--proc-root", str(root / "proc"),
                                    "--dev-root", str(root / "dev"), "--policy",
                                    str(root / "policy.toml"), "--socket-path",
                                    str(root / "zeusd.sock"), *args)]
    proc = subprocess.run(argv, env={**env_with_repo(), **(env or {})}, capture_output=True,
                          text=True, timeout=120, cwd=str(REPO))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def simulated(root: Path, *args: str):
    gpus = SimGpus(root, count=2)
    return gpus, doctor(root, "--gpu-backend", "simulated", "--simulated-gpus",
                        str(gpus.spec_path), *args)


def test_simulated_node_with_the_shipped_unit_is_healthy_and_read_only(root):
    gpus, (code, report) = simulated(root, "--unit-file", str(UNIT))
    checks = by_name(report)
    assert checks["device nodes"]["detail"] == "nvidia0 (195:0 nvidia/nvidia-modeset/nvidiactl), " \
        "nvidiactl (195:255 nvidia/nvidia-modeset/nvidiactl)"
    assert checks["gpu library"]["status"] == "ok"
    assert checks["gpu 0"]["data"]["power_limit_mw"] == 700_000
    assert checks["gpu 1"]["data"]["power_limit_constraints_mw"] == [200_000, 700_000]
    assert "setters: not checked (--write-check" in checks["gpu 0"]["detail"]
    assert checks["device allow-list"]["status"] == "ok"
    assert checks["device allow-list"]["data"]["admitted_majors"] == "195:rw, 236:r"
    assert checks["sandbox"]["status"] == "not checked"
    assert checks["socket"]["status"] == "warning"  # absent: not a problem by itself
    assert checks["policy"]["status"] == "ok" and "sha256" in checks["policy"]["detail"]
    assert (code, report["problems"]) == (0, 0)
    assert gpus.entries() == []  # nothing written


def test_write_check_writes_only_the_current_values(root):
    gpus, (code, report) = simulated(root, "--write-check")
    assert code == 0, report
    assert by_name(report)["gpu 1"]["data"]["setters"] == {"power limit": "ok",
                                                           "persistence mode": "ok"}
    assert gpus.since(0) == [(0, SET_POWER, [700000]), (0, SET_PERSISTENCE, [True]),
                             (1, SET_POWER, [700000]), (1, SET_PERSISTENCE, [True])]


def test_broken_allow_list_is_detected_with_its_fix(root):
    unit = root / "old.service"
    unit.write_text(OLD_UNIT)
    gpus, (code, report) = simulated(root, "--unit-file", str(unit))
    check = by_name(report)["device allow-list"]
    assert (code, check["status"]) == (1, "problem")
    assert "does not allow major 195 ('nvidia' in /proc/devices) read-write" in check["detail"]
    assert "DeviceAllow=char-nvidia rw" in check["fix"]
    assert "DeviceAllow=char-nvidiactl rw" in check["fix"]


def test_the_old_allow_list_still_passes_on_a_535_driver(root):
    (root / "proc" / "devices").write_text((DATA / "driver-535.txt").read_text())
    unit = root / "old.service"
    unit.write_text(OLD_UNIT)
    _, (code, report) = simulated(root, "--unit-file", str(unit))
    assert (code, by_name(report)["device allow-list"]["status"]) == (0, "ok")


def test_world_writable_socket_and_bad_policy_are_problems(root):
    directory = short_dir("zdoc-")
    path = directory / "zeusd.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    os.chmod(path, 0o666)
    write_policy(root / "policy.toml", "[defaults]\noperations = [\"gpu-frobnicate\"]\n")
    try:
        _, (code, report) = simulated(root, "--socket-path", str(path))
    finally:
        listener.close()
    checks = by_name(report)
    assert code == 1 and report["problems"] == 2
    assert checks["socket"]["detail"].endswith("0666: anyone on the machine can connect")
    assert "SocketMode=0660" in checks["socket"]["fix"]
    assert checks["policy"]["status"] == "problem" and "gpu-frobnicate" in checks["policy"]["detail"]
    assert "zeusd policy check" in checks["policy"]["fix"]


def test_text_output_lists_each_problem_with_its_fix(root):
    unit = root / "old.service"
    unit.write_text(OLD_UNIT)
    gpus = SimGpus(root, count=1)
    proc = subprocess.run(zeusd_command(
        "doctor", "--gpu-backend", "simulated", "--simulated-gpus", str(gpus.spec_path),
        "--proc-root", str(root / "proc"), "--dev-root", str(root / "dev"),
        "--unit-file", str(unit), "--policy", str(root / "policy.toml")),
        env=env_with_repo(), capture_output=True, text=True, timeout=120, cwd=str(REPO))
    lines = proc.stdout.splitlines()
    failing = [i for i, line in enumerate(lines) if line.startswith("[FAIL] device allow-list")]
    assert proc.returncode == 1 and len(failing) == 1, proc.stdout
    assert lines[failing[0] + 1].startswith("       fix: allow it: `systemctl edit zeusd.service`")
    assert lines[-1] == "1 problem(s): device allow-list"


def fake_env(fake_lib_dir: Path, root: Path, **extra: str) -> dict:  # noqa: F811
    return {"LD_LIBRARY_PATH": str(fake_lib_dir), "FAKE_NVML_STATE": str(root / "nvml-state"),
            "FAKE_NVML_LOG": str(root / "calls.log"), **extra}


def test_fake_nvml_with_write_check(fake_lib_dir, root):  # noqa: F811
    code, report = doctor(root, "--write-check", "--unit-file", str(UNIT),
                          env=fake_env(fake_lib_dir, root))
    checks = by_name(report)
    assert checks["gpu library"]["data"] == {"backend": "nvml", "driver": "580.159.04-fake",
                                             "nvml": "13.580.159.04-fake", "gpus": 2}
    assert checks["gpu 0"]["data"]["setters"] == {"power limit": "ok", "persistence mode": "ok"}
    assert checks["persistence"]["status"] == "ok"
    assert code == 0, report
    sets = [line.split()[1:3] for line in (root / "calls.log").read_text().splitlines()
            if " nvmlDeviceSet" in line]
    assert sets == [["nvmlDeviceSetPowerManagementLimit", "700000"],
                    ["nvmlDeviceSetPersistenceMode", "1"]] * 2, sets


def test_fake_nvml_refusing_to_start_names_the_cause(fake_lib_dir, root):  # noqa: F811
    for node in ("nvidiactl", "nvidia0"):
        (root / "dev" / node).unlink()
    env = fake_env(fake_lib_dir, root, FAKE_NVML_CTL=str(root / "dev" / "nvidiactl"))
    code, report = doctor(root, env=env)
    check = by_name(report)["gpu library"]
    assert (code, check["status"], check["data"]["cause"]) == (1, "problem", "no-device-node")
    assert check["detail"].startswith("nvmlInit failed (Driver Not Loaded); likely cause: ")
    assert "nvidia-modprobe -c 0" in check["fix"]
    assert by_name(report)["device nodes"]["status"] == "problem"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop CAP_SYS_ADMIN")
def test_write_check_without_cap_sys_admin_fails_with_the_fix(fake_lib_dir, root):  # noqa: F811
    drop = ("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin")
    code, report = doctor(root, "--write-check", env=fake_env(fake_lib_dir, root), prefix=drop)
    check = by_name(report)["gpu 0"]
    assert (code, check["status"]) == (1, "problem")
    assert check["data"]["setters"] == {
        "power limit": "failed: NVML error: Insufficient Permissions "
                       "(nvmlDeviceSetPowerManagementLimit): the daemon lacks root or CAP_SYS_ADMIN",
        "persistence mode": "failed: NVML error: Insufficient Permissions "
                            "(nvmlDeviceSetPersistenceMode): the daemon lacks root or CAP_SYS_ADMIN"}
    assert check["fix"].startswith("run the check (and zeusd) as root with CAP_SYS_ADMIN")
    sets = [line for line in (root / "calls.log").read_text().splitlines() if " nvmlDeviceSet" in line]
    assert len(sets) == 4 and all(line.endswith("-> 4") for line in sets), sets  # all refused
    assert not (root / "nvml-state").exists()  # nothing was saved: no setting changed
