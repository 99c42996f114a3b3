"""Scripted attacks on the real daemon by real unprivileged users (tests/support/hostile.py)."""

from __future__ import annotations

import pytest

from tests.daemon.conftest import module_tmp, start_zeusd  # noqa: F401 - shared fixtures
from tests.support.users import Accounts


@pytest.fixture(scope="module")
def accounts():
    with Accounts() as made:
        yield made
