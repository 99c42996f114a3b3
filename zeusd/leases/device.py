"""How the lease book reads and writes a knob: an injected ``KnobIO``.

``GpuKnobs`` adapts zeusd's ``GpuDevice`` interface directly (tests, tools).
In the daemon the same two methods should go through the GPU manager, so a
restore takes its turn in the GPU's FIFO and is bounded by ``--nvml-timeout-s``
like any other command.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..operations import KNOB_GETTER, KNOB_RESETTER, KNOB_SETTER
from . import knobs

# A knob with no hardware getter: NVML can set and reset locked clocks but not read them.
NO_READING = object()


class KnobIO(Protocol):
    def read(self, gpu_index: int, knob: str) -> object:
        """The knob's current hardware value, or NO_READING where the hardware cannot say."""

    def apply(self, gpu_index: int, knob: str, value: object) -> None:
        """Set the knob; for clocks, None means reset (unlock)."""


def read_knob(device, knob: str) -> object:
    """A GpuDevice's value of ``knob`` (one NVML call), or NO_READING for locked clocks."""
    if knob not in KNOB_SETTER:
        raise knobs.BadValue(f"unknown knob {knob!r}")
    getter = KNOB_GETTER[knob]
    return NO_READING if getter is None else getattr(device, getter)()


def apply_knob(device, knob: str, value: object) -> None:
    """Set ``knob`` on a GpuDevice; clocks None resets them (nvmlDeviceReset*LockedClocks)."""
    if knob not in KNOB_SETTER:
        raise knobs.BadValue(f"unknown knob {knob!r}")
    if value is None:
        getattr(device, KNOB_RESETTER[knob])()
    else:
        getattr(device, KNOB_SETTER[knob])(*(value if isinstance(value, tuple) else (value,)))


class GpuKnobs:
    """KnobIO straight on a list of GpuDevice (index == list position). Errors propagate."""

    def __init__(self, devices: Sequence) -> None:
        self._devices = devices

    def read(self, gpu_index: int, knob: str) -> object:
        return read_knob(self._devices[gpu_index], knob)

    def apply(self, gpu_index: int, knob: str, value: object) -> None:
        apply_knob(self._devices[gpu_index], knob, value)


class ManagedKnobs:
    """KnobIO through the GPU manager: each call takes its turn in the GPU's FIFO, is bounded
    by --nvml-timeout-s and fails as zeusd's own errors (504, 503). Never call it from a GPU
    worker thread (it would wait for itself); the book never does."""

    def __init__(self, manager) -> None:
        self._manager = manager

    def read(self, gpu_index: int, knob: str) -> object:
        return self._manager.run_one(gpu_index, lambda device: read_knob(device, knob),
                                     f"lease: read {knob}")

    def apply(self, gpu_index: int, knob: str, value: object) -> None:
        self._manager.run_one(gpu_index, lambda device: apply_knob(device, knob, value),
                              f"lease: restore {knob}")
