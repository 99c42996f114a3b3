"""The shipped zeusd.service lets NVML open the GPUs on every driver generation, and no more.

systemd resolves DeviceAllow=char-NAME against /proc/devices by name; the fixtures in
tests/unit/data/proc-devices are a driver <=535 node ("nvidia-frontend") and a >=545 node
("nvidia" + "nvidiactl"), written from the NVIDIA kernel module sources (see their README).
A rename of the driver's major can never again pass silently: the shipped list must give
major 195 rw and nvidia-caps r on both, and must not admit UVM, NVSwitch, NVLink or IMEX.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zeusd.admin.devices import (Allow, admitted_majors, char_devices, check_allow_list,
                                 systemctl_device_allow, unit_device_allow)

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "systemd" / "zeusd.service"
DATA = Path(__file__).resolve().parent / "data" / "proc-devices"
DRIVERS = ["driver-535.txt", "driver-580.txt"]


def devices(name: str) -> list[tuple[int, str]]:
    return char_devices((DATA / name).read_text())


def test_fixtures_are_the_two_generations():
    old, new = devices("driver-535.txt"), devices("driver-580.txt")
    assert [n for m, n in old if m == 195] == ["nvidia-frontend"]
    assert [n for m, n in new if m == 195] == ["nvidia", "nvidia-modeset", "nvidiactl"]
    assert (8, "sd") not in old  # block devices are not character devices


@pytest.mark.parametrize("driver", DRIVERS)
def test_shipped_unit_admits_exactly_what_nvml_needs(driver):
    entries = unit_device_allow(UNIT.read_text())
    assert admitted_majors(entries, devices(driver)) == {195: "rw", 236: "r"}
    assert check_allow_list(entries, devices(driver)) == []


def test_shipped_unit_has_no_wildcard_and_closed_policy():
    text = UNIT.read_text()
    entries = unit_device_allow(text)
    assert entries == [Allow("char-nvidiactl", "rw"), Allow("char-nvidia", "rw"),
                       Allow("char-nvidia-frontend", "rw"), Allow("char-nvidia-caps", "r")]
    assert "DevicePolicy=closed" in text.splitlines()


def test_the_old_allow_list_is_caught_on_a_new_driver():
    old_list = [Allow("char-nvidia-frontend", "rw"), Allow("char-nvidia-caps", "r")]
    assert check_allow_list(old_list, devices("driver-535.txt")) == []
    problems = check_allow_list(old_list, devices("driver-580.txt"))
    assert [p.what for p in problems] == [
        "the unit's DeviceAllow= does not allow major 195 ('nvidia' in /proc/devices) "
        "read-write, so NVML cannot open /dev/nvidiactl and /dev/nvidiaN",
        "the unit's DeviceAllow= does not allow major 195 ('nvidiactl' in /proc/devices) "
        "read-write, so NVML cannot open /dev/nvidiactl and /dev/nvidiaN"]
    assert "DeviceAllow=char-nvidia rw" in problems[0].fix


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_wildcard_is_caught_admitting_majors_nvml_does_not_need(driver):
    problems = check_allow_list([Allow("char-nvidia*", "rw")], devices(driver))
    text = "\n".join(p.what for p in problems)
    assert "DeviceAllow=char-nvidia* rw is a pattern" in text
    for name in ("nvidia-uvm", "nvidia-nvswitch", "nvidia-nvlink"):
        assert name in text, text


def test_missing_caps_and_no_driver_are_problems():
    problems = check_allow_list([Allow("char-nvidia-frontend", "rw")], devices("driver-535.txt"))
    assert [p.fix for p in problems] == [
        "add `DeviceAllow=char-nvidia-caps r` with `systemctl edit zeusd.service`"]
    no_driver = check_allow_list(unit_device_allow(UNIT.read_text()), [(1, "mem")])
    assert len(no_driver) == 1 and "modprobe nvidia" in no_driver[0].fix


def test_drop_in_reset_and_systemctl_show_formats():
    unit = "[Service]\nDeviceAllow=char-nvidia rw\nDeviceAllow=\nDeviceAllow=char-nvidiactl rw\n"
    assert unit_device_allow(unit) == [Allow("char-nvidiactl", "rw")]
    shown = "DeviceAllow=char-nvidiactl rw\nDeviceAllow=char-nvidia-caps r\n"
    assert systemctl_device_allow(shown) == [Allow("char-nvidiactl", "rw"),
                                             Allow("char-nvidia-caps", "r")]
    assert systemctl_device_allow("DeviceAllow=char-nvidia rw char-nvidia-caps r") == [
        Allow("char-nvidia", "rw"), Allow("char-nvidia-caps", "r")]


def test_unit_orders_after_the_driver_without_requiring_it():
    unit = UNIT.read_text().splitlines()
    after = " ".join(line.split("=", 1)[1] for line in unit if line.startswith("After="))
    assert {"nvidia-persistenced.service", "systemd-modules-load.service"} <= set(after.split())
    for key in ("Requires=", "Wants=", "BindsTo=", "Requisite="):
        assert not any(k.startswith(key) and "nvidia" in k for k in unit), key
