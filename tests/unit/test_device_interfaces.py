"""The daemon's device interface holds only what the daemon calls; what only the admin's
tools read is the probe interface, which both backends implement."""

from __future__ import annotations

import inspect
import re

import pytest

from tests.support.daemon import REPO
from zeusd.devices.base import GpuBackend, GpuDevice
from zeusd.devices.nvml import NvmlBackend, NvmlGpu
from zeusd.devices.probe import BackendProbe, GpuProbe, open_probe
from zeusd.devices.simulated import SimulatedBackend, SimulatedGpu

PROBE_ONLY = sorted((set(GpuProbe.__abstractmethods__) - set(GpuDevice.__abstractmethods__))
                    | {"driver_version", "library_version"})
# The daemon's request path and start-up; the admin's tools and tools/ may probe.
DAEMON_CODE = ["zeusd/daemon.py", "zeusd/service", "zeusd/api", "zeusd/transport"]


def test_the_probe_only_methods_are_not_on_the_daemons_interface():
    assert PROBE_ONLY == ["driver_version", "library_version"]
    for name in PROBE_ONLY:
        assert not hasattr(GpuDevice, name) and not hasattr(GpuBackend, name), name


@pytest.mark.parametrize("gpu,backend", [(NvmlGpu, NvmlBackend),
                                         (SimulatedGpu, SimulatedBackend)])
def test_both_backends_implement_the_probe(gpu, backend):
    assert issubclass(gpu, GpuProbe) and issubclass(backend, BackendProbe)
    assert not inspect.isabstract(gpu) and not inspect.isabstract(backend)


def test_the_daemon_calls_no_probe_method():
    files = [path for entry in DAEMON_CODE for path in
             ((REPO / entry).rglob("*.py") if (REPO / entry).is_dir() else [REPO / entry])]
    assert len(files) > 10
    calls = re.compile(r"\.(" + "|".join(PROBE_ONLY) + r")\(")
    for path in files:
        assert not calls.search(path.read_text()), path


def test_open_probe_gives_the_admin_its_reads():
    backend = open_probe("simulated", "a100x2")
    try:
        gpu = backend.devices()[1]
        memory = gpu.get_supported_memory_clocks_mhz()
        assert backend.driver_version() and gpu.get_supported_graphics_clocks_mhz(memory[0])
    finally:
        backend.close()
