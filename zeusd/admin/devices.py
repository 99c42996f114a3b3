"""The NVIDIA device nodes, /proc/devices, and a unit's DeviceAllow= list.

systemd turns ``DeviceAllow=char-NAME perms`` into "major M, any minor" for every
line of /proc/devices' "Character devices:" section whose name matches NAME as an
fnmatch(3) pattern (src/core/bpf-devices.c, bpf_devices_allow_list_major; "*" and a
plain number are taken as they are). A name that matches nothing allows nothing, with
no error: that is how a driver's rename of its major can lock NVML out silently. This
module does the same resolution, so a test and `zeusd doctor` can tell what a unit
really lets the service open on a given driver.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ..devices.diagnose import GPU_MAJOR_NAMES

# MIG capabilities (/dev/nvidia-caps/*): NVML reads them.
CAPS_NAME = "nvidia-caps"
# Other NVIDIA majors zeusd's NVML calls never need; a list admitting them is too wide.
NOT_NEEDED_PREFIX = "nvidia"
# nvidia-modeset shares major 195 (minor 254), so allowing 195 admits it too; unavoidable
# with a name-based rule, and harmless: it is the display driver's interface.
SHARES_GPU_MAJOR = ("nvidia-modeset",)


@dataclass(frozen=True)
class Allow:
    """One DeviceAllow= entry: 'char-nvidia' and 'rw'."""

    spec: str
    perms: str


@dataclass(frozen=True)
class Problem:
    """Something wrong, and what fixes it."""

    what: str
    fix: str


def char_devices(proc_devices_text: str) -> list[tuple[int, str]]:
    """(major, name) of each line in /proc/devices' character section, in order."""
    out, in_char = [], False
    for line in proc_devices_text.splitlines():
        if line.strip() == "Character devices:":
            in_char = True
        elif line.strip().endswith("devices:"):
            in_char = False
        elif in_char and line.strip():
            major, _, name = line.strip().partition(" ")
            if major.isdigit():
                out.append((int(major), name.strip()))
    return out


def unit_device_allow(unit_text: str) -> list[Allow]:
    """The DeviceAllow= entries of a unit file's [Service] section; an empty
    assignment resets the list, as systemd does (so drop-ins are read in order)."""
    entries: list[Allow] = []
    section = None
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, sep, value = line.partition("=")
        if section == "[Service]" and sep and key.strip() == "DeviceAllow":
            entries = _add_allow(entries, value.strip())
    return entries


def systemctl_device_allow(show_output: str) -> list[Allow]:
    """Parse `systemctl show -p DeviceAllow`: 'DeviceAllow=char-nvidia rw' lines
    (one per entry; older systemd puts several in one line, separated by spaces)."""
    entries: list[Allow] = []
    for line in show_output.splitlines():
        key, sep, value = line.partition("=")
        if key.strip() != "DeviceAllow" or not sep:
            continue
        words = value.split()
        for i in range(0, len(words) - 1, 2):
            entries.append(Allow(words[i], words[i + 1]))
        if len(words) % 2:
            entries.append(Allow(words[-1], "rwm"))
    return entries


def _add_allow(entries: list[Allow], value: str) -> list[Allow]:
    if not value:
        return []
    spec, _, perms = value.partition(" ")
    return entries + [Allow(spec, perms.strip() or "rwm")]


def admitted_majors(entries: list[Allow], devices: list[tuple[int, str]]) -> dict[int, str]:
    """Character majors the entries admit and with which permissions (systemd's rules)."""
    admitted: dict[int, str] = {}
    for entry in entries:
        if not entry.spec.startswith("char-"):
            continue
        pattern = entry.spec[len("char-"):]
        majors = _matching_majors(pattern, devices)
        for major in majors:
            admitted[major] = "".join(sorted(set(admitted.get(major, "")) | set(entry.perms)))
    return admitted


def _matching_majors(pattern: str, devices: list[tuple[int, str]]) -> set[int]:
    if pattern == "*":
        return {major for major, _ in devices}
    if pattern.isdigit():
        return {int(pattern)}
    return {major for major, name in devices if fnmatch.fnmatchcase(name, pattern)}


def check_allow_list(entries: list[Allow], devices: list[tuple[int, str]]) -> list[Problem]:
    """What is wrong with ``entries`` for NVML on the driver described by ``devices``."""
    admitted = admitted_majors(entries, devices)
    names_by_major: dict[int, list[str]] = {}
    for major, name in devices:
        names_by_major.setdefault(major, []).append(name)
    problems = _missing(admitted, devices) + _wildcards(entries)
    problems += _too_wide(admitted, names_by_major)
    return problems


def _missing(admitted: dict[int, str], devices: list[tuple[int, str]]) -> list[Problem]:
    problems = []
    gpu = [(m, n) for m, n in devices if n in GPU_MAJOR_NAMES]
    if not gpu:
        return [Problem("the NVIDIA driver registers no device major (no nvidia, nvidiactl or "
                        "nvidia-frontend in /proc/devices)",
                        "load the driver: `modprobe nvidia` (or install it), then try again")]
    for major, name in gpu:
        if not set("rw") <= set(admitted.get(major, "")):
            problems.append(Problem(
                f"the unit's DeviceAllow= does not allow major {major} ('{name}' in "
                "/proc/devices) read-write, so NVML cannot open /dev/nvidiactl and /dev/nvidiaN",
                f"allow it: `systemctl edit zeusd.service` and add `DeviceAllow=char-{name} rw` "
                "(or reinstall the current zeusd package)"))
    for major, name in devices:
        if name == CAPS_NAME and "r" not in admitted.get(major, ""):
            problems.append(Problem(
                f"the unit's DeviceAllow= does not allow major {major} ('{CAPS_NAME}') for "
                "reading; NVML cannot read MIG capabilities",
                f"add `DeviceAllow=char-{CAPS_NAME} r` with `systemctl edit zeusd.service`"))
    return problems


def _wildcards(entries: list[Allow]) -> list[Problem]:
    return [Problem(f"DeviceAllow={e.spec} {e.perms} is a pattern; it admits every matching "
                    "device major, also ones NVML does not need",
                    "list the names instead: char-nvidiactl rw, char-nvidia rw, "
                    "char-nvidia-frontend rw, char-nvidia-caps r")
            for e in entries if e.spec.startswith("char-") and re.search(r"[*?\[]", e.spec)]


def _too_wide(admitted: dict[int, str], names_by_major: dict[int, list[str]]) -> list[Problem]:
    needed = set(GPU_MAJOR_NAMES) | {CAPS_NAME} | set(SHARES_GPU_MAJOR)
    problems = []
    for major in sorted(admitted):
        extra = [n for n in names_by_major.get(major, [])
                 if n.startswith(NOT_NEEDED_PREFIX) and n not in needed]
        if extra and not set(names_by_major[major]) & (needed - set(SHARES_GPU_MAJOR)):
            problems.append(Problem(
                f"the unit's DeviceAllow= admits major {major} ({', '.join(extra)}), which "
                "zeusd's NVML calls do not need",
                "remove that entry from DeviceAllow= (`systemctl edit zeusd.service`)"))
    return problems
