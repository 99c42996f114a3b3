"""A fake RAPL powercap tree (``intel-rapl:N`` with an optional DRAM sub-zone).

The daemon reads it through ``--rapl-root``; tests write new counter values
between requests to drive it (including wraparounds).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_MAX_UJ = 262_143_328_850
DRAM_MAX_UJ = 65_712_999_613


class FakeRapl:
    def __init__(self, root: Path, dram: tuple[bool, ...] = (True,),
                 package_max_uj: int = PACKAGE_MAX_UJ, dram_max_uj: int = DRAM_MAX_UJ) -> None:
        """One package per entry of ``dram``; True gives it a DRAM sub-zone."""
        self.root = root
        self.package_max_uj = package_max_uj
        self.dram_max_uj = dram_max_uj
        root.mkdir(parents=True, exist_ok=True)
        for index, has_dram in enumerate(dram):
            package = root / f"intel-rapl:{index}"
            self._zone(package, f"package-{index}", 1_000_000 * (index + 1), package_max_uj)
            # A non-DRAM sub-zone sorts first: the daemon must pick the one *named* dram.
            self._zone(package / f"intel-rapl:{index}:0", "core", 7, package_max_uj)
            if has_dram:
                self._zone(package / f"intel-rapl:{index}:1", "dram", 500_000, dram_max_uj)

    @staticmethod
    def _zone(directory: Path, name: str, energy_uj: int, max_uj: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "name").write_text(name + "\n")
        (directory / "energy_uj").write_text(f"{energy_uj}\n")
        (directory / "max_energy_range_uj").write_text(f"{max_uj}\n")

    def set(self, package: int, cpu_uj: int | None = None, dram_uj: int | None = None) -> None:
        """Write new raw counter values, as the hardware would."""
        base = self.root / f"intel-rapl:{package}"
        if cpu_uj is not None:
            _replace(base / "energy_uj", cpu_uj)
        if dram_uj is not None:
            _replace(base / f"intel-rapl:{package}:1" / "energy_uj", dram_uj)


def _replace(path: Path, value: int) -> None:
    """Atomically, as sysfs never shows a half-written counter."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)
