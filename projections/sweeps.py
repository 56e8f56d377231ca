"""What the sweepers read from the queue's tables (``service/sweeper.py``): the runs with
a deadline passed (``due``) and the runs a crashed process may have left running
(``stale``). The tables are the queue read model's (``projections/queue.py``)."""

from __future__ import annotations

from datetime import datetime

from projections.sql import Cursor


def due(c: Cursor, now: datetime, limit: int = 100) -> list[str]:
    """Runs with a waiting call whose deadline is at or before ``now``, the earliest
    deadline first (for the expiry sweeper: ``agent/expiry.py``)."""
    rows = c.execute(
        "SELECT run_id, MIN(expires_at) AS first FROM signoff_queue_deadlines "
        "WHERE expires_at IS NOT NULL AND expires_at <= %s "
        "GROUP BY run_id ORDER BY first, run_id LIMIT %s",
        (c.dialect.time(now), limit)).fetchall()
    return [r["run_id"] for r in rows]


def stale(c: Cursor, now: datetime, idle_before: datetime, limit: int = 100) -> list[str]:
    """Running runs that may have been left by a crashed process: a tool running past
    its deadline (``deadline`` before ``now``), or, with no tool running, a step that
    began before ``idle_before`` (a model turn, or the step after a tool's outcome);
    the oldest first (by the deadline, else the step's start), then by run id; at most
    ``limit``. The read model may lag, and a run may be healthy after all (a long
    model turn): the sweeper checks each run it names against the run itself.

    A store whose queue was projected before ``signoff_queue_running`` existed has no
    row there for the runs that were running then: those are named by their start
    (``signoff_queue_runs`` rows not paused and not in the table).

    One statement: a range of each partial index (``signoff_queue_running_deadline``,
    ``signoff_queue_running_idle``) and of the runs not paused, at most ``limit`` rows
    from each, merged."""
    d = c.dialect
    rows = c.execute(
        "SELECT run_id, t FROM ("
        "SELECT run_id, deadline AS t FROM signoff_queue_running "
        "WHERE deadline IS NOT NULL AND deadline < %s ORDER BY deadline, run_id LIMIT %s"
        ") AS past_deadline UNION ALL SELECT run_id, t FROM ("
        "SELECT run_id, since AS t FROM signoff_queue_running "
        "WHERE deadline IS NULL AND since < %s ORDER BY since, run_id LIMIT %s"
        ") AS idle UNION ALL SELECT run_id, t FROM ("
        "SELECT r.run_id, r.started_at AS t FROM signoff_queue_runs r "
        "WHERE r.paused_since IS NULL AND r.started_at < %s AND NOT EXISTS "
        "(SELECT 1 FROM signoff_queue_running x WHERE x.run_id = r.run_id) "
        "ORDER BY r.started_at, r.run_id LIMIT %s"
        ") AS unknown ORDER BY t, run_id LIMIT %s",
        (d.time(now), limit, d.time(idle_before), limit, d.time(idle_before), limit,
         limit)).fetchall()
    return [r["run_id"] for r in rows]
