"""Property: for random sequences of runs and decisions, each read model equals a fold
written independently over the same events (``tests/projections/fold.py``).

Each example drives a random scenario through the real ``AgentLoop`` (offline model)
into a fresh store, catching the projections up at random moments in between, then
catches them up in pages of 3 events (so pages end anywhere in a run's history) and
compares every read function's answer (the queue paged through, filtered; the decision
trail paged through, filtered; analytics per tool, agent, actor and day, with and without
a time window) with the fold over ``app.log()``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.runner import Projections
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.scenario import (
    Driver,
    FakeClock,
    assert_read_models_match_fold,
    fake_time,
    new_loop,
)
from tests.support.postgres import PgServer

BATCH = 3


def check_scenario(data: Any, env: dict[str, str]) -> None:
    clock = FakeClock()
    app = RunService(env=env)
    loop = new_loop(app, clock)
    projections = Projections(app, env, batch_size=BATCH)
    try:
        with fake_time(clock):
            driver = Driver(data, loop, clock, projections)
            driver.run()
        projections.catch_up_all()
        assert all(s.lag == 0 for s in projections.status())
        assert_read_models_match_fold(projections, app, data)
        # Caught up again: nothing more to apply, nothing applied twice.
        assert projections.catch_up_all() == 0
        assert_read_models_match_fold(projections, app, data)
    finally:
        loop.close()
        projections.close()
        app.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_read_models_equal_the_fold_sqlite(data: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="signoff-fold-") as tmp:
        env = eventsourcing_env(Settings(database_url=f"sqlite:///{Path(tmp) / 'fold.db'}"))
        check_scenario(data, env)


@pytest.mark.postgres
def test_read_models_equal_the_fold_postgres(pg_database: PgServer) -> None:
    env = eventsourcing_env(Settings(database_url=pg_database.url, postgres_pool_size=2))

    @settings(max_examples=6, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def examples(data: Any) -> None:
        with psycopg.connect(pg_database.url, autocommit=True) as conn:  # a clean database
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        check_scenario(data, env)

    examples()
