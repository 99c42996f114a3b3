"""CPU package and DRAM energy from Linux RAPL (powercap), as upstream zeusd reads it.

Layout: ``<root>/intel-rapl:<N>/{name,energy_uj,max_energy_range_uj}`` per
package, with sub-zones ``intel-rapl:<N>:<M>`` of which the one named ``dram``
is the DRAM domain. ``root`` is ``/zeus_sys/class/powercap/intel-rapl`` when
that exists (containers bind-mount the host's powercap there, since Docker
masks ``/sys/devices/virtual/powercap``), else ``/sys/class/powercap/intel-rapl``.

``energy_uj`` is root-only since CVE-2020-8694, which is why users ask the
daemon. The counters wrap at ``max_energy_range_uj``; each ``RaplCpu`` counts
wraps per domain and returns ``raw + wraps * max_energy_range_uj``, so values
only grow as long as it is read at least once per wrap period (the daemon's
keepalive sees to that). Upstream uses ``max`` as the modulus although the
counter arguably wraps at ``max + 1``; we follow upstream.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SYS_RAPL_ROOT = Path("/sys/class/powercap/intel-rapl")
CONTAINER_RAPL_ROOT = Path("/zeus_sys/class/powercap/intel-rapl")


class RaplError(Exception):
    """A RAPL file could not be read or parsed, or a domain is absent."""


def default_rapl_root() -> Path:
    """The container bind-mount if present, else the host's sysfs path."""
    if CONTAINER_RAPL_ROOT.exists():
        log.info("Reading RAPL through the container mount at %s", CONTAINER_RAPL_ROOT)
        return CONTAINER_RAPL_ROOT
    return SYS_RAPL_ROOT


def _read_u64(path: Path) -> int:
    try:
        text = path.read_text()
    except OSError as err:
        raise RaplError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        value = int(text.strip())
    except ValueError:
        raise RaplError(f"{path} does not hold an integer: {text.strip()[:40]!r}") from None
    if value < 0:
        raise RaplError(f"{path} holds a negative value: {value}")
    return value


@dataclass(frozen=True)
class RaplDomain:
    """One powercap zone: a package or its DRAM."""

    name: str
    energy_path: Path
    max_energy_uj: int

    @classmethod
    def open(cls, zone_dir: Path, cpu_index: int) -> RaplDomain:
        """Check the zone's files as upstream does at start-up; RaplError if unusable."""
        files = [zone_dir / "name", zone_dir / "energy_uj", zone_dir / "max_energy_range_uj"]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise RaplError(f"CPU {cpu_index}: RAPL zone {zone_dir} lacks {', '.join(missing)}")
        try:
            name = files[0].read_text().rstrip()
        except OSError as err:
            raise RaplError(f"cannot read {files[0]}: {err.strerror or err}") from None
        _read_u64(files[1])  # fails here, at start-up, if not root
        return cls(name, files[1], _read_u64(files[2]))


class _WrapCounter:
    """Makes one raw counter monotonic by counting its wraparounds."""

    def __init__(self, max_energy_uj: int) -> None:
        self.max_energy_uj = max_energy_uj
        self.last_raw_uj: int | None = None
        self.wraps = 0

    def update(self, raw_uj: int) -> int:
        if self.last_raw_uj is not None and raw_uj < self.last_raw_uj:
            self.wraps += 1
        self.last_raw_uj = raw_uj
        return raw_uj + self.wraps * self.max_energy_uj


class RaplCpu:
    """One CPU package. Thread-safe: a lock guards the wrap state."""

    def __init__(self, index: int, package: RaplDomain, dram: RaplDomain | None) -> None:
        self.index = index
        self.package = package
        self.dram = dram
        self._lock = threading.Lock()
        self._package_counter = _WrapCounter(package.max_energy_uj)
        self._dram_counter = _WrapCounter(dram.max_energy_uj) if dram else None

    def _raw_uj(self, domain: RaplDomain) -> int:
        """The domain's raw (wrapping) counter; the simulated CPUs override only this."""
        return _read_u64(domain.energy_path)

    @property
    def dram_available(self) -> bool:
        return self.dram is not None

    def read_cpu_energy_uj(self) -> int:
        """Package energy since an arbitrary origin, wraps compensated."""
        raw_uj = self._raw_uj(self.package)
        with self._lock:
            return self._package_counter.update(raw_uj)

    def read_dram_energy_uj(self) -> int:
        """DRAM energy, wraps compensated; RaplError if this package has no DRAM domain."""
        if self.dram is None or self._dram_counter is None:
            raise RaplError(f"CPU {self.index} has no DRAM RAPL domain")
        raw_uj = self._raw_uj(self.dram)
        with self._lock:
            return self._dram_counter.update(raw_uj)

    def read_energy_uj(self, cpu: bool, dram: bool) -> tuple[int | None, int | None]:
        """(package, DRAM) energy; None where not asked for, or DRAM where absent."""
        cpu_uj = self.read_cpu_energy_uj() if cpu else None
        dram_uj = self.read_dram_energy_uj() if dram and self.dram_available else None
        return cpu_uj, dram_uj


def _zone_dirs(directory: Path) -> list[Path]:
    """Sub-directories whose name contains ``intel-rapl``, sorted for a stable order."""
    return sorted(p for p in directory.iterdir() if "intel-rapl" in p.name and p.is_dir())


def _open_cpu(root: Path, index: int) -> RaplCpu:
    package_dir = root / f"intel-rapl:{index}"
    package = RaplDomain.open(package_dir, index)
    try:
        sub_zones = _zone_dirs(package_dir)
    except OSError as err:
        raise RaplError(f"cannot list {package_dir}: {err.strerror or err}") from None
    dram = None
    for zone_dir in sub_zones:
        domain = RaplDomain.open(zone_dir, index)  # every sub-zone must be readable, as upstream
        if domain.name == "dram" and dram is None:
            dram = domain
    return RaplCpu(index, package, dram)


def discover_rapl(root: Path | str | None = None) -> list[RaplCpu]:
    """Every CPU package under ``root`` (default: ``default_rapl_root()``).

    An unreadable or missing root means no RAPL: logged, and 0 CPUs. A package
    whose files are missing or unreadable raises RaplError (the daemon exits,
    as upstream does).
    """
    root = Path(root) if root is not None else default_rapl_root()
    try:
        count = len(_zone_dirs(root))
    except OSError as err:
        log.warning("RAPL not available: cannot read %s (%s); serving 0 CPUs", root, err.strerror or err)
        return []
    cpus = [_open_cpu(root, index) for index in range(count)]
    for cpu in cpus:
        log.info("CPU %d: RAPL zone %s%s", cpu.index, cpu.package.name, " with DRAM" if cpu.dram else "")
    return cpus
