"""What NVML errors say about a GPU, remembered while serving.

- ``GPU_IS_LOST``: the GPU fell off the bus; no later call can succeed, so none is made.
  The daemon answers 503 for that GPU and the other GPUs keep working.
- ``NOT_SUPPORTED``: the GPU or driver lacks the function; asking again would only cost
  a driver round trip, so the same error is answered at once.
- ``NO_PERMISSION``: a configuration error (privileges or the unit's sandbox); logged
  once per function with the fix.
- ``RESET_REQUIRED``: the GPU needs a reset; logged and shown in /discover.
"""

from __future__ import annotations

import logging
import threading

from .errors import GPU_IS_LOST, NO_PERMISSION, NOT_SUPPORTED, RESET_REQUIRED, NvmlError

log = logging.getLogger(__name__)


class GuardedDevice:
    """A GpuDevice proxy: same methods, plus ``lost``, ``reset_required`` and the
    functions known to be unsupported."""

    def __init__(self, device) -> None:
        self._device = device
        self.index = device.index
        self.lost: NvmlError | None = None
        self.reset_required: NvmlError | None = None
        self._unsupported: dict[str, NvmlError] = {}
        self._warned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        """The device's attribute; a method comes wrapped, and the wrapper is kept on this
        object so later look-ups find it directly (one wrapper per method, not per call)."""
        device = self._device
        attr = getattr(device, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            known = self.lost or self._unsupported.get(name)
            if known is not None:  # a fresh exception: others may be raising the same one
                raise NvmlError(known.code, known.function)
            try:  # looked up per call: the device's own attribute stays the one called
                return getattr(device, name)(*args, **kwargs)
            except NvmlError as exc:
                self._note(name, exc)
                raise
        self.__dict__[name] = call
        return call

    def _note(self, name: str, exc: NvmlError) -> None:
        with self._lock:
            first = (name, exc.code) not in self._warned
            self._warned.add((name, exc.code))
            if exc.code == GPU_IS_LOST:
                first = self.lost is None
                self.lost = self.lost or exc
            elif exc.code == NOT_SUPPORTED:
                self._unsupported[name] = exc
            elif exc.code == RESET_REQUIRED:
                self.reset_required = exc
        if first:
            self._log(exc)

    def _log(self, exc: NvmlError) -> None:
        i = self.index
        if exc.code == GPU_IS_LOST:
            log.error("GPU %d is lost (%s in %s): zeusd no longer calls it and answers 503 for "
                      "it; the other GPUs keep working. Reset it (nvidia-smi -r -i %d) or reboot, "
                      "then restart zeusd.", i, exc.text, exc.function, i)
        elif exc.code == RESET_REQUIRED:
            log.error("GPU %d requires a reset (%s in %s): run `nvidia-smi -r -i %d` while it is "
                      "idle, or reboot.", i, exc.text, exc.function, i)
        elif exc.code == NO_PERMISSION:
            log.error("configuration error: NVML refused %s on GPU %d (%s). zeusd needs root or "
                      "CAP_SYS_ADMIN, and its unit must allow the /dev/nvidia* devices "
                      "(DeviceAllow=); check `systemctl cat zeusd` and run `zeusd doctor`.",
                      exc.function, i, exc.text)
        elif exc.code == NOT_SUPPORTED:
            log.info("GPU %d does not support %s; answering that at once from now on",
                     i, exc.function)

    def health(self) -> dict:
        """For /discover: {"state": ...} and, unless ok, the NVML error's message."""
        if self.lost is not None:
            return {"state": "lost", "error": self.lost.message}
        if self.reset_required is not None:
            return {"state": "reset_required", "error": self.reset_required.message}
        return {"state": "ok"}
