"""zeusctl's human units: what parses to what, and what is refused (with which message)."""

from __future__ import annotations

import pytest

from zeusd.ctl.output import sparkline, table
from zeusd.ctl.units import (
    UnitError,
    format_clock,
    format_power,
    parse_clock_mhz,
    parse_clock_range,
    parse_gpu_ids,
    parse_on_off,
    parse_power_mw,
)


@pytest.mark.parametrize("text, mw", [
    ("300W", 300_000), ("300 W", 300_000), ("300w", 300_000), ("300000mW", 300_000),
    ("300000MW", 300_000),  # units are case-insensitive: "MW" (megawatt) is not a GPU setting
    ("1.2kW", 1_200_000), ("0.25kW", 250_000), ("312.5W", 312_500), (".5W", 500),
    ("1mW", 1), ("4294967295mW", 2**32 - 1),
])
def test_power_parses_to_milliwatts(text, mw):
    assert parse_power_mw(text) == mw


@pytest.mark.parametrize("text, message", [
    ("300", "invalid power '300': give a unit (mW, W, kW), e.g. 300W, 300000mW or 1.2kW"),
    ("300J", "invalid power '300J': give a unit (mW, W, kW), e.g. 300W, 300000mW or 1.2kW"),
    ("-300W", "invalid power '-300W' (e.g. 300W, 300000mW or 1.2kW)"),
    ("W", "invalid power 'W' (e.g. 300W, 300000mW or 1.2kW)"),
    ("", "invalid power '' (e.g. 300W, 300000mW or 1.2kW)"),
    ("1e3W", "invalid power '1e3W' (e.g. 300W, 300000mW or 1.2kW)"),
    ("0.0005W", "invalid power '0.0005W': not a whole number of mW"),
    ("1.5mW", "invalid power '1.5mW': not a whole number of mW"),
    ("4294967296mW", "invalid power '4294967296mW': too large"),
])
def test_power_refused_with_a_message(text, message):
    with pytest.raises(UnitError) as err:
        parse_power_mw(text)
    assert str(err.value) == message


@pytest.mark.parametrize("text, mhz", [
    ("1980MHz", 1980), ("1980 mhz", 1980), ("1.98GHz", 1980), ("2GHz", 2000),
])
def test_clock_parses_to_mhz(text, mhz):
    assert parse_clock_mhz(text) == mhz


def test_clock_refuses_fractions_and_bare_numbers():
    with pytest.raises(UnitError, match=r"not a whole number of MHz"):
        parse_clock_mhz("1.9805GHz")
    with pytest.raises(UnitError, match=r"give a unit \(MHz, GHz\)"):
        parse_clock_mhz("1980")


@pytest.mark.parametrize("text, expected", [
    ("900-1980MHz", (900, 1980)), ("900MHz-1.98GHz", (900, 1980)), ("1.2-1.98GHz", (1200, 1980)),
    ("3201MHz", (3201, 3201)), ("900 - 1980 MHz", (900, 1980)),
])
def test_clock_range(text, expected):
    assert parse_clock_range(text) == expected


def test_clock_range_refuses_min_above_max():
    with pytest.raises(UnitError) as err:
        parse_clock_range("1980-900MHz")
    assert str(err.value) == ("invalid clock range '1980-900MHz': the minimum 1980 MHz is above "
                              "the maximum 900 MHz (a unit after the range applies to both ends)")


@pytest.mark.parametrize("text, value", [("on", True), ("OFF", False), ("true", True),
                                         ("0", False)])
def test_on_off(text, value):
    assert parse_on_off(text) is value


def test_on_off_refuses_others():
    with pytest.raises(UnitError, match=r"invalid switch 'maybe' \(on or off\)"):
        parse_on_off("maybe")


def test_gpu_ids():
    assert parse_gpu_ids("1,0,1") == [0, 1]
    assert parse_gpu_ids("all") is None
    for bad in ("", "0,,1", "x", "-1"):
        with pytest.raises(UnitError, match="invalid GPU list"):
            parse_gpu_ids(bad)


@pytest.mark.parametrize("mw, text", [(300_000, "300 W"), (312_500, "312.5 W"),
                                      (75_433, "75.4 W"), (75_960, "76 W"), (0, "0 W"),
                                      (None, "-")])
def test_format_power(mw, text):
    assert format_power(mw) == text


def test_format_clock():
    assert format_clock(1980) == "1980 MHz"
    assert format_clock(None) == "-"


def test_round_trip_of_every_formatted_whole_watt():
    for watts in (1, 200, 300, 700, 1200):
        assert parse_power_mw(format_power(watts * 1000).replace(" ", "")) == watts * 1000


def test_sparkline_scales_between_min_and_max():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([100, 300]) == "▁█"
    assert sparkline([5, 5, 5]) == "▅▅▅"
    assert sparkline([]) == ""


def test_table_aligns_columns():
    assert table(["A", "BB"], [["xyz", "1"], ["q", "22"]]) == "A    BB\nxyz  1\nq    22"


def test_address_flags_then_the_zeus_clients_environment():
    from zeusd.ctl.transport import DEFAULT_SOCKET_PATH, resolve_address

    env = {"ZEUSD_SOCK_PATH": "/e.sock", "ZEUSD_HOST_PORT": "h:1"}
    assert resolve_address("/f.sock", None, env) == ("/f.sock", None)
    assert resolve_address(None, "http://x:2", env) == (None, "http://x:2")
    assert resolve_address(None, None, env) == ("/e.sock", None)
    assert resolve_address(None, None, {"ZEUSD_HOST_PORT": "h:1"}) == (None, "http://h:1")
    assert resolve_address(None, None, {"ZEUSD_HOST_PORT": "h"}) == (None, "http://h:4938")
    assert resolve_address(None, None, {}) == (DEFAULT_SOCKET_PATH, None)
