"""The decision audit trail, and the analytics computed over it.

Tables (plain SQL; see docs/projections.md):

- ``signoff_audit_runs``: one row per run (agent, user, session), to name them.
- ``signoff_audit_calls``: one row per tool call; ``kind`` is what it needed
  (``confirmation``, ``external_execution``, ``user_input``, ``in_doubt``, ``policy``
  (a policy let it run without a person), or ``none``).
- ``signoff_decisions``: one row per decision: who decided what, when, why, on which
  arguments, how long after it was asked, and the decision event's position in the log.
- ``signoff_decision_events``: for each decision row (keyed like it), the version and
  hash (``chain.link_of``) of the event it came from, so that ``signoff audit verify``
  can prove the row against the log (``projections/auditproof.py``). A table of its
  own: a store projected before it existed gets it as it opens, and its rows by a
  rebuild (``signoff project rebuild audit``).
- ``signoff_audit_counts``: exact counters, moved in the same transaction as the rows:
  ``decisions`` is how many rows ``signoff_decisions`` has (the unfiltered ``total``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import singledispatchmethod
from typing import Any

from domain import chain
from domain.decisions import DecisionEvent
from domain.run import Run
from domain.values import TimeoutAction
from projections.readmodel import Page, ReadModel
from projections.sql import (
    TOTAL_CAP,  # a filtered total counts up to this many matches
    Cursor,
    Dialect,
    Total,
    capped_count,
)

COUNTS_TABLE = "signoff_audit_counts"
COLUMNS = ("position", "run_id", "tool_call_id", "agent_id", "user_id", "session_id",
           "tool_name", "args_requested", "args_approved", "decision", "actor", "note",
           "details", "requested_at", "decided_at", "time_to_decision_ms")


class AuditProjection(ReadModel[Page]):
    name = "audit"
    tables_in_order = ("signoff_decision_events", "signoff_decisions", "signoff_audit_calls",
                       "signoff_audit_runs", COUNTS_TABLE)
    counts_table = COUNTS_TABLE
    counts = {"decisions": "SELECT COUNT(*) AS n FROM signoff_decisions"}

    @classmethod
    def create_statements(cls, d: Dialect) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS signoff_audit_runs (
                run_id TEXT PRIMARY KEY,
                agent_id TEXT NOT NULL,
                user_id TEXT,
                session_id TEXT NOT NULL){d.keyed}""",
            f"""CREATE TABLE IF NOT EXISTS signoff_audit_calls (
                run_id TEXT NOT NULL,
                tool_call_id TEXT NOT NULL,
                agent_id TEXT NOT NULL,
                tool_name TEXT NOT NULL,
                tool_args {d.json_type} NOT NULL,
                kind TEXT NOT NULL,
                requested_at {d.time_type} NOT NULL,
                requested_day TEXT NOT NULL,
                decided BOOLEAN NOT NULL,
                PRIMARY KEY (run_id, tool_call_id))""",
            "CREATE INDEX IF NOT EXISTS signoff_audit_calls_requested "
            "ON signoff_audit_calls (requested_at)",
            f"""CREATE TABLE IF NOT EXISTS signoff_decisions (
                position BIGINT NOT NULL,
                run_id TEXT NOT NULL,
                tool_call_id TEXT NOT NULL,
                agent_id TEXT NOT NULL,
                user_id TEXT,
                session_id TEXT NOT NULL,
                tool_name TEXT NOT NULL,
                args_requested {d.json_type} NOT NULL,
                args_approved {d.json_type},
                decision TEXT NOT NULL,
                actor TEXT NOT NULL,
                note TEXT,
                details {d.json_type},
                requested_at {d.time_type} NOT NULL,
                decided_at {d.time_type} NOT NULL,
                decided_day TEXT NOT NULL,
                time_to_decision_ms DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (position, tool_call_id))""",
            "CREATE INDEX IF NOT EXISTS signoff_decisions_run "
            "ON signoff_decisions (run_id, position)",
            "CREATE INDEX IF NOT EXISTS signoff_decisions_actor "
            "ON signoff_decisions (actor, position)",
            "CREATE INDEX IF NOT EXISTS signoff_decisions_tool "
            "ON signoff_decisions (tool_name, position)",
            "CREATE INDEX IF NOT EXISTS signoff_decisions_decided "
            "ON signoff_decisions (decided_at)",
            # by=requested analytics; IF NOT EXISTS: older stores get it when next opened
            "CREATE INDEX IF NOT EXISTS signoff_decisions_requested "
            "ON signoff_decisions (requested_at)",
            f"""CREATE TABLE IF NOT EXISTS signoff_decision_events (
                position BIGINT NOT NULL,
                tool_call_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (position, tool_call_id)){d.keyed}""",
            f"""CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} (
                name TEXT PRIMARY KEY,
                n BIGINT NOT NULL)""",
        ]

    @singledispatchmethod
    def process_event(self, event: object, page: Page) -> None:
        """Events that decide nothing change nothing."""

    @process_event.register
    def run_started(self, e: Run.RunStarted, page: Page) -> None:
        page.c.execute("INSERT INTO signoff_audit_runs (run_id, agent_id, user_id, "
                       "session_id) VALUES (%s, %s, %s, %s)",
                       (str(e.originator_id), e.agent_id, e.user_id, e.session_id))

    @process_event.register
    def tool_call_requested(self, e: Run.ToolCallRequested, page: Page) -> None:
        # A call a policy let through is decided as it is requested, by the policy's
        # rule: the trail explains every call that ran without a person.
        d = page.c.dialect
        policy = e.policy  # None on events from before policies (the class default)
        allowed = policy is not None and policy.get("outcome") == "allowed"
        page.c.execute(
            "INSERT INTO signoff_audit_calls (run_id, tool_call_id, agent_id, tool_name, "
            "tool_args, kind, requested_at, requested_day, decided) "
            "SELECT run_id, %s, agent_id, %s, %s, %s, %s, %s, FALSE "
            "FROM signoff_audit_runs WHERE run_id = %s",
            (e.tool_call_id, e.tool_name, d.json(e.tool_args),
             "policy" if allowed else e.requires or "none",
             d.time(e.timestamp), _day(e.timestamp), str(e.originator_id)))
        if allowed:
            assert policy is not None
            _decide(page, e, [e.tool_call_id], "allowed", f"policy:{policy['rule']}",
                    policy.get("reason"), None, {"policy": policy})

    @process_event.register
    def tool_call_in_doubt(self, e: Run.ToolCallInDoubt, page: Page) -> None:
        d = page.c.dialect
        page.c.execute("UPDATE signoff_audit_calls SET kind = 'in_doubt', decided = FALSE, "
                       "requested_at = %s, requested_day = %s "
                       "WHERE run_id = %s AND tool_call_id = %s",
                       (d.time(e.timestamp), _day(e.timestamp), str(e.originator_id),
                        e.tool_call_id))

    @process_event.register
    def tool_outcome(self, e: Run.ToolExecuted | Run.ToolFailed, page: Page) -> None:
        # A late outcome of a call in doubt settles it: a cancel no longer decides it.
        page.c.execute("UPDATE signoff_audit_calls SET decided = TRUE "
                       "WHERE run_id = %s AND tool_call_id = %s AND kind = 'in_doubt' "
                       "AND NOT decided", (str(e.originator_id), e.tool_call_id))

    @process_event.register
    def decision_expired(self, e: Run.DecisionExpired, page: Page) -> None:
        # By the system, with the tool's action as the note. An escalated call is still
        # open: a person of the group decides it later (its own row), or a cancel does.
        escalated = e.action == TimeoutAction.ESCALATE
        details = {"action": e.action, "expired_at": e.expired_at.isoformat(),
                   "escalated_to": e.escalated_to,
                   "expires_at": e.expires_at.isoformat() if e.expires_at else None}
        _decide(page, e, [e.tool_call_id], "expired", e.decided_by,
                f"escalate to {e.escalated_to}" if escalated else e.action, None, details)
        if escalated:
            page.c.execute("UPDATE signoff_audit_calls SET decided = FALSE "
                           "WHERE run_id = %s AND tool_call_id = %s",
                           (str(e.originator_id), e.tool_call_id))

    @process_event.register
    def decided(self, e: DecisionEvent, page: Page) -> None:
        """A person's (or a client's) decision."""
        details: dict[str, Any] | None = None
        if isinstance(e, Run.ExternalResultProvided):
            details = {"result": e.result}
        elif isinstance(e, Run.UserInputProvided):
            details = {"values": e.values}
        # As given: an empty note is a note ("" or None would record "" as no note).
        note = e.note if isinstance(e, Run.ToolConfirmed) else getattr(e, "reason", None)
        _decide(page, e, [e.tool_call_id], str(e.decision_kind), e.decided_by, note,
                getattr(e, "approved_args", None), details)

    @process_event.register
    def run_cancelled(self, e: Run.RunCancelled, page: Page) -> None:
        open_calls = page.c.execute(
            "SELECT tool_call_id FROM signoff_audit_calls WHERE run_id = %s AND NOT decided "
            "AND kind <> 'none' ORDER BY requested_at, tool_call_id",
            (str(e.originator_id),)).fetchall()
        _decide(page, e, [r["tool_call_id"] for r in open_calls], "cancelled",
                e.cancelled_by, e.reason, None, None)


def _decide(page: Page, e: Any, call_ids: list[str], decision: str, actor: str,
            note: str | None, approved: Any, details: Any) -> None:
    c, run_id = page.c, str(e.originator_id)
    insert = _insert_decision_pg if c.dialect.name == "postgres" else _insert_decision
    for call_id in call_ids:
        insert(c, e, page.position, run_id, call_id, decision, actor, note, approved,
               details)
        c.execute("UPDATE signoff_audit_calls SET decided = TRUE "
                  "WHERE run_id = %s AND tool_call_id = %s", (run_id, call_id))


def _insert_decision(c: Cursor, e: Any, position: int, run_id: str, call_id: str,
                     decision: str, actor: str, note: str | None, approved: Any,
                     details: Any) -> None:
    """Read the call's request back, then write the decision's row."""
    d = c.dialect
    call = c.execute(
        "SELECT k.tool_name, k.tool_args, k.requested_at, r.agent_id, r.user_id, "
        "r.session_id FROM signoff_audit_calls k JOIN signoff_audit_runs r "
        "ON r.run_id = k.run_id WHERE k.run_id = %s AND k.tool_call_id = %s",
        (run_id, call_id)).fetchone()
    if call is None:  # pragma: no cover - a decision always follows its request
        return
    requested_at = d.from_time(call["requested_at"])
    assert requested_at is not None
    requested = d.from_json(call["tool_args"])
    if decision == "user_input":  # the tool runs with the requested args + the input
        approved = {**requested, **details["values"]}
    c.execute(
        "INSERT INTO signoff_decisions (position, run_id, tool_call_id, agent_id, user_id, "
        "session_id, tool_name, args_requested, args_approved, decision, actor, note, "
        "details, requested_at, decided_at, decided_day, time_to_decision_ms) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (position, run_id, call_id, call["agent_id"], call["user_id"], call["session_id"],
         call["tool_name"], d.json(requested), d.json(approved), decision, actor, note,
         d.json(details), d.time(requested_at), d.time(e.timestamp), _day(e.timestamp),
         (e.timestamp - requested_at) / timedelta(milliseconds=1)))
    c.execute("INSERT INTO signoff_decision_events (position, tool_call_id, version, hash) "
              "VALUES (%s, %s, %s, %s)", (position, call_id, e.originator_version,
                                          chain.link_of(e)))
    c.execute(f"UPDATE {COUNTS_TABLE} SET n = n + 1 WHERE name = 'decisions'")


def _insert_decision_pg(c: Cursor, e: Any, position: int, run_id: str, call_id: str,
                        decision: str, actor: str, note: str | None, approved: Any,
                        details: Any) -> None:
    """The same row in one statement that reads nothing back: a page's statements then
    go to PostgreSQL in one pipeline, with no round trip per decision. The interval is
    exact (microseconds), so its milliseconds equal Python's ``delta / 1 ms``. The same
    statement records the event the row came from and counts the row."""
    d = c.dialect
    merged = decision == "user_input"  # the tool runs with the requested args + the input
    c.execute(
        "WITH inserted AS ("
        "INSERT INTO signoff_decisions (position, run_id, tool_call_id, agent_id, user_id, "
        "session_id, tool_name, args_requested, args_approved, decision, actor, note, "
        "details, requested_at, decided_at, decided_day, time_to_decision_ms) "
        "SELECT %s, k.run_id, k.tool_call_id, r.agent_id, r.user_id, r.session_id, "
        "k.tool_name, k.tool_args, "
        + ("k.tool_args || %s::jsonb, " if merged else "%s::jsonb, ")
        + "%s, %s, %s, %s::jsonb, k.requested_at, %s, %s, "
        "(EXTRACT(EPOCH FROM (%s::timestamptz - k.requested_at)) * 1000)::float8 "
        "FROM signoff_audit_calls k JOIN signoff_audit_runs r ON r.run_id = k.run_id "
        "WHERE k.run_id = %s AND k.tool_call_id = %s RETURNING position, tool_call_id), "
        "sourced AS (INSERT INTO signoff_decision_events (position, tool_call_id, version, "
        "hash) SELECT position, tool_call_id, %s, %s FROM inserted) "
        f"UPDATE {COUNTS_TABLE} SET n = n + (SELECT COUNT(*) FROM inserted) "
        "WHERE name = 'decisions'",
        (position, d.json(details["values"] if merged else approved), decision, actor, note,
         d.json(details), d.time(e.timestamp), _day(e.timestamp), d.time(e.timestamp),
         run_id, call_id, e.originator_version, chain.link_of(e)))


def _day(ts: datetime) -> str:
    return ts.date().isoformat()


# ------------------------------------------------------------------ reading

def decision_filters(d: Dialect, run_id: str | None, actor: str | None, tool_name: str | None,
             decision: str | None, since: datetime | None, until: datetime | None,
             ) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("run_id", run_id), ("actor", actor), ("tool_name", tool_name),
                          ("decision", decision)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    time_range(d, "decided_at", since, until, where, params)
    return where, params


def time_range(d: Dialect, column: str, since: datetime | None, until: datetime | None,
                where: list[str], params: list[Any]) -> None:
    """``since`` inclusive, ``until`` exclusive."""
    if since is not None:
        where.append(f"{column} >= %s")
        params.append(d.time(since))
    if until is not None:
        where.append(f"{column} < %s")
        params.append(d.time(until))


def _row(d: Dialect, row: dict[str, Any]) -> dict[str, Any]:
    for key in ("args_requested", "args_approved", "details"):
        row[key] = d.from_json(row[key])
    for key in ("requested_at", "decided_at"):
        row[key] = d.from_time(row[key])
    row.pop("decided_day", None)
    return row


def cursor_decode(token: str | int) -> tuple[int, str | None]:
    """Where a page of decisions starts: after ``(position, tool_call_id)``, or after every
    decision at ``position`` when the cursor is a bare log position. ValueError when the
    token is not ours."""
    text = str(token)
    position, sep, call_id = text.partition(":")
    if not (position.isascii() and position.isdigit() and len(position) <= 18) or (
            sep and not call_id):
        raise ValueError("not an audit cursor")
    return int(position), call_id if sep else None


def list_decisions(
    c: Cursor, *, run_id: str | None = None, actor: str | None = None,
    tool_name: str | None = None, decision: str | None = None,
    since: datetime | None = None, until: datetime | None = None,
    after: str | int | None = None, limit: int = 100, total_cap: int = TOTAL_CAP,
    with_total: bool = True,
) -> dict[str, Any]:
    """Decisions in log order (a cancel decides several calls at one position: by call id
    there); pass ``next_cursor`` back as ``after`` for the next page. The cursor is the
    last row's log position, with its call id when the next row shares that position.

    ``total`` counts the decisions matching the filters (all pages). Unfiltered, it is
    the ``decisions`` counter: exact, however long the trail. Filtered, the matches are
    counted up to ``total_cap``: ``total_exact`` is false when there are more than
    ``total`` (then ``total`` is the cap). ``with_total=False``: not counted (None)."""
    d = c.dialect
    where, params = decision_filters(d, run_id, actor, tool_name, decision, since, until)
    matches = "SELECT 1 FROM signoff_decisions" + (
        f" WHERE {' AND '.join(where)}" if where else "")
    total = (Total.none() if not with_total
             else Total.capped(matches, params, total_cap) if where
             else Total.counter(COUNTS_TABLE, "decisions"))
    page_where, page_params = list(where), list(params)
    if after is not None:
        position, call_id = cursor_decode(after)
        if call_id is None:
            page_where.append("position > %s")
            page_params.append(position)
        else:
            # position >= p first: a range the primary key seeks to (see queue.py).
            page_where.append("position >= %s AND (position > %s OR tool_call_id > %s)")
            page_params += [position, position, call_id]
    # One statement: the total and the page (one row of NULLs after the total when the
    # page is empty).
    total_sql, total_params = total.select()
    rows = c.execute(
        f"WITH page AS (SELECT {', '.join(COLUMNS)} FROM signoff_decisions"
        + (f" WHERE {' AND '.join(page_where)}" if page_where else "")
        + " ORDER BY position, tool_call_id LIMIT %s) "
        f"SELECT t.total, {', '.join('p.' + k for k in COLUMNS)} "
        f"FROM ({total_sql}) AS t LEFT JOIN page p ON 1 = 1 "
        "ORDER BY p.position, p.tool_call_id",
        [*page_params, limit + 1, *total_params]).fetchall()
    counted: tuple[int | None, bool | None] = (None, None)
    if with_total:
        counted = (capped_count(c, matches, params, total_cap)  # pragma: no cover
                   if rows[0]["total"] is None else total.read(rows[0]["total"]))
    rows = [r for r in rows if r["position"] is not None]
    for r in rows:
        del r["total"]
    items = [_row(d, r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit and items:
        last = items[-1]
        next_cursor = (str(last["position"]) if rows[limit]["position"] != last["position"]
                       else f"{last['position']}:{last['tool_call_id']}")
    return {"items": items, "total": counted[0], "total_exact": counted[1],
            "next_cursor": next_cursor}


def iter_decisions(
    read: Any, *, page: int = 1000, **filters: Any,
) -> Iterator[dict[str, Any]]:
    """Every matching decision, in log order, a page per read transaction: memory stays
    flat however long the trail is. ``read`` opens a read cursor (``view.read``)."""
    after: str | None = None
    while True:
        with read() as c:
            result = list_decisions(c, after=after, limit=page, with_total=False, **filters)
        yield from result["items"]
        if result["next_cursor"] is None:
            return
        after = result["next_cursor"]


