"""zeusd's own exceptions: each names what went wrong, never an HTTP status.

Services raise these; ``zeusd.api.errors`` holds the one table that turns each
type into a status, headers and body. The message is the text a client reads.
"""

from __future__ import annotations

from .devices.errors import GPU_IS_LOST, NvmlError


class ZeusdError(Exception):
    """Base: a failure answered with ``{"error": message, **extra}``."""

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    @property
    def gpu_unavailable(self) -> bool:
        """True when this GPU cannot answer now (lost, hung, backed up, daemon stopping)
        rather than the request being wrong: a read of all GPUs leaves such a GPU out."""
        return False


# --- the request itself ---------------------------------------------------------------

class InvalidValue(ZeusdError):
    """A malformed or out-of-range value in the query, the body or the path."""


class UnknownDevice(InvalidValue):
    """An index that names no GPU or CPU of this daemon."""


class Unauthenticated(ZeusdError):
    """No bearer token, or one that is malformed, forged or expired."""


class ScopeMissing(ZeusdError):
    """A valid token whose scopes do not include the route's API group."""


class PolicyDenied(ZeusdError):
    """The policy does not allow this caller this operation (``extra`` names the rule)."""


class NotEnabled(ZeusdError):
    """A feature (an API group, authentication) this daemon was started without."""


class StreamLimit(ZeusdError):
    """Too many power streams are open, daemon-wide or for this caller."""


class KnobHeld(ZeusdError):
    """A knob is under another process's lease, or being written or restored right now."""


class LeaseUnrecorded(ZeusdError):
    """The lease could not be written to disk, so the change is refused (fail closed)."""


# --- the GPU the request needs ----------------------------------------------------------

class GpuUnavailable(ZeusdError):
    """This GPU (or the daemon) cannot take the command now; the request itself is fine."""

    @property
    def gpu_unavailable(self) -> bool:
        return True


class QueueFull(GpuUnavailable):
    """The GPU's command queue is at its cap."""


class GpuBusy(GpuUnavailable):
    """The GPU is slow and enough requests already wait on it."""


class GpuLost(GpuUnavailable):
    """The GPU fell off the bus; nothing is sent to it until a reset."""


class ShuttingDown(GpuUnavailable):
    """The daemon is stopping and takes no new command."""


class GpuTimedOut(GpuUnavailable):
    """An NVML call did not return within the limit, or the request's deadline passed."""


class NvmlFailure(ZeusdError):
    """An NVML call failed: ``code`` and ``function`` are NVML's own."""

    def __init__(self, code: int, function: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.function = function

    @classmethod
    def of(cls, exc: NvmlError) -> NvmlFailure:
        return cls(exc.code, exc.function, exc.message)

    @property
    def gpu_unavailable(self) -> bool:
        return self.code == GPU_IS_LOST


class DeviceFailure(ZeusdError):
    """A device read failed for a reason that is not NVML's (e.g. a RAPL sysfs file)."""


class Internal(ZeusdError):
    """A bug or an unexpected exception; its type is named, never its traceback."""


def device_error(exc: BaseException) -> ZeusdError:
    """Turn whatever a device call raised into one of ours (never a traceback)."""
    if isinstance(exc, ZeusdError):
        return exc
    if isinstance(exc, NvmlError):
        return NvmlFailure.of(exc)
    return Internal(f"Internal error: {type(exc).__name__}")


class AggregatedError(ZeusdError):
    """Per-device failures: ``{"errors": {"<id>": message}}``, answered with the worst status."""

    def __init__(self, errors: dict[int, ZeusdError]) -> None:
        self.errors = dict(sorted(errors.items()))
        super().__init__("; ".join(f"{k}: {e.message}" for k, e in self.errors.items()))

    @property
    def gpu_unavailable(self) -> bool:
        return all(e.gpu_unavailable for e in self.errors.values())
