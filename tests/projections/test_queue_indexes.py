"""The queue's indexes hold the paused runs only: a run's row gets entries in them when it
pauses, none as it starts or continues, and ``list_queue``'s pages are ranges of them
(not a scan of every run that has not ended), on SQLite and PostgreSQL. No index of the
calls names ``waiting``, so a decision is a HOT update on PostgreSQL. A store whose queue
was projected with the indexes of before gets these when it opens.
"""

from __future__ import annotations

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
CALLS = ("signoff_queue_calls_by_tool", "signoff_queue_calls_by_kind")
OLD_CALLS = {"signoff_queue_calls_tool": "(tool_name, run_id, kind) WHERE waiting",
             "signoff_queue_calls_kind": "(kind, run_id) WHERE waiting"}


def _indexes(c: Any, table: str = "signoff_queue_runs") -> dict[str, str]:
    """A table's indexes but the primary key's: name -> definition."""
    if c.dialect.name == "postgres":
        rows = c.execute("SELECT indexname AS name, indexdef AS sql FROM pg_indexes "
                         "WHERE tablename = %s AND indexname <> %s",
                         (table, f"{table}_pkey")).fetchall()
    else:
        rows = c.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index' "
                         "AND tbl_name = %s AND sql IS NOT NULL", (table,)).fetchall()
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


def test_no_index_of_the_calls_names_waiting(projections: Projections) -> None:
    """So the decision that clears ``waiting`` moves no index entry: on PostgreSQL a HOT
    update (counted in the transaction that makes it)."""
    view = projections.views[queue.QueueProjection.name]
    with view.read() as c:
        indexes = _indexes(c, "signoff_queue_calls")
    assert set(indexes) == set(CALLS), indexes
    assert not [sql for sql in indexes.values() if "waiting" in sql.lower()], indexes
    if view.dialect.name != "postgres":
        return
    with view.write_transaction() as c:
        c.execute("INSERT INTO signoff_queue_calls (run_id, tool_call_id, tool_name, "
                  "tool_args, kind, confirmation_message, requested_at, waiting) VALUES "
                  "('r', 'c', 't', '{}', 'confirmation', NULL, now(), TRUE)")
        c.execute("UPDATE signoff_queue_calls SET waiting = FALSE "
                  "WHERE run_id = 'r' AND tool_call_id = 'c'")
        [row] = c.execute("SELECT pg_stat_get_xact_tuples_hot_updated("
                          "'signoff_queue_calls'::regclass) AS hot").fetchall()
        assert row["hot"] == 1


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


def test_a_store_with_the_indexes_of_before_gets_these(
        app: RunService, env: dict[str, str]) -> None:
    copy_events(realistic_events(60)[:600], app)
    p = Projections(app, env)
    p.catch_up_all()
    before = dump(p)
    view = p.views[queue.QueueProjection.name]
    with view.write_transaction() as c:  # type: ignore[attr-defined]
        for name in ORDERS + CALLS:
            c.execute(f"DROP INDEX {name}")
        for name, columns in OLD.items():
            c.execute(f"CREATE INDEX {name} ON signoff_queue_runs {columns}")
        for name, columns in OLD_CALLS.items():
            c.execute(f"CREATE INDEX {name} ON signoff_queue_calls {columns}")
    p.close()
    p = Projections(app, env)
    try:
        with p.views[queue.QueueProjection.name].read() as c:
            indexes, calls = _indexes(c), _indexes(c, "signoff_queue_calls")
        assert set(ORDERS) <= set(indexes) and not set(OLD) & set(indexes)
        assert set(calls) == set(CALLS)
        assert_dumps_equal(before, dump(p))
        assert_matches_fold(p, app)
    finally:
        p.close()
