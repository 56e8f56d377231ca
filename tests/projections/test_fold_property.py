"""Property: for random sequences of runs and decisions, each read model equals a fold
written independently over the same events (``tests/projections/fold.py``).

Each example drives a random scenario through the real ``AgentLoop`` (offline model)
into a fresh store, catching the projections up at random moments in between, then
catches them up in pages of 3 events (so pages end anywhere in a run's history) and
compares every read function's answer (the queue paged through, filtered; the running
runs, and ``stale`` at drawn times and limits; the decision trail paged through,
filtered; analytics per tool, agent, actor and day, with and without a time window)
with the fold over ``app.log()``; the counters behind the unfiltered totals with the
fold's numbers and with a recount of the rows; every page's ``total`` and
``total_exact``, with caps small enough for filtered totals to be capped.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.run import Run
from projections.runner import Projections
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.scenario import (
    Driver,
    FakeClock,
    assert_matches_fold,
    assert_read_models_match_fold,
    fake_time,
    new_loop,
    read_queue,
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


def test_a_late_outcome_of_a_call_in_doubt_settles_it(tmp_path: Path) -> None:
    """A path the loop does not take (its late save loses to the one that marked the call
    in doubt) but the domain allows: the outcome of a call in doubt is recorded after all.
    The run no longer waits for it, so neither does the queue, and a cancel does not
    record it as cancelled."""
    env = eventsourcing_env(Settings(database_url=f"sqlite:///{tmp_path / 'late.db'}"))
    app = RunService(env=env)
    run = Run.start(agent_id="ops", agent_name="Ops", user_id="u1", session_id="s1",
                    input="call slow_delete")
    run.record_model_response(model="offline", provider="signoff", content=None,
                              tool_calls=[{"id": "c1", "name": "sync", "args": {}},
                                          {"id": "c2", "name": "sync", "args": {}}])
    for call_id in ("c1", "c2"):
        run.request_tool_call(tool_call_id=call_id, tool_name="sync", tool_args={})
        run.start_tool(call_id, deadline=datetime(2030, 1, 1, tzinfo=UTC))
        run.mark_in_doubt(call_id)
    run.pause()
    app.save(run)
    run.record_tool_result("c1", "done, late")
    app.save(run)
    assert [c.tool_call_id for c in app.get_run(run.id).pending_calls()] == ["c2"]
    p = Projections(app, env, batch_size=BATCH)
    try:
        p.catch_up_all()
        [item] = read_queue(p, limit=10)
        assert [c["tool_call_id"] for c in item["waiting_for"]] == ["c2"]
        assert_matches_fold(p, app)
        run.cancel(cancelled_by="alice", reason="enough")
        app.save(run)
        p.catch_up_all()
        assert read_queue(p, limit=10) == []
        assert_matches_fold(p, app)  # one cancelled row: c2's
        with p.views["audit"].read() as c:
            assert [r["tool_call_id"] for r in c.execute(
                "SELECT tool_call_id FROM signoff_decisions").fetchall()] == ["c2"]
    finally:
        p.close()
        app.close()
