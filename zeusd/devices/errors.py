"""NVML errors as the device layer reports them, whichever backend raised them.

The codes and texts are NVML's own (``nvmlErrorString``), so a simulated GPU
fails exactly like a real one and the HTTP layer maps both the same way.
"""

from __future__ import annotations

SUCCESS = 0
UNINITIALIZED = 1
INVALID_ARGUMENT = 2
NOT_SUPPORTED = 3
NO_PERMISSION = 4
ALREADY_INITIALIZED = 5
NOT_FOUND = 6
INSUFFICIENT_SIZE = 7
INSUFFICIENT_POWER = 8
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
IRQ_ISSUE = 11
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
CORRUPTED_INFOROM = 14
GPU_IS_LOST = 15
RESET_REQUIRED = 16
OPERATING_SYSTEM = 17
LIB_RM_VERSION_MISMATCH = 18
IN_USE = 19
MEMORY = 20
NO_DATA = 21
UNKNOWN = 999

# nvmlErrorString() of each code, as the driver prints it.
ERROR_TEXT = {
    UNINITIALIZED: "Uninitialized",
    INVALID_ARGUMENT: "Invalid Argument",
    NOT_SUPPORTED: "Not Supported",
    NO_PERMISSION: "Insufficient Permissions",
    ALREADY_INITIALIZED: "Already Initialized",
    NOT_FOUND: "Not Found",
    INSUFFICIENT_SIZE: "Insufficient Size",
    INSUFFICIENT_POWER: "Insufficient External Power",
    DRIVER_NOT_LOADED: "Driver Not Loaded",
    TIMEOUT: "Timeout",
    IRQ_ISSUE: "Interrupt Request Issue",
    LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    FUNCTION_NOT_FOUND: "Function Not Found",
    CORRUPTED_INFOROM: "Corrupted infoROM",
    GPU_IS_LOST: "GPU is lost",
    RESET_REQUIRED: "GPU requires restart",
    OPERATING_SYSTEM: "The operating system has blocked the request.",
    LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    IN_USE: "In use by another client",
    MEMORY: "Insufficient Memory",
    NO_DATA: "No data",
    UNKNOWN: "Unknown Error",
}

# Why each error usually happens, for the message an administrator reads.
_LIKELY_CAUSE = {
    INVALID_ARGUMENT: "the value is invalid or outside what this GPU supports",
    NOT_SUPPORTED: "this GPU or driver does not support the operation",
    NO_PERMISSION: "the daemon lacks root or CAP_SYS_ADMIN",
    GPU_IS_LOST: "the GPU fell off the bus; it needs a reset or a reboot",
    DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
}


class NvmlError(Exception):
    """An NVML call failed. Carries NVML's code, its text and the function name."""

    def __init__(self, code: int, function: str) -> None:
        self.code = code
        self.function = function
        self.text = ERROR_TEXT.get(code, f"Unknown NVML error {code}")
        super().__init__(self.message)

    @property
    def message(self) -> str:
        cause = _LIKELY_CAUSE.get(self.code)
        suffix = f": {cause}" if cause else ""
        return f"NVML error: {self.text} ({self.function}){suffix}"

    def __reduce__(self):  # keep picklable despite the custom __init__
        return (NvmlError, (self.code, self.function))
