"""The paused-run queue: what waits for a decision, oldest first.

Tables (plain SQL; see docs/projections.md):

- ``signoff_queue_runs``: one row per run that has not ended (agent, user, session,
  ``paused_since`` when it is paused); a run leaves when it completes, fails or is
  cancelled.
- ``signoff_queue_calls``: the calls of those runs that need or needed a decision;
  ``waiting`` is true while the call waits for one.

- ``signoff_queue_deadlines``: the waiting calls that have a deadline (``expires_at``)
  and, once escalated, the group they wait for (``escalated_to``): what the expiry
  sweeper reads (``due``).

- ``signoff_queue_running``: the runs that are running (not paused, not ended): since when
  their current step (a model turn or a tool) runs, and the running tool's deadline: what
  the sweeper of runs a crashed process left running reads (``stale``).

- ``signoff_queue_counts``: exact counters, moved in the same transaction as the rows:
  ``paused`` is how many runs are paused (the unfiltered queue's ``total``).

The queue is the runs with ``paused_since`` set, each with its waiting calls; reviewers
page through it with ``projections/queuepages.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatchmethod
from typing import Any

from domain.decisions import DecisionEvent
from domain.run import Run
from domain.values import TimeoutAction
from projections.readmodel import Page, ReadModel
from projections.sql import Cursor, Dialect

COUNTS_TABLE = "signoff_queue_counts"
_RUN = "SELECT paused_since FROM signoff_queue_runs WHERE run_id = %s"
# What a page leaves in ``signoff_queue_running`` for a run, by kind: its row as it ends
# the page (a run that starts or continues: inserted, or replaced whatever the table
# held), its step's times if it has a row (a run the page did not start or continue: a
# paused or ended run has none), or no row (a run that paused or ended).
_RUNNING = {
    "put": ("INSERT INTO signoff_queue_running (run_id, since, deadline) VALUES (%s, %s, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET since = excluded.since, "
            "deadline = excluded.deadline"),
    "step": "UPDATE signoff_queue_running SET since = %s, deadline = %s WHERE run_id = %s",
    "gone": "DELETE FROM signoff_queue_running WHERE run_id = %s",
}


@dataclass
class _QueuePage(Page):
    """A page of the queue, and the rows it writes once, as it ends: the ``signoff_queue_runs``
    row of each run it started, as the page leaves it (with the ``paused`` counter's move
    for them), and what it leaves in ``signoff_queue_running`` for each run it changed
    (kind, since, deadline). So a save that starts a run and pauses it inserts its row
    paused, one that continues a run and starts its tool writes its running row once, and
    a run that starts and ends in one page (a rebuild's) writes neither."""

    started: dict[str, list[Any]] = field(default_factory=dict)  # run id: the row's values
    paused: int = 0
    running: dict[str, tuple[str, Any, Any]] = field(default_factory=dict)

    def moved(self, run_id: str, paused_since: Any) -> bool:
        """Whether the run is one this page started, its row then paused (``paused_since``
        stored) or running (None)."""
        row = self.started.get(run_id)
        if row is not None:
            self.paused += (paused_since is not None) - (row[5] is not None)
            row[5:] = [paused_since, self.position]
        return row is not None

    def ended(self, run_id: str) -> bool:
        """Whether the run is one this page started (its row then never written)."""
        row = self.started.pop(run_id, None)
        if row is not None:
            self.paused -= row[5] is not None
        return row is not None

    def run(self, run_id: str, at: datetime) -> None:
        """The run is running, its step (a model turn) begun ``at``."""
        self.running[run_id] = ("put", at, None)

    def step(self, run_id: str, at: datetime, deadline: datetime | None) -> None:
        """A running run's step begins (a tool, with its deadline, or the next turn)."""
        kind = self.running.get(run_id, ("step",))[0]
        if kind != "gone":
            self.running[run_id] = (kind, at, deadline)

    def gone(self, run_id: str) -> None:
        """The run paused or ended: no longer running."""
        self.running[run_id] = ("gone", None, None)


def _paused(delta: int, before: str) -> tuple[str, tuple[int]]:
    """Move the ``paused`` counter by ``delta`` when the run's row was ``before``."""
    return (f"UPDATE {COUNTS_TABLE} SET n = n + %s WHERE name = 'paused' AND EXISTS "
            f"(SELECT 1 FROM {{rows}} WHERE {before})", (delta,))


class QueueProjection(ReadModel[_QueuePage]):
    name = "queue"
    tables_in_order = ("signoff_queue_calls", "signoff_queue_runs", "signoff_queue_deadlines",
                       "signoff_queue_running", COUNTS_TABLE)
    counts_table = COUNTS_TABLE
    counts = {"paused": "SELECT COUNT(*) AS n FROM signoff_queue_runs "
                        "WHERE paused_since IS NOT NULL"}

    @classmethod
    def create_statements(cls, d: Dialect) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS signoff_queue_runs (
                run_id TEXT PRIMARY KEY,
                agent_id TEXT NOT NULL,
                user_id TEXT,
                session_id TEXT NOT NULL,
                started_at {d.time_type} NOT NULL,
                paused_since {d.time_type},
                position BIGINT NOT NULL)""",
            # The queue's orders hold the paused runs only: a run's row gets entries in
            # them when it pauses, none as it starts or continues (those changes touch
            # the primary key alone). Indexes of every row once had these names.
            "DROP INDEX IF EXISTS signoff_queue_runs_paused",
            "DROP INDEX IF EXISTS signoff_queue_runs_agent",
            "DROP INDEX IF EXISTS signoff_queue_runs_user",
            "CREATE INDEX IF NOT EXISTS signoff_queue_runs_waiting "
            "ON signoff_queue_runs (paused_since, run_id) WHERE paused_since IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS signoff_queue_runs_agent_waiting "
            "ON signoff_queue_runs (agent_id, paused_since, run_id) "
            "WHERE paused_since IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS signoff_queue_runs_user_waiting "
            "ON signoff_queue_runs (user_id, paused_since, run_id) "
            "WHERE paused_since IS NOT NULL",
            # In run id order, for counting filtered matches (a merge with the calls below).
            "CREATE INDEX IF NOT EXISTS signoff_queue_runs_paused_run "
            "ON signoff_queue_runs (run_id) WHERE paused_since IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS signoff_queue_runs_agent_run "
            "ON signoff_queue_runs (agent_id, run_id) WHERE paused_since IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS signoff_queue_runs_user_run "
            "ON signoff_queue_runs (user_id, run_id) WHERE paused_since IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS signoff_queue_calls (
                run_id TEXT NOT NULL,
                tool_call_id TEXT NOT NULL,
                tool_name TEXT NOT NULL,
                tool_args {d.json_type} NOT NULL,
                kind TEXT NOT NULL,
                confirmation_message TEXT,
                requested_at {d.time_type} NOT NULL,
                waiting BOOLEAN NOT NULL,
                PRIMARY KEY (run_id, tool_call_id))""",
            # (tool, run): a run's calls of a tool are found by both, in run id order for
            # one tool. No index names ``waiting`` (not even in a predicate), so that
            # the decision that clears it is a HOT update on PostgreSQL: no index entry,
            # and the old version pruned on its page. Indexes of the waiting calls only
            # once had these names.
            "DROP INDEX IF EXISTS signoff_queue_calls_waiting",
            "DROP INDEX IF EXISTS signoff_queue_calls_tool",
            "DROP INDEX IF EXISTS signoff_queue_calls_kind",
            "CREATE INDEX IF NOT EXISTS signoff_queue_calls_by_tool "
            "ON signoff_queue_calls (tool_name, run_id, kind)",
            "CREATE INDEX IF NOT EXISTS signoff_queue_calls_by_kind "
            "ON signoff_queue_calls (kind, run_id)",
            # A table of its own (not columns of signoff_queue_calls): a store projected
            # before deadlines existed gets it as it opens, and needs no migration.
            f"""CREATE TABLE IF NOT EXISTS signoff_queue_deadlines (
                run_id TEXT NOT NULL,
                tool_call_id TEXT NOT NULL,
                expires_at {d.time_type},
                escalated_to TEXT,
                PRIMARY KEY (run_id, tool_call_id))""",
            "CREATE INDEX IF NOT EXISTS signoff_queue_deadlines_due "
            "ON signoff_queue_deadlines (expires_at) WHERE expires_at IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS signoff_queue_deadlines_group "
            "ON signoff_queue_deadlines (escalated_to, run_id) WHERE escalated_to IS NOT NULL",
            # A table of its own too (a store projected before it gets it as it opens).
            # ``since``: when the current step began; ``deadline``: the running tool's.
            f"""CREATE TABLE IF NOT EXISTS signoff_queue_running (
                run_id TEXT PRIMARY KEY,
                since {d.time_type} NOT NULL,
                deadline {d.time_type})""",
            # ``stale``: one range of each, in the order it returns them.
            "CREATE INDEX IF NOT EXISTS signoff_queue_running_deadline "
            "ON signoff_queue_running (deadline, run_id) WHERE deadline IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS signoff_queue_running_idle "
            "ON signoff_queue_running (since, run_id) WHERE deadline IS NULL",
            f"""CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} (
                name TEXT PRIMARY KEY,
                n BIGINT NOT NULL)""",
        ]

    @singledispatchmethod
    def process_event(self, event: object, page: Page) -> None:
        """Events the queue does not show change nothing."""

    def begin(self, c: Cursor) -> _QueuePage:
        return _QueuePage(c)

    def end(self, page: _QueuePage) -> None:
        d = page.c.dialect
        page.c.executemany(
            "INSERT INTO signoff_queue_runs (run_id, agent_id, user_id, session_id, "
            "started_at, paused_since, position) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            list(page.started.values()))
        if page.paused:
            page.c.execute(f"UPDATE {COUNTS_TABLE} SET n = n + %s WHERE name = 'paused'",
                           (page.paused,))
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for run_id, (kind, at, deadline) in page.running.items():
            rows.setdefault(kind, []).append(
                (run_id, d.time(at), d.time(deadline)) if kind == "put" else
                (d.time(at), d.time(deadline), run_id) if kind == "step" else (run_id,))
        for kind, params in rows.items():
            page.c.executemany(_RUNNING[kind], params)

    @process_event.register
    def run_started(self, e: Run.RunStarted, page: _QueuePage) -> None:
        run_id = str(e.originator_id)
        page.started[run_id] = [run_id, e.agent_id, e.user_id, e.session_id,
                                page.c.dialect.time(e.timestamp), None, page.position]
        page.run(run_id, e.timestamp)

    @process_event.register
    def tool_call_requested(self, e: Run.ToolCallRequested, page: Page) -> None:
        # Every call is kept while its run lives: one that needed no decision can still
        # come back to the queue if it ends up in doubt after a crash.
        c, d, run_id = page.c, page.c.dialect, str(e.originator_id)
        c.execute("INSERT INTO signoff_queue_calls (run_id, tool_call_id, tool_name, tool_args, "
                  "kind, confirmation_message, requested_at, waiting) "
                  "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                  (run_id, e.tool_call_id, e.tool_name, d.json(e.tool_args),
                   e.requires or "none", e.confirmation_message, d.time(e.timestamp),
                   bool(e.requires)))
        if e.expires_at is not None:  # None on events from before deadlines
            c.execute("INSERT INTO signoff_queue_deadlines (run_id, tool_call_id, expires_at, "
                      "escalated_to) VALUES (%s, %s, %s, NULL)",
                      (run_id, e.tool_call_id, d.time(e.expires_at)))

    @process_event.register
    def run_paused(self, e: Run.RunPaused, page: _QueuePage) -> None:
        run_id, at = str(e.originator_id), page.c.dialect.time(e.timestamp)
        if not page.moved(run_id, at):
            page.c.counting(_paused(+1, "paused_since IS NULL"), (_RUN, (run_id,)), [
                ("UPDATE signoff_queue_runs SET paused_since = %s, position = %s "
                 "WHERE run_id = %s", (at, page.position, run_id))])
        page.gone(run_id)

    @process_event.register
    def decided(self, e: DecisionEvent, page: Page) -> None:
        key = (str(e.originator_id), e.tool_call_id)
        page.c.execute("UPDATE signoff_queue_calls SET waiting = FALSE "
                       "WHERE run_id = %s AND tool_call_id = %s", key)
        page.c.execute("DELETE FROM signoff_queue_deadlines "
                       "WHERE run_id = %s AND tool_call_id = %s", key)

    @process_event.register
    def decision_expired(self, e: Run.DecisionExpired, page: Page) -> None:
        if e.action != TimeoutAction.ESCALATE:
            self.decided(e, page)
            return
        # It waits on, for a group, until a new deadline.
        page.c.execute("UPDATE signoff_queue_deadlines SET expires_at = %s, escalated_to = %s "
                       "WHERE run_id = %s AND tool_call_id = %s",
                       (page.c.dialect.time(e.expires_at), e.escalated_to,
                        str(e.originator_id), e.tool_call_id))

    @process_event.register
    def tool_call_in_doubt(self, e: Run.ToolCallInDoubt, page: Page) -> None:
        # Back in the queue: a person decides what to do with a call that may have run.
        page.c.execute("UPDATE signoff_queue_calls SET waiting = TRUE, kind = 'in_doubt', "
                       "requested_at = %s WHERE run_id = %s AND tool_call_id = %s",
                       (page.c.dialect.time(e.timestamp), str(e.originator_id),
                        e.tool_call_id))

    @process_event.register
    def tool_execution_started(self, e: Run.ToolExecutionStarted, page: _QueuePage) -> None:
        # A tool's step begins (a tool starts only while its run runs).
        page.step(str(e.originator_id), e.timestamp, e.deadline)

    @process_event.register
    def tool_outcome(self, e: Run.ToolExecuted | Run.ToolFailed, page: _QueuePage) -> None:
        # An outcome settles a call: a late one, of a call in doubt, takes it out of the
        # queue (the run no longer waits for it). A running run's next step begins (a
        # paused or ended run has no row to change).
        run_id = str(e.originator_id)
        page.c.execute("UPDATE signoff_queue_calls SET waiting = FALSE "
                       "WHERE run_id = %s AND tool_call_id = %s AND waiting",
                       (run_id, e.tool_call_id))
        page.step(run_id, e.timestamp, None)

    @process_event.register
    def run_continued(self, e: Run.RunContinued, page: _QueuePage) -> None:
        # Its running row is the same whatever the table held for the run (applied again
        # in a replay, the event changes nothing more).
        run_id = str(e.originator_id)
        if not page.moved(run_id, None):
            page.c.counting(_paused(-1, "paused_since IS NOT NULL"), (_RUN, (run_id,)), [
                ("UPDATE signoff_queue_runs SET paused_since = NULL, position = %s "
                 "WHERE run_id = %s", (page.position, run_id))])
        page.run(run_id, e.timestamp)

    @process_event.register
    def run_ended(self, e: Run.RunCompleted | Run.RunFailed | Run.RunCancelled,
                  page: _QueuePage) -> None:
        run_id = str(e.originator_id)
        calls = [("DELETE FROM signoff_queue_calls WHERE run_id = %s", (run_id,)),
                 ("DELETE FROM signoff_queue_deadlines WHERE run_id = %s", (run_id,))]
        if page.ended(run_id):
            page.c.together(calls)
        else:
            page.c.counting(_paused(-1, "paused_since IS NOT NULL"), (_RUN, (run_id,)), [
                *calls, ("DELETE FROM signoff_queue_runs WHERE run_id = %s", (run_id,))])
        page.gone(run_id)
