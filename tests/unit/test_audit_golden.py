"""The audit's records, byte for byte, as fixed in tests/unit/data/audit_golden.txt."""

from __future__ import annotations

import ast

import pytest

from tests.unit.audit_golden import golden, records


@pytest.fixture(scope="module")
def stored():
    return golden()


def test_journal_datagrams_are_unchanged(stored):
    got = [ast.literal_eval(record) for record in records("journal")]
    want = [ast.literal_eval(record) for record in stored["journal"]]
    assert len(got) == len(want)
    for index, (record, expected) in enumerate(zip(got, want)):
        assert record == expected, f"record {index}"


@pytest.mark.parametrize("mode", ["file", "text"])
def test_stream_lines_are_unchanged(stored, mode):
    got = records(mode)
    assert len(got) == len(stored["line"])
    for index, (line, expected) in enumerate(zip(got, stored["line"])):
        assert line == expected, f"line {index}"


def test_the_inputs_cover_every_kind_of_record(stored):
    """The golden set is only a contract if it holds each kind (so it cannot pass vacuously)."""
    journal = b"".join(ast.literal_eval(record) for record in stored["journal"])
    for needle in (b"ZEUSD_DECISION=allow", b"ZEUSD_DECISION=deny", b"ZEUSD_COALESCED=true",
                   b"ZEUSD_OUTCOME=dropped: ", b"ZEUSD_OUTCOME=failed: ", b"ZEUSD_EVENT=read",
                   b"ZEUSD_CALLER_TOKEN_SUBJECT\n", b"MESSAGE\n", b"ZEUSD_CALLER_UNIT=",
                   b"ZEUSD_CALLER_ERROR=", b"ZEUSD_CALLER_TRANSPORT=tcp", b"OBJECT_PID="):
        assert needle in journal, needle
    lines = "\n".join(stored["line"])
    assert "count=3 coalesced=true" in lines  # 4 denials past the burst, 3 of one kind
    assert 'caller_token_subject="zoë \\"x\\"=\\ny\\u0001"' in lines
