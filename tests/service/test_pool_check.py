"""A pooled PostgreSQL connection is pinged before use only when its socket says the
server closed it (service/runs.py ``_check_pooled_connections_cheaply``): no round trip
per checkout while all is well, and a connection the server has ended is replaced
before a request gets it."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from domain.run import Run
from service.config import Settings, eventsourcing_env
from service.runs import RunService, _check_pooled_connections_cheaply
from tests.support.postgres import PgServer

pytestmark = pytest.mark.postgres


def test_the_pool_is_the_version_the_check_was_written_for() -> None:
    """The cheap check replaces the ``check`` callback psycopg_pool keeps on the pool
    (``_check``, set from its ``check=`` parameter, which eventsourcing's datastore does
    not expose): written for psycopg_pool 3.2 and 3.3; another version is to be read
    again before this passes."""
    import psycopg_pool

    assert psycopg_pool.__version__.split(".")[:2] in (["3", "2"], ["3", "3"])


@pytest.fixture
def app(pg_database: PgServer) -> Iterator[RunService]:
    app = RunService(env=eventsourcing_env(Settings(database_url=pg_database.url,
                                                    postgres_pool_size=2)))
    try:
        yield app
    finally:
        app.close()


def test_pings_only_a_connection_the_server_closed(app: RunService,
                                                   pg_database: PgServer) -> None:
    pool: Any = app.factory.datastore.pool  # type: ignore[attr-defined]
    pings: list[object] = []
    ping = pool._check  # the cheap check, wrapping psycopg_pool's round trip

    def counted(conn: Any) -> None:
        pings.append(conn)
        psycopg.Connection.execute(conn, "")

    # Wrap the round trip itself, as the service does with psycopg_pool's.
    pool._check = counted
    _check_pooled_connections_cheaply(app)
    assert pool._check is not counted and ping is not None

    run = Run.start(agent_id="ops", agent_name="Ops", user_id="u", session_id="s",
                    input="hello")
    app.save(run)
    for _ in range(20):
        assert app.get_run(run.id).input == "hello"
    assert pings == []  # healthy: twenty checkouts, no ping

    idle = list(pool._pool)
    assert idle
    with psycopg.connect(pg_database.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + 5
    while not all(select.select([c.fileno()], [], [], 0)[0] for c in idle):
        assert time.monotonic() < deadline, "the server did not close the connections"
        time.sleep(0.01)

    before = pool.get_stats().get("connections_lost", 0)
    assert app.get_run(run.id).input == "hello"
    assert pings  # the closed connection was pinged, found broken, and replaced
    assert pool.get_stats().get("connections_lost", 0) > before
