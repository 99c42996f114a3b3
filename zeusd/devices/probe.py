"""What only the admin's tools read from the GPUs (`zeusd doctor`, tools/gpu_check.py): the
library versions. The daemon never calls these, so they are kept out of its device
interface (base.py); the NVML and simulated backends implement both."""

from __future__ import annotations

import abc

from .base import GpuBackend, GpuDevice


class GpuProbe(GpuDevice):
    """One GPU as the admin's tools see it (today: the daemon's interface, nothing more)."""


class BackendProbe(GpuBackend):
    """A set of GPUs, with the versions only the admin's tools show."""

    @abc.abstractmethod
    def driver_version(self) -> str: ...

    def library_version(self) -> str | None:
        """The GPU library's own version (NVML's), where it has one."""
        return None

    @abc.abstractmethod
    def devices(self) -> list[GpuProbe]: ...


def open_probe(kind: str, simulated_spec: str | None = None) -> BackendProbe:
    """Open a backend for the admin's tools; errors as ``loader.open_backend``'s."""
    from .loader import open_backend

    backend = open_backend(kind, simulated_spec)
    if not isinstance(backend, BackendProbe):  # every backend implements it; a new one must
        backend.close()
        raise ValueError(f"the {kind} GPU backend cannot be probed")
    return backend
