"""tools/real_node_check.sh, run end to end against the fake libnvidia-ml.so.1.

The script is meant for a real GPU node; ZEUSD_CHECK_FAKE_NVML points it at the fake
driver so that every step it runs (doctor, the daemon on NVML, the released zeus 0.16
client, tools/gpu_check.py, a clean stop) is known to work before anyone runs it on a
GPU. The fake's call log proves it wrote nothing but the values the GPUs already had.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.compat.conftest import client_dir
from tests.support.daemon import REPO
from tests.unit.test_nvml_backend import fake_lib_dir  # noqa: F401 (fixture)

SCRIPT = REPO / "tools" / "real_node_check.sh"
STATE = ("gpu 0 power_limit_mw 350000 persistence 0 gpu_locked_mhz 0 0 mem_locked_mhz 0 0\n"
         "gpu 1 power_limit_mw 420000 persistence 1 gpu_locked_mhz 0 0 mem_locked_mhz 0 0\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as on a real node (NVML setters)")
def test_real_node_check_passes_on_the_fake_and_writes_only_current_values(fake_lib_dir,  # noqa: F811
                                                                           tmp_path):
    clients = client_dir("zeus-0.16.0").parent
    state = tmp_path / "state"
    state.write_text(STATE)  # not the fake's defaults, so a write of another value would show
    env = {**os.environ, "ZEUSD_CHECK_FAKE_NVML": str(fake_lib_dir), "PYTHON": sys.executable,
           "ZEUSD_COMPAT_CLIENTS": str(clients), "FAKE_NVML_STATE": str(state),
           "FAKE_NVML_LOG": str(tmp_path / "calls.log")}
    res = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    summary = out[out.index("== summary"):].splitlines()
    steps = {line.split()[0]: line.split()[1] for line in summary[1:-1]}
    assert steps == {"doctor": "PASS", "daemon-start": "PASS", "zeus-0.16-client": "PASS",
                     "gpu-check": "PASS", "daemon-stop": "PASS"}, summary
    assert summary[-1] == "ALL PASSED"
    assert '"zeus_version": "0.16.0"' in out
    calls = (tmp_path / "calls.log").read_text().splitlines()
    sets = {tuple(line.split()[1:3]) for line in calls if " nvmlDeviceSet" in line}
    assert sets == {("nvmlDeviceSetPowerManagementLimit", "350000"),
                    ("nvmlDeviceSetPowerManagementLimit", "420000"),
                    ("nvmlDeviceSetPersistenceMode", "0"),
                    ("nvmlDeviceSetPersistenceMode", "1")}, sets
    assert state.read_text() == STATE  # every GPU as it was
    assert not any("LockedClocks" in line or "Reset" in line for line in calls)
