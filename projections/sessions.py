"""Sessions (Agno's): the runs started with one ``session_id``, and what clients changed
about the session itself (domain/sessions.py).

Tables (plain SQL; see docs/projections.md):

- ``signoff_sessions``: one row per session that lists: its user and agent (of the run
  or the ``POST /sessions`` that opened it), the name a client gave (``session_name``;
  NULL: its first run's input, ``first_input``, names it), ``session_state``,
  ``metadata``, ``summary``, when it was created and last changed (a run started, paused,
  continued or ended, or a client's change).
- ``signoff_session_runs``: its runs: agent, user, status (as on the wire) and start.
- ``signoff_session_models``: the tokens its runs' model turns used, per model.

A ``Session.Deleted`` removes the session's rows: its runs stay in the log, and a run
started after the deletion with the same id opens a new session. Events are applied in
log order, so a rebuild gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import singledispatchmethod
from typing import Any

from domain.run import Run
from domain.sessions import Session
from domain.values import RunStatus
from projections.readmodel import Page, ReadModel
from projections.sql import Cursor, Dialect, Row

SESSIONS = "signoff_sessions"
_NAME = "COALESCE(s.session_name, s.first_input, '')"
# What a list may be sorted by (Agno sorts by a column of its sessions table).
SORTS = {"created_at": "s.created_at", "updated_at": "s.updated_at",
         "session_id": "s.session_id", "user_id": "COALESCE(s.user_id, '')",
         "agent_id": "COALESCE(s.agent_id, '')", "session_name": _NAME}
_COLUMNS = ("s.session_id, s.user_id, s.agent_id, s.session_name, s.first_input, "
            "s.session_state, s.metadata, s.summary, s.created_at, s.updated_at")
# The session a run belongs to (none once the session was deleted).
_OF_RUN = "(SELECT r.session_id FROM signoff_session_runs r WHERE r.run_id = %s)"
_STATUS = {Run.RunPaused: RunStatus.PAUSED, Run.RunContinued: RunStatus.RUNNING,
           Run.RunCompleted: RunStatus.COMPLETED, Run.RunFailed: RunStatus.ERROR,
           Run.RunCancelled: RunStatus.CANCELLED}


class SessionsProjection(ReadModel[Page]):
    name = "sessions"
    tables_in_order = ("signoff_session_models", "signoff_session_runs", SESSIONS)

    @classmethod
    def create_statements(cls, d: Dialect) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {SESSIONS} (
                session_id TEXT PRIMARY KEY,
                user_id TEXT,
                agent_id TEXT,
                session_name TEXT,
                first_input TEXT,
                session_state {d.json_type},
                metadata {d.json_type},
                summary {d.json_type},
                created_at {d.time_type} NOT NULL,
                updated_at {d.time_type} NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS signoff_sessions_created "
            f"ON {SESSIONS} (created_at, session_id)",
            f"CREATE INDEX IF NOT EXISTS signoff_sessions_user "
            f"ON {SESSIONS} (user_id, created_at, session_id)",
            f"CREATE INDEX IF NOT EXISTS signoff_sessions_agent "
            f"ON {SESSIONS} (agent_id, created_at, session_id)",
            f"""CREATE TABLE IF NOT EXISTS signoff_session_runs (
                run_id TEXT PRIMARY KEY,
                session_id TEXT NOT NULL,
                agent_id TEXT NOT NULL,
                user_id TEXT,
                status TEXT NOT NULL,
                created_at {d.time_type} NOT NULL){d.keyed}""",
            "CREATE INDEX IF NOT EXISTS signoff_session_runs_session "
            "ON signoff_session_runs (session_id, created_at, run_id)",
            f"""CREATE TABLE IF NOT EXISTS signoff_session_models (
                session_id TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                PRIMARY KEY (session_id, model, provider)){d.keyed}""",
        ]

    @singledispatchmethod
    def process_event(self, event: object, page: Page) -> None:
        """Events that change no session change nothing."""

    @process_event.register
    def run_started(self, e: Run.RunStarted, page: Page) -> None:
        # The first run opens the session (or names one created before any run).
        c, t = page.c, page.c.dialect.time(e.timestamp)
        c.together([
            (f"INSERT INTO {SESSIONS} (session_id, user_id, agent_id, session_name, "
             "first_input, session_state, metadata, summary, created_at, updated_at) "
             "VALUES (%s, %s, %s, NULL, %s, NULL, NULL, NULL, %s, %s) "
             "ON CONFLICT (session_id) DO UPDATE SET "
             f"user_id = COALESCE({SESSIONS}.user_id, excluded.user_id), "
             f"agent_id = COALESCE({SESSIONS}.agent_id, excluded.agent_id), "
             f"first_input = COALESCE({SESSIONS}.first_input, excluded.first_input), "
             "updated_at = excluded.updated_at",
             (e.session_id, e.user_id, e.agent_id, e.input, t, t)),
            ("INSERT INTO signoff_session_runs (run_id, session_id, agent_id, user_id, "
             "status, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
             (str(e.originator_id), e.session_id, e.agent_id, e.user_id,
              str(RunStatus.RUNNING), t))])

    @process_event.register
    def run_moved(self, e: Run.RunPaused | Run.RunContinued | Run.RunCompleted
                  | Run.RunFailed | Run.RunCancelled, page: Page) -> None:
        run_id = str(e.originator_id)
        page.c.together([
            (f"UPDATE {SESSIONS} SET updated_at = %s WHERE session_id = {_OF_RUN}",
             (page.c.dialect.time(e.timestamp), run_id)),
            ("UPDATE signoff_session_runs SET status = %s WHERE run_id = %s",
             (str(_STATUS[type(e)]), run_id))])

    @process_event.register
    def model_responded(self, e: Run.ModelResponded, page: Page) -> None:
        page.c.execute(
            "INSERT INTO signoff_session_models (session_id, model, provider, input_tokens, "
            "output_tokens) SELECT r.session_id, %s, %s, %s, %s "
            "FROM signoff_session_runs r WHERE r.run_id = %s "
            "ON CONFLICT (session_id, model, provider) DO UPDATE SET "
            "input_tokens = signoff_session_models.input_tokens + excluded.input_tokens, "
            "output_tokens = signoff_session_models.output_tokens + excluded.output_tokens",
            (e.model, e.provider, e.input_tokens, e.output_tokens, str(e.originator_id)))

    @process_event.register
    def defined(self, e: Session.Defined, page: Page) -> None:
        d = page.c.dialect
        t = d.time(e.timestamp)
        page.c.execute(
            f"INSERT INTO {SESSIONS} (session_id, user_id, agent_id, session_name, "
            "first_input, session_state, metadata, summary, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, NULL, %s, %s, NULL, %s, %s) "
            "ON CONFLICT (session_id) DO UPDATE SET "
            f"user_id = COALESCE({SESSIONS}.user_id, excluded.user_id), "
            f"agent_id = COALESCE({SESSIONS}.agent_id, excluded.agent_id), "
            "session_name = excluded.session_name, "
            "session_state = excluded.session_state, metadata = excluded.metadata, "
            "updated_at = excluded.updated_at",
            (e.session_id, e.user_id, e.agent_id, e.session_name, d.json(e.session_state),
             d.json(e.metadata), t, t))

    @process_event.register
    def updated(self, e: Session.Updated, page: Page) -> None:
        d = page.c.dialect
        page.c.execute(
            f"UPDATE {SESSIONS} SET session_name = COALESCE(%s, session_name), "
            "session_state = COALESCE(%s, session_state), "
            "metadata = COALESCE(%s, metadata), summary = COALESCE(%s, summary), "
            "updated_at = %s WHERE session_id = %s",
            (e.session_name, d.json(e.session_state), d.json(e.metadata), d.json(e.summary),
             d.time(e.timestamp), e.session_id))

    @process_event.register
    def deleted(self, e: Session.Deleted, page: Page) -> None:
        page.c.together([(f"DELETE FROM {table} WHERE session_id = %s", (e.session_id,))
                          for table in self.tables_in_order])


# ------------------------------------------------------------------ reading

def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _scope(*, user_id: str | None, agent_id: str | None, agents: Iterable[str] | None,
           alias: str) -> tuple[list[str], list[Any]]:
    """Conditions on a user, an agent, and a set of agents (None: any)."""
    where: list[str] = []
    params: list[Any] = []
    if user_id is not None:
        where.append(f"{alias}.user_id = %s")
        params.append(user_id)
    if agent_id is not None:
        where.append(f"{alias}.agent_id = %s")
        params.append(agent_id)
    if agents is not None:
        names = sorted(agents)
        where.append(f"{alias}.agent_id IN ({', '.join(['%s'] * len(names))})"
                     if names else "1 = 0")
        params += names
    return where, params


def list_sessions(c: Cursor, *, user_id: str | None = None, agent_id: str | None = None,
                  agents: Iterable[str] | None = None, name: str | None = None,
                  sort_by: str = "created_at", descending: bool = True, limit: int = 20,
                  page: int = 1) -> tuple[list[Row], int]:
    """One page of the sessions that match, and how many match in all. ``name``: a part
    of the session's name, in any case; ``agents``: only sessions of these agents."""
    where, params = _scope(user_id=user_id, agent_id=agent_id, agents=agents, alias="s")
    if name is not None:
        where.append(f"LOWER({_NAME}) LIKE %s ESCAPE '\\'")
        params.append(f"%{_escape_like(name.lower())}%")
    filters = " AND ".join(where) or "1 = 1"
    counted = c.execute(f"SELECT COUNT(*) AS n FROM {SESSIONS} s WHERE {filters}",
                        params).fetchone()
    # Text in the order of its characters' code points on both databases (PostgreSQL
    # would otherwise sort by its locale's rules).
    text = ' COLLATE "C"' if c.dialect.name == "postgres" else ""
    key = SORTS[sort_by] + ("" if sort_by.endswith("_at") else text)
    order = "DESC" if descending else "ASC"
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM {SESSIONS} s WHERE {filters} "
        f"ORDER BY {key} {order}, s.session_id{text} {order} LIMIT %s OFFSET %s",
        [*params, limit, (page - 1) * limit]).fetchall()
    return _with_models(c, rows), int(counted["n"]) if counted else 0


def get_session(c: Cursor, session_id: str) -> Row | None:
    """The session, or None when none lists with this id."""
    row = c.execute(f"SELECT {_COLUMNS} FROM {SESSIONS} s WHERE s.session_id = %s",
                    (session_id,)).fetchone()
    return _with_models(c, [row])[0] if row is not None else None


def session_runs(c: Cursor, session_id: str, *, user_id: str | None = None,
                 agent_id: str | None = None, agents: Iterable[str] | None = None,
                 statuses: Sequence[str] | None = None, created_after: datetime | None = None,
                 created_before: datetime | None = None) -> list[Row]:
    """The session's runs that match, in the order they started: ``run_id``,
    ``agent_id``, ``user_id``, ``status``, ``created_at``: those started at or after
    ``created_after`` and before ``created_before``."""
    d = c.dialect
    where, params = _scope(user_id=user_id, agent_id=agent_id, agents=agents, alias="r")
    where.insert(0, "r.session_id = %s")
    params.insert(0, session_id)
    if statuses is not None:
        where.append(f"r.status IN ({', '.join(['%s'] * len(statuses))})"
                     if statuses else "1 = 0")
        params += list(statuses)
    if created_after is not None:
        where.append("r.created_at >= %s")
        params.append(d.time(created_after))
    if created_before is not None:
        where.append("r.created_at < %s")
        params.append(d.time(created_before))
    rows = c.execute("SELECT r.run_id, r.agent_id, r.user_id, r.status, r.created_at "
                     f"FROM signoff_session_runs r WHERE {' AND '.join(where)} "
                     "ORDER BY r.created_at, r.run_id", params).fetchall()
    for row in rows:
        row["created_at"] = d.from_time(row["created_at"])
    return rows


def _with_models(c: Cursor, rows: list[Row]) -> list[Row]:
    """The rows as sessions: times and JSON decoded, the name each goes by (``name``),
    and ``models``: the tokens of each model its runs used."""
    d = c.dialect
    ids = [r["session_id"] for r in rows]
    models: dict[str, list[Row]] = {i: [] for i in ids}
    if ids:
        for m in c.execute("SELECT session_id, model, provider, input_tokens, output_tokens "
                           "FROM signoff_session_models WHERE session_id IN "
                           f"({', '.join(['%s'] * len(ids))}) "
                           "ORDER BY session_id, model, provider", ids).fetchall():
            models[m.pop("session_id")].append(m)
    return [{**r, "name": r["session_name"] if r["session_name"] is not None
             else r["first_input"] or "",
             "session_state": d.from_json(r["session_state"]),
             "metadata": d.from_json(r["metadata"]), "summary": d.from_json(r["summary"]),
             "created_at": d.from_time(r["created_at"]),
             "updated_at": d.from_time(r["updated_at"]), "models": models[r["session_id"]]}
            for r in rows]
