"""Fixtures shared with other test packages."""

from tests.support.policy_files import unix_ids  # noqa: F401 (a fixture)
