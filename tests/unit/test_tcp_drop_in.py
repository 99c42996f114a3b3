"""The shipped TCP example is a socket drop-in only, listening on localhost, and is packaged.

The e2e test proves it works in a booted Debian 12; this keeps its shape from drifting
(e.g. someone adding [Service] relaxations the daemon does not need) without a container.
"""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DROP_IN = REPO / "packaging" / "systemd" / "zeusd-tcp.conf"


def sections() -> dict[str, list[tuple[str, str]]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(DROP_IN.read_text())
    return {name: list(parser[name].items()) for name in parser.sections()}


def test_only_the_socket_changes():
    assert sections() == {"Socket": [("ListenStream", "127.0.0.1:4938"),
                                     ("IPAddressDeny", "any"),
                                     ("IPAddressAllow", "localhost")]}


def test_the_package_installs_it_as_an_example():
    examples = (REPO / "packaging" / "debian" / "zeusd.examples").read_text().split()
    assert examples == ["packaging/systemd/zeusd-tcp.conf"]


def test_the_service_keeps_its_network_sandbox():
    unit = (REPO / "packaging" / "systemd" / "zeusd.service").read_text().splitlines()
    for line in ("PrivateNetwork=yes", "IPAddressDeny=any", "RestrictAddressFamilies=AF_UNIX"):
        assert line in unit
