"""Released Zeus clients, unchanged, against a real zeusd on a real Unix socket.

Each client release lives in its own ``pip --target`` directory (see
install_clients.py) and runs in a child ``python -S`` with only that directory on
``PYTHONPATH``: the driver scripts here (``drive_*.py``) call the client's public
classes and print one JSON line, which the tests compare with what the daemon
applied (the simulator's journal). Where a client needs ``pynvml`` for its own
local reads, the child loads the fake libnvidia-ml.so.1 (tests/fake_nvml) with a
state file of its own; every driver refuses to run unless the driver it got is
the fake, so a GPU machine's real driver is never touched.

Missing clients or a missing C compiler skip these tests, but fail them when the
``CI`` environment variable is set.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.compat import install_clients
from tests.support.harness import Zeusd
from tests.support.rapl import FakeRapl
from tests.support.sim import SimGpus

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAKE_SRC = REPO / "tests" / "fake_nvml" / "fake_nvml.c"
FAKE_GPUS = 4  # the fake driver the clients see locally matches the daemon's 4 simulated GPUs


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, where a compatibility test cannot run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def client_dir(key: str) -> Path:
    dest = install_clients.default_dest()
    if not install_clients.is_installed(dest, key):
        unavailable(f"{install_clients.CLIENTS[key]} is not installed in {dest / key}: run "
                    f"`.venv/bin/python tests/compat/install_clients.py`")
    return dest / key


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory) -> Path:
    """A directory holding the fake libnvidia-ml.so.1."""
    gcc = shutil.which("gcc")
    if gcc is None:
        unavailable("gcc is not installed, so the fake libnvidia-ml.so.1 cannot be built")
    out = tmp_path_factory.mktemp("compat-fake-nvml")
    subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    "-Wl,-soname,libnvidia-ml.so.1", "-o", str(out / "libnvidia-ml.so.1"),
                    str(FAKE_SRC), "-pthread"], check=True)
    return out


class Compat:
    """One zeusd (4 simulated H200s with a journal, 2 fake RAPL packages, package 1
    without DRAM, built-in policy, Unix socket unless the test module's
    ``zeusd_options(tmp)`` says otherwise) and a way to run a client driver against it."""

    def __init__(self, tmp: Path, fake_lib: Path, **zeusd_kw) -> None:
        """``zeusd_kw``: more keywords for ``Zeusd`` (``tcp``, ``policy_text``, ``args``)."""
        self.tmp = tmp
        self.fake_lib = fake_lib
        self.gpus = SimGpus(tmp)
        self.rapl = FakeRapl(tmp / "rapl", dram=(True, False))
        self.zeusd = Zeusd(tmp, gpus=self.gpus, rapl=self.rapl, **zeusd_kw)
        self.tcp = bool(zeusd_kw.get("tcp"))
        self.socket_path = None if self.tcp else self.zeusd.socket_path
        self.host_port = self.zeusd.address if self.tcp else None
        self._runs = 0

    def drive(self, script: str, client: str, scenario: str, *, nvml_state: str | None = None,
              env: dict | None = None, timeout_s: float = 60.0, **params) -> dict:
        """Run ``tests/compat/<script>`` with the client ``client`` installed; its JSON result.

        ``nvml_state``: text of the fake driver's state file for this run (fresh otherwise).
        """
        self._runs += 1
        run_dir = self.tmp / f"run-{self._runs}-{scenario}"
        run_dir.mkdir()
        state = run_dir / "nvml-state"
        if nvml_state is not None:
            state.write_text(nvml_state)
        child_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(run_dir),
            "PYTHONPATH": str(client_dir(client)),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "LD_LIBRARY_PATH": str(self.fake_lib),
            "FAKE_NVML_GPUS": str(FAKE_GPUS),
            "FAKE_NVML_STATE": str(state),
            "FAKE_NVML_LOG": str(run_dir / "nvml-calls.log"),
            **(env or {}),
        }
        request = {"scenario": scenario, "socket": self.socket_path, "host_port": self.host_port,
                   **params}
        # -S: no site-packages, so the client runs on its own directory and the stdlib only.
        result = subprocess.run([sys.executable, "-S", str(HERE / script), json.dumps(request)],
                                env=child_env, cwd=str(run_dir), capture_output=True, text=True,
                                timeout=timeout_s, check=False)
        assert result.returncode == 0, (f"{script} {scenario} exited {result.returncode}\n"
                                        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{script} {scenario} printed no JSON\nstderr:\n{result.stderr}"
        out = json.loads(lines[-1])
        out["_stderr"] = result.stderr
        return out

    def applied(self, mark: int, timeout_s: float = 0.0, count: int = 0) -> list[tuple]:
        """(gpu, call, args) applied since ``mark``; wait up to ``timeout_s`` for ``count`` of them
        (non-blocking requests are answered before they run)."""
        deadline = time.monotonic() + timeout_s
        while True:
            entries = [(g, c, list(a)) for g, c, a in self.gpus.since(mark)]
            if len(entries) >= count or time.monotonic() >= deadline:
                return entries
            time.sleep(0.02)

    def stop(self) -> str:
        self.zeusd.stop()
        return self.zeusd.log()


@pytest.fixture(scope="module")
def compat(request, tmp_path_factory):
    """The module's daemon; the module's ``CLIENT`` (install key) must be installed."""
    client_dir(request.module.CLIENT)
    tmp = tmp_path_factory.mktemp("compat")
    options = getattr(request.module, "zeusd_options", lambda tmp: {})(tmp)
    env = Compat(tmp, request.getfixturevalue("fake_nvml_lib"), **options)
    yield env
    log = env.stop()
    assert "Traceback" not in log, "zeusd logged a traceback:\n" + log


def fake_state(power_limits_mw: dict[int, int]) -> str:
    """A fake-driver state file (format of tests/fake_nvml/fake_nvml.c) with these power limits."""
    lines = []
    for gpu in range(FAKE_GPUS):
        limit = power_limits_mw.get(gpu, 700_000)
        lines.append(f"gpu {gpu} power_limit_mw {limit} persistence 1 "
                     f"gpu_locked_mhz 0 0 mem_locked_mhz 0 0")
    return "\n".join(lines) + "\n"


def by_gpu(entries: list[tuple]) -> dict[int, list[list]]:
    """Journal entries grouped per GPU, in order ([call, args] each): GPUs run in parallel,
    so only the order within one GPU is defined."""
    out: dict[int, list[list]] = {}
    for gpu, call, args in entries:
        out.setdefault(gpu, []).append([call, list(args)])
    return out


def rapl_raw(rapl: FakeRapl, package: int, dram: bool = False) -> int:
    """The raw counter the fake RAPL tree shows now."""
    base = rapl.root / f"intel-rapl:{package}"
    path = base / f"intel-rapl:{package}:1" / "energy_uj" if dram else base / "energy_uj"
    return int(path.read_text())


class CounterWriter:
    """Advance RAPL package 0 (and its DRAM) every few ms while a driver runs, as hardware would."""

    def __init__(self, rapl: FakeRapl, step_uj: int = 10_000, period_s: float = 0.005) -> None:
        self.rapl, self.step_uj, self.period_s = rapl, step_uj, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cpu_uj, dram_uj = rapl_raw(self.rapl, 0), rapl_raw(self.rapl, 0, dram=True)
        while not self._stop.wait(self.period_s):
            cpu_uj += self.step_uj
            dram_uj += self.step_uj // 4
            self.rapl.set(0, cpu_uj=cpu_uj, dram_uj=dram_uj)

    def __enter__(self) -> CounterWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def route_status(socket_path: str, path: str, timeout_s: float = 5.0) -> int:
    """The status code of GET ``path``, read from the status line only (streams never end)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(socket_path)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])
