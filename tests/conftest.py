"""Shared pytest configuration for the signoff test suite.

Fixtures from tests/support/postgres.py (``pg_server``, ``pg_database``) and
tests/support/fake_openai.py (``fake_openai``) are registered here so that any
test under tests/ can use them.
"""

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.fake_openai",
    "tests.support.server",
]
