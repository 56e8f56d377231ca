"""The queue's indexes hold the paused runs only: a run's row gets entries in them when it
pauses, none as it starts or continues, and ``list_queue``'s pages are ranges of them
(not a scan of every run that has not ended), on SQLite and PostgreSQL. A store whose
queue was projected with indexes of every row gets the partial ones when it opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections import queue, queuepages
from projections.runner import Projections
from service.runs import RunService
from tests.projections.bulk import assert_dumps_equal, copy_events, dump, realistic_events
from tests.projections.scenario import assert_matches_fold
from tests.projections.test_running import _Recording

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
ORDERS = ("signoff_queue_runs_waiting", "signoff_queue_runs_agent_waiting",
          "signoff_queue_runs_user_waiting")
OLD = {"signoff_queue_runs_paused": "(paused_since, run_id)",
       "signoff_queue_runs_agent": "(agent_id, paused_since, run_id)",
       "signoff_queue_runs_user": "(user_id, paused_since, run_id)"}


@pytest.fixture
def projections(app: RunService, env: dict[str, str]) -> Iterator[Projections]:
    p = Projections(app, env)
    try:
        yield p
    finally:
        p.close()


def _indexes(c: Any) -> dict[str, str]:
    """The queue runs' indexes but the primary key's: name -> definition."""
    if c.dialect.name == "postgres":
        rows = c.execute("SELECT indexname AS name, indexdef AS sql FROM pg_indexes "
                         "WHERE tablename = 'signoff_queue_runs' "
                         "AND indexname <> 'signoff_queue_runs_pkey'").fetchall()
    else:
        rows = c.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index' "
                         "AND tbl_name = 'signoff_queue_runs' AND sql IS NOT NULL").fetchall()
    return {r["name"]: r["sql"] for r in rows}


def _plan(c: Any, statement: str, params: Any) -> str:
    if c.dialect.name == "postgres":
        return "\n".join(str(next(iter(r.values()))) for r in c.execute(
            "EXPLAIN " + statement, params).fetchall())
    return "\n".join(r["detail"] for r in c.execute(
        "EXPLAIN QUERY PLAN " + statement, params).fetchall())


def test_every_order_of_the_queue_is_of_paused_runs_only(projections: Projections) -> None:
    view = projections.views[queue.QueueProjection.name]
    with view.read() as c:
        indexes = _indexes(c)
    assert set(ORDERS) <= set(indexes)
    assert not set(OLD) & set(indexes)
    for name, sql in indexes.items():
        assert "paused_since IS NOT NULL" in sql.replace("(", "").replace(")", ""), name


@pytest.mark.parametrize("filters", [{}, {"agent_id": "agent-3"}, {"user_id": "user-5"}])
def test_a_page_of_the_queue_is_a_range_of_an_order(projections: Projections,
                                                    filters: dict[str, str]) -> None:
    """10,000 runs that have not ended, one in four paused: the page after a cursor reads
    an order's range, never the table (then only its few rows are sorted, with their
    calls)."""
    view = projections.views[queue.QueueProjection.name]
    with view.write_transaction() as c:
        d = c.dialect
        c.executemany(
            "INSERT INTO signoff_queue_runs (run_id, agent_id, user_id, session_id, "
            "started_at, paused_since, position) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(f"run-{i:05}", f"agent-{i % 7}", f"user-{i % 11}", f"s-{i}",
              d.time(T0), d.time(T0 + timedelta(seconds=i)) if i % 4 == 0 else None, i)
             for i in range(10_000)])
        c.execute("ANALYZE signoff_queue_runs")
    with view.read() as c:
        first = queuepages.list_queue(c, limit=5, **filters)
        assert first["next_cursor"]
        recording = _Recording(c)
        following = queuepages.list_queue(recording, limit=5, after=first["next_cursor"],  # type: ignore[arg-type]
                                     **filters)
        assert following["items"] and all(r["paused_since"] for r in following["items"])
        plans = [_plan(c, statement, params) for statement, params in recording.statements]
    plan = "\n".join(plans)
    assert any(name in plan for name in ORDERS), plan
    assert "Seq Scan on signoff_queue_runs" not in plan, plan  # PostgreSQL
    assert not [line for line in plan.splitlines() if line.startswith("SCAN r")], plan  # SQLite


def test_a_store_with_indexes_of_every_row_gets_the_partial_ones(
        app: RunService, env: dict[str, str]) -> None:
    copy_events(realistic_events(60)[:600], app)
    p = Projections(app, env)
    p.catch_up_all()
    before = dump(p)
    view = p.views[queue.QueueProjection.name]
    with view.write_transaction() as c:  # type: ignore[attr-defined]
        for name in ORDERS:
            c.execute(f"DROP INDEX {name}")
        for name, columns in OLD.items():
            c.execute(f"CREATE INDEX {name} ON signoff_queue_runs {columns}")
    p.close()
    p = Projections(app, env)
    try:
        with p.views[queue.QueueProjection.name].read() as c:
            indexes = _indexes(c)
        assert set(ORDERS) <= set(indexes) and not set(OLD) & set(indexes)
        assert_dumps_equal(before, dump(p))
        assert_matches_fold(p, app)
    finally:
        p.close()
