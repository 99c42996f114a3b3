"""zeusd's own exception hierarchy. Each carries its HTTP status and body;
``zeusd.api.errors`` maps them to responses in one place."""

from __future__ import annotations

from .devices.errors import GPU_IS_LOST, NO_PERMISSION, INVALID_ARGUMENT, NOT_SUPPORTED, NvmlError


class ZeusdError(Exception):
    """Base: a failure answered with ``status`` and ``{"error": message}``."""

    status = 500

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.message, **self.extra}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ZeusdError):
    status = 400


class Unauthorized(ZeusdError):
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="zeusd"'}


class Forbidden(ZeusdError):
    status = 403


class NotFound(ZeusdError):
    status = 404


class Conflict(ZeusdError):
    status = 409


class TooManyRequests(ZeusdError):
    status = 429


class Unavailable(ZeusdError):
    """A GPU that cannot answer (lost), or a daemon that is stopping."""

    status = 503


class DeviceTimeout(ZeusdError):
    """An NVML call did not return within the configured limit."""

    status = 504


class Internal(ZeusdError):
    status = 500


def status_of_nvml(err: NvmlError) -> int:
    """Upstream's mapping: NO_PERMISSION 403; INVALID_ARGUMENT, NOT_SUPPORTED 400; else 500.
    (ours) GPU_IS_LOST 503: that GPU is gone until a reset, the daemon is fine."""
    if err.code == NO_PERMISSION:
        return 403
    if err.code == GPU_IS_LOST:
        return 503
    if err.code in (INVALID_ARGUMENT, NOT_SUPPORTED):
        return 400
    return 500


def device_error(exc: BaseException) -> ZeusdError:
    """Turn whatever a device call raised into one of ours (never a traceback)."""
    if isinstance(exc, ZeusdError):
        return exc
    if isinstance(exc, NvmlError):
        err = ZeusdError(exc.message)
        err.status = status_of_nvml(exc)
        return err
    return Internal(f"Internal error: {type(exc).__name__}")


class AggregatedError(ZeusdError):
    """Per-device failures: ``{"errors": {"<id>": message}}``, status = the largest."""

    def __init__(self, errors: dict[int, ZeusdError]) -> None:
        self.errors = dict(sorted(errors.items()))
        super().__init__("; ".join(f"{k}: {e.message}" for k, e in self.errors.items()))
        self.status = max(e.status for e in self.errors.values())

    def body(self) -> dict:
        return {"errors": {str(k): e.message for k, e in self.errors.items()}}
