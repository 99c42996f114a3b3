"""What the simulated backend simulates: GPU profiles, spec strings and faults.

A *profile* is the static description of one GPU model as NVML reports it.
``h200`` is taken from a real H200's NVML probe (tests/fixtures of the
project: ``shared/fixtures/nvml``); ``h100``, ``a100`` and ``a40`` come from the
vendors' public specifications and are approximations where noted.

A *spec* says which GPUs to simulate. It is either a short string
(``h200x4``, ``a100x8``, ``h100``, ``h200x2,a40``) or the path of a JSON file::

    {"profile": "h200" | ["h200", "a40"] | {"base": "a40", "energy_counter": false},
     "count": 2, "journal": "/tmp/journal.jsonl", "latency": "none" | "fixture",
     "faults": [{"gpu": 0, "call": "nvmlDeviceGetPowerManagementLimit", "error": "NO_PERMISSION"}]}

Everything here is parsed once into frozen objects; every mistake is a
``ValueError`` whose one-line message names the spec and the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import errors

MAX_GPUS = 64

# Measured p50 latency of the NVML calls in the H200 probe, in microseconds.
H200_LATENCY_US = {
    "nvmlDeviceGetPowerUsage": 1.064,
    "nvmlDeviceGetPowerManagementLimit": 170.636,
    "nvmlDeviceGetTotalEnergyConsumption": 3027.142,
    "nvmlDeviceGetPersistenceMode": 3.736,
    "nvmlDeviceGetPowerManagementLimitConstraints": 1.278,
}

# Every NVML function a simulated GPU answers; fault entries must name one (or "*").
NVML_CALLS = frozenset(
    {
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceSetPowerManagementLimit",
        "nvmlDeviceGetPersistenceMode",
        "nvmlDeviceSetPersistenceMode",
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceSetMemoryLockedClocks",
        "nvmlDeviceResetMemoryLockedClocks",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetSupportedMemoryClocks",
        "nvmlDeviceGetSupportedGraphicsClocks",
    }
)


def _clock_steps_mhz(max_mhz: int, min_mhz: int, step_mhz: int = 15) -> tuple[int, ...]:
    """Graphics clocks as NVML lists them: descending, in fixed steps."""
    return tuple(range(max_mhz, min_mhz - 1, -step_mhz))


@dataclass(frozen=True)
class Profile:
    """One GPU model as NVML describes it. Clock lists are descending, like NVML's."""

    key: str
    name: str
    power_limit_constraints_mw: tuple[int, int]
    default_power_limit_mw: int
    idle_power_mw: int
    memory_clocks_mhz: tuple[int, ...]
    graphics_clocks_mhz: tuple[int, ...]  # the same list for every memory clock
    persistence_mode: bool = False
    instant_power: bool = True  # NVML_FI_DEV_POWER_INSTANT (field 186) is available
    energy_counter: bool = True  # nvmlDeviceGetTotalEnergyConsumption (Volta and later)
    initial_energy_mj: int = 2_536_141
    pci_base: tuple[int, int, int] = (0, 0, 0)  # domain, bus, device of GPU 0
    latency_us: dict[str, float] = field(default_factory=lambda: dict(H200_LATENCY_US))


PROFILES = {
    # From shared/fixtures/nvml/h200-probe.json (a cloud VM: GPU 0 at 0000:00:06.0).
    "h200": Profile(
        key="h200",
        name="NVIDIA H200",
        power_limit_constraints_mw=(200_000, 700_000),
        default_power_limit_mw=700_000,
        idle_power_mw=75_000,
        memory_clocks_mhz=(3201, 2201),
        graphics_clocks_mhz=_clock_steps_mhz(1980, 345),
        persistence_mode=True,
        pci_base=(0, 0, 6),
    ),
    # H100 SXM5 80GB, public specs.
    "h100": Profile(
        key="h100",
        name="NVIDIA H100 80GB HBM3",
        power_limit_constraints_mw=(200_000, 700_000),
        default_power_limit_mw=700_000,
        idle_power_mw=70_000,
        memory_clocks_mhz=(2619,),
        graphics_clocks_mhz=_clock_steps_mhz(1980, 345),
        initial_energy_mj=1_804_220,
        pci_base=(0, 0x18, 0),
    ),
    # A100 SXM4 80GB, public specs.
    "a100": Profile(
        key="a100",
        name="NVIDIA A100-SXM4-80GB",
        power_limit_constraints_mw=(100_000, 400_000),
        default_power_limit_mw=400_000,
        idle_power_mw=60_000,
        memory_clocks_mhz=(1593,),
        graphics_clocks_mhz=_clock_steps_mhz(1410, 210),
        initial_energy_mj=903_117,
        pci_base=(0, 0x07, 0),
    ),
    # A40, public specs. Its driver has no POWER_INSTANT field, so power reads
    # fall back to the averaged nvmlDeviceGetPowerUsage. The real A40 lists fewer
    # graphics clocks at its two lowest memory clocks; we list the same for all.
    "a40": Profile(
        key="a40",
        name="NVIDIA A40",
        power_limit_constraints_mw=(100_000, 300_000),
        default_power_limit_mw=300_000,
        idle_power_mw=30_000,
        memory_clocks_mhz=(7251, 5001, 810, 405),
        graphics_clocks_mhz=_clock_steps_mhz(1740, 210),
        instant_power=False,
        initial_energy_mj=411_002,
        pci_base=(0, 0x3B, 0),
    ),
}

_OVERRIDABLE = {
    f.name for f in dataclasses.fields(Profile) if f.name not in ("key", "latency_us")
}
_TUPLE_FIELDS = {"power_limit_constraints_mw", "memory_clocks_mhz", "graphics_clocks_mhz", "pci_base"}


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault; see the module docstring of ``simulated``."""

    gpu: int | None = None  # None: every GPU
    call: str = "*"
    error: int | None = None  # NVML error code to raise
    delay_s: float = 0.0
    hang: bool = False
    lost: bool = False
    after_calls: int = 0
    after_s: float = 0.0
    times: int | None = None  # None: forever


@dataclass(frozen=True)
class SimSpec:
    """A parsed spec: one profile per GPU, and how to run them."""

    profiles: tuple[Profile, ...]
    journal_path: str | None = None
    latency: str = "none"
    faults: tuple[FaultSpec, ...] = ()


def parse_spec(spec: str) -> SimSpec:
    """Parse a spec string or the path of a JSON spec file. Raises ValueError."""
    text = spec.strip()
    if text.endswith(".json") or "/" in text:
        return _parse_spec_file(Path(text))
    return SimSpec(profiles=_parse_short_spec(text, f"simulated GPU spec {spec!r}"))


def _parse_short_spec(text: str, where: str) -> tuple[Profile, ...]:
    profiles: list[Profile] = []
    for part in text.split(","):
        match = re.fullmatch(r"([a-z][a-z0-9]*?)(?:x(\d+))?", part.strip().lower())
        if not match:
            raise ValueError(f"{where}: expected PROFILE[xCOUNT], e.g. h200x2, got {part.strip()!r}")
        profiles += [_profile(match.group(1), where)] * _count(match.group(2) or "1", where)
    if len(profiles) > MAX_GPUS:
        raise ValueError(f"{where}: at most {MAX_GPUS} GPUs, got {len(profiles)}")
    return tuple(profiles)


def _profile(key: str, where: str) -> Profile:
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"{where}: unknown GPU profile {key!r} (known: {known})") from None


def _count(value: object, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_GPUS:
        raise ValueError(f"{where}: GPU count must be an integer 1-{MAX_GPUS}, got {value!r}")
    return value


def _parse_spec_file(path: Path) -> SimSpec:
    where = f"simulated GPU spec file {path}"
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"{where}: cannot read it: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: line {err.lineno}: invalid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object at the top level")
    _reject_unknown(data, {"profile", "count", "journal", "latency", "faults"}, where)
    profiles = _file_profiles(data, where)
    journal = data.get("journal")
    if journal is not None and not isinstance(journal, str):
        raise ValueError(f"{where}: key 'journal' must be a path string, got {journal!r}")
    if journal is not None:
        journal = str(path.parent / journal)  # relative paths are relative to the spec file
    latency = data.get("latency", "none")
    if latency not in ("none", "fixture"):
        raise ValueError(f"{where}: key 'latency' must be 'none' or 'fixture', got {latency!r}")
    faults = data.get("faults", [])
    if not isinstance(faults, list):
        raise ValueError(f"{where}: key 'faults' must be a list")
    parsed = tuple(parse_fault(f, f"{where}: faults[{i}]", len(profiles)) for i, f in enumerate(faults))
    return SimSpec(profiles, journal, latency, parsed)


def _file_profiles(data: dict, where: str) -> tuple[Profile, ...]:
    value = data.get("profile", "h200")
    if isinstance(value, list):
        if "count" in data:
            raise ValueError(f"{where}: give either a list of profiles or 'count', not both")
        if not value:
            raise ValueError(f"{where}: key 'profile' is an empty list")
        profiles = tuple(_one_profile(v, f"{where}: profile[{i}]") for i, v in enumerate(value))
        if len(profiles) > MAX_GPUS:
            raise ValueError(f"{where}: at most {MAX_GPUS} GPUs, got {len(profiles)}")
        return profiles
    return (_one_profile(value, f"{where}: profile"),) * _count(data.get("count", 1), f"{where}: count")


def _one_profile(value: object, where: str) -> Profile:
    if isinstance(value, str):
        return _profile(value, where)
    if not isinstance(value, dict) or not isinstance(value.get("base"), str):
        raise ValueError(f"{where}: expected a profile name or {{'base': NAME, ...overrides}}")
    base = _profile(value["base"], where)
    overrides = {k: v for k, v in value.items() if k != "base"}
    _reject_unknown(overrides, _OVERRIDABLE, where)
    for key in _TUPLE_FIELDS & overrides.keys():
        overrides[key] = tuple(overrides[key])
    profile = dataclasses.replace(base, **overrides)
    low, high = profile.power_limit_constraints_mw
    if not low <= profile.default_power_limit_mw <= high:
        raise ValueError(f"{where}: default_power_limit_mw is outside power_limit_constraints_mw")
    return profile


def parse_fault(entry: object, where: str, gpu_count: int) -> FaultSpec:
    """Validate one fault entry (a JSON object) into a FaultSpec."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object")
    _reject_unknown(entry, {f.name for f in dataclasses.fields(FaultSpec)}, where)
    gpu = entry.get("gpu")
    if gpu == "*":
        gpu = None
    if gpu is not None and (not isinstance(gpu, int) or isinstance(gpu, bool) or not 0 <= gpu < gpu_count):
        raise ValueError(f"{where}: 'gpu' must be '*' or a GPU index 0-{gpu_count - 1}, got {gpu!r}")
    lost = entry.get("lost", False) is True
    call = entry.get("call", "*" if lost else None)
    if call != "*" and call not in NVML_CALLS:
        raise ValueError(f"{where}: 'call' must be '*' or a simulated NVML function, got {call!r}")
    values = dict(entry, gpu=gpu, call=call)
    if "error" in entry:
        values["error"] = error_code(entry["error"], where)
    _check_numbers(values, where)
    fault = FaultSpec(**values)
    if not (fault.error is not None or fault.delay_s or fault.hang or fault.lost):
        raise ValueError(f"{where}: give at least one of 'error', 'delay_s', 'hang', 'lost'")
    if fault.lost and (fault.call != "*" or fault.times is not None):
        raise ValueError(f"{where}: a lost GPU is lost for every call and for good ('call' and 'times' do not apply)")
    return fault


def _check_numbers(values: dict, where: str) -> None:
    for key in ("delay_s", "after_s"):
        if key in values and (not isinstance(values[key], (int, float)) or values[key] < 0):
            raise ValueError(f"{where}: {key!r} must be a number >= 0, got {values[key]!r}")
    for key in ("after_calls", "times"):
        value = values.get(key)
        if key in values and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{where}: {key!r} must be an integer >= 0, got {value!r}")
    for key in ("hang", "lost"):
        if key in values and not isinstance(values[key], bool):
            raise ValueError(f"{where}: {key!r} must be true or false, got {values[key]!r}")


def error_code(value: object, where: str = "fault") -> int:
    """An NVML error code from its name (NO_PERMISSION, NVML_ERROR_NO_PERMISSION) or number."""
    if isinstance(value, int) and not isinstance(value, bool) and value in errors.ERROR_TEXT:
        return value
    if isinstance(value, str):
        name = value.upper().removeprefix("NVML_ERROR_")
        code = getattr(errors, name, None)
        if isinstance(code, int) and code in errors.ERROR_TEXT:
            return code
    raise ValueError(f"{where}: unknown NVML error {value!r} (e.g. NO_PERMISSION, GPU_IS_LOST)")


def _reject_unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
