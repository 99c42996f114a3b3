"""Decoding the journal's native protocol, strictly, as journald reads a datagram."""

from __future__ import annotations

import struct


def parse_journal(datagram: bytes) -> dict[str, str]:
    """KEY=value\\n, or KEY\\n <64-bit little-endian length> data \\n (the binary-safe form).
    Raises ValueError on bad framing or a field name journald would refuse."""
    fields, rest = {}, datagram
    while rest:
        end = rest.index(b"\n")
        line = rest[:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            rest = rest[end + 1:]
        else:
            key = line
            (length,) = struct.unpack("<Q", rest[end + 1:end + 9])
            value = rest[end + 9:end + 9 + length]
            if rest[end + 9 + length:end + 10 + length] != b"\n":
                raise ValueError("bad binary-safe framing")
            rest = rest[end + 10 + length:]
        if not key.replace(b"_", b"").isalnum() or key != key.upper():
            raise ValueError(f"bad field name {key!r}")
        fields[key.decode()] = value.decode()
    return fields
