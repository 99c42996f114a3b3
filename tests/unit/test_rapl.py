"""RAPL discovery and wraparound compensation, against a fake powercap tree.

The wraparound tests port upstream rapl.rs's unit tests one for one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from zeusd.devices import rapl
from zeusd.devices.rapl import RaplError, discover_rapl


def make_zone(directory: Path, name: str, energy_uj: int = 0, max_uj: int = 262_143_328_850) -> Path:
    directory.mkdir(parents=True)
    (directory / "name").write_text(name + "\n")
    (directory / "energy_uj").write_text(f"{energy_uj}\n")
    (directory / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return directory


def make_tree(root: Path, packages: int = 1, dram: bool = True, max_uj: int = 1_000_000) -> Path:
    """intel-rapl:N packages with core/uncore and optionally DRAM sub-zones, like a real host."""
    for n in range(packages):
        package = make_zone(root / f"intel-rapl:{n}", f"package-{n}", max_uj=max_uj)
        make_zone(package / f"intel-rapl:{n}:0", "core", max_uj=max_uj)
        if dram:
            make_zone(package / f"intel-rapl:{n}:1", "dram", max_uj=max_uj)
    (root / "enabled").write_text("1\n")  # files in the root are not packages
    return root


def write_energy(path: Path, value: int) -> None:
    path.write_text(f"{value}\n")


def one_cpu(tmp_path: Path, max_uj: int, with_dram: bool = False):
    cpu = discover_rapl(make_tree(tmp_path / "rapl", dram=with_dram, max_uj=max_uj))[0]
    return cpu, cpu.package.energy_path, cpu.dram.energy_path if cpu.dram else None


# ----- discovery -----


def test_discovers_packages_and_dram(tmp_path):
    root = make_tree(tmp_path / "rapl", packages=2)
    cpus = discover_rapl(root)
    assert [c.index for c in cpus] == [0, 1]
    assert all(c.dram_available for c in cpus)
    assert cpus[1].package.name == "package-1"
    assert cpus[1].dram.energy_path == root / "intel-rapl:1" / "intel-rapl:1:1" / "energy_uj"


def test_no_dram_subzone(tmp_path):
    (cpu,) = discover_rapl(make_tree(tmp_path / "rapl", dram=False))
    assert cpu.dram_available is False
    write_energy(cpu.package.energy_path, 77)
    assert cpu.read_energy_uj(cpu=True, dram=True) == (77, None)  # absent DRAM is null, not an error


def test_read_energy_uj_only_what_is_asked(tmp_path):
    cpu, cpu_path, dram_path = one_cpu(tmp_path, 1_000_000, with_dram=True)
    write_energy(cpu_path, 10)
    write_energy(dram_path, 20)
    assert cpu.read_energy_uj(cpu=True, dram=True) == (10, 20)
    assert cpu.read_energy_uj(cpu=False, dram=True) == (None, 20)
    assert cpu.read_energy_uj(cpu=True, dram=False) == (10, None)
    assert cpu.read_energy_uj(cpu=False, dram=False) == (None, None)


def test_missing_root_means_zero_cpus(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="zeusd.devices.rapl"):
        assert discover_rapl(tmp_path / "absent") == []
    assert f"RAPL not available: cannot read {tmp_path / 'absent'}" in caplog.text


def test_unreadable_root_means_zero_cpus(tmp_path, monkeypatch, caplog):
    root = make_tree(tmp_path / "rapl")
    real_iterdir = Path.iterdir

    def iterdir(self):  # as for a non-root user on a mode-0700 tree; root ignores chmod
        if self == root:
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with caplog.at_level(logging.WARNING, logger="zeusd.devices.rapl"):
        assert discover_rapl(root) == []
    assert f"RAPL not available: cannot read {root} (Permission denied); serving 0 CPUs" in caplog.text


def test_package_missing_a_file_fails_start_up(tmp_path):
    root = make_tree(tmp_path / "rapl")
    (root / "intel-rapl:0" / "max_energy_range_uj").unlink()
    with pytest.raises(RaplError, match=r"CPU 0: RAPL zone .*intel-rapl:0 lacks max_energy_range_uj"):
        discover_rapl(root)


def test_unparsable_energy_fails_start_up(tmp_path):
    root = make_tree(tmp_path / "rapl")
    write_energy(root / "intel-rapl:0" / "intel-rapl:0:0" / "energy_uj", "n/a")  # type: ignore[arg-type]
    with pytest.raises(RaplError, match=r"intel-rapl:0:0/energy_uj does not hold an integer: 'n/a'"):
        discover_rapl(root)


def test_read_failure_is_a_rapl_error(tmp_path):
    cpu, cpu_path, _ = one_cpu(tmp_path, 1_000)
    cpu_path.unlink()
    with pytest.raises(RaplError, match=r"cannot read .*energy_uj: No such file or directory"):
        cpu.read_cpu_energy_uj()


def test_container_root_preferred(tmp_path, monkeypatch):
    container = make_tree(tmp_path / "zeus_sys")
    monkeypatch.setattr(rapl, "CONTAINER_RAPL_ROOT", container)
    assert rapl.default_rapl_root() == container
    monkeypatch.setattr(rapl, "CONTAINER_RAPL_ROOT", tmp_path / "absent")
    assert rapl.default_rapl_root() == Path("/sys/class/powercap/intel-rapl")


# ----- upstream rapl.rs unit tests -----


def test_monotonic_increase_no_wraparound(tmp_path):
    cpu, path, _ = one_cpu(tmp_path, 1_000_000)
    for value in (100, 500, 1_000, 50_000, 999_999):
        write_energy(path, value)
        assert cpu.read_cpu_energy_uj() == value


def test_single_wraparound(tmp_path):
    max_uj = 1_000_000
    cpu, path, _ = one_cpu(tmp_path, max_uj)
    write_energy(path, 900_000)
    assert cpu.read_cpu_energy_uj() == 900_000
    write_energy(path, 100)
    assert cpu.read_cpu_energy_uj() == 100 + max_uj
    write_energy(path, 5_000)
    assert cpu.read_cpu_energy_uj() == 5_000 + max_uj


def test_multiple_wraparounds(tmp_path):
    max_uj = 1_000
    cpu, path, _ = one_cpu(tmp_path, max_uj)
    for raw, expected in [(800, 800), (200, 200 + max_uj), (900, 900 + max_uj), (50, 50 + 2 * max_uj),
                          (30, 30 + 3 * max_uj)]:
        write_energy(path, raw)
        assert cpu.read_cpu_energy_uj() == expected


def test_wraparound_to_zero(tmp_path):
    max_uj = 1_000_000
    cpu, path, _ = one_cpu(tmp_path, max_uj)
    write_energy(path, 500_000)
    assert cpu.read_cpu_energy_uj() == 500_000
    write_energy(path, 0)
    assert cpu.read_cpu_energy_uj() == max_uj


def test_first_call_establishes_baseline(tmp_path):
    cpu, path, _ = one_cpu(tmp_path, 1_000_000)
    write_energy(path, 42_000)
    assert cpu.read_cpu_energy_uj() == 42_000
    write_energy(path, 100_000)
    assert cpu.read_cpu_energy_uj() == 100_000


def test_dram_wraparound(tmp_path):
    max_uj = 500_000
    cpu, _, dram_path = one_cpu(tmp_path, max_uj, with_dram=True)
    for raw, expected in [(400_000, 400_000), (1_000, 1_000 + max_uj), (200_000, 200_000 + max_uj)]:
        write_energy(dram_path, raw)
        assert cpu.read_dram_energy_uj() == expected


def test_cpu_and_dram_wraparound_independently(tmp_path):
    max_uj = 1_000
    cpu, cpu_path, dram_path = one_cpu(tmp_path, max_uj, with_dram=True)
    steps = [
        ((800, 600), (800, 600)),  # both start high
        ((100, 900), (100 + max_uj, 900)),  # only the package wraps
        ((500, 200), (500 + max_uj, 200 + max_uj)),  # only DRAM wraps
        ((50, 50), (50 + 2 * max_uj, 50 + 2 * max_uj)),  # both wrap
    ]
    for (raw_cpu, raw_dram), expected in steps:
        write_energy(cpu_path, raw_cpu)
        write_energy(dram_path, raw_dram)
        assert cpu.read_energy_uj(cpu=True, dram=True) == expected


def test_dram_not_available_returns_error(tmp_path):
    cpu, _, _ = one_cpu(tmp_path, 1_000_000)
    with pytest.raises(RaplError, match="^CPU 0 has no DRAM RAPL domain$"):
        cpu.read_dram_energy_uj()


def test_compensated_values_are_monotonic_under_rapid_wraparounds(tmp_path):
    cpu, path, _ = one_cpu(tmp_path, 100)
    raw_sequence = [80, 30, 90, 10, 70, 20, 60, 5, 95, 0]
    write_energy(path, raw_sequence[0])
    last = cpu.read_cpu_energy_uj()
    for raw in raw_sequence[1:]:
        write_energy(path, raw)
        compensated = cpu.read_cpu_energy_uj()
        assert compensated >= last, f"compensated energy decreased: {last} -> {compensated} (raw={raw})"
        last = compensated


def test_concurrent_readers_count_each_wrap_once(tmp_path):
    cpu, path, _ = one_cpu(tmp_path, 1_000)
    write_energy(path, 900)
    cpu.read_cpu_energy_uj()
    write_energy(path, 100)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(cpu.read_cpu_energy_uj())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1_100] * 8
