"""Fixtures of the projection tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from projections.runner import Projections
from service.config import Settings, eventsourcing_env
from service.runs import RunService


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """eventsourcing's settings for a fresh store: a SQLite file, or a new database on
    the throwaway PostgreSQL (a module may define its own ``env``)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'signoff.db'}"
    else:
        url = request.getfixturevalue("pg_database").url
    return eventsourcing_env(Settings(database_url=url, postgres_pool_size=2))


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[RunService]:
    """The store ``env`` points at, empty (a module may define its own ``app``)."""
    app = RunService(env=env)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def projections(app: RunService, env: dict[str, str]) -> Iterator[Projections]:
    """Every read model over ``app``'s store (a module may define its own)."""
    p = Projections(app, env)
    try:
        yield p
    finally:
        p.close()
