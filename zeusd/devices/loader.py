"""Open the GPU backend the command line asked for."""

from __future__ import annotations

from .base import GpuBackend

DEFAULT_SIMULATED_SPEC = "h200x2"
BACKEND_KINDS = ("nvml", "simulated")


def open_backend(kind: str, simulated_spec: str | None = None) -> GpuBackend:
    """Return an opened backend of ``kind`` ("nvml" or "simulated").

    Raises ``ValueError`` for an unknown kind or a bad simulated spec, and
    ``NvmlError`` when NVML cannot be initialised (e.g. LIBRARY_NOT_FOUND).
    The NVML module is imported only when asked for, so a simulated daemon
    runs where pynvml is absent.
    """
    if kind == "simulated":
        from .simulated import SimulatedBackend

        return SimulatedBackend.from_spec(simulated_spec or DEFAULT_SIMULATED_SPEC)
    if kind == "nvml":
        if simulated_spec:
            raise ValueError("a simulated GPU spec was given but the GPU backend is 'nvml'")
        from .nvml import NvmlBackend

        return NvmlBackend()
    raise ValueError(f"unknown GPU backend {kind!r} (expected one of: {', '.join(BACKEND_KINDS)})")
