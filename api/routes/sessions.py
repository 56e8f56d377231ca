"""Agno's sessions API and ``GET /agents/{agent_id}/runs``, served from the sessions read
model (projections/sessions.py), with each run read from the log; what a client changes
about a session is recorded as the session's events (domain/sessions.py).

Reads wait (up to ``CATCH_UP_SECONDS``) until the read model has applied the log as it
was when the request came, so a session is listed as soon as its run has answered; a
write answers once its event is applied. A read model that is behind (being rebuilt, or
its projector away) answers what it has, with the header ``Signoff-Complete: false``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AfterValidator, Field

from api import sessions as wire
from api.auth import A, C, R, allow
from api.deps import Container, ContainerDep
from api.errors import ProblemError, problem_responses
from api.wire import MAX_DEPTH, Body, JSONBody, depth
from domain.run import Run
from projections import sessions as model
from projections.store import ViewMixin
from service.access import acting_as, actor
from service.auth import Identity
from service.sessions import record

router = APIRouter(tags=["Sessions"])

Json = dict[str, Any]
SessionType = Literal["agent", "team", "workflow"]
CATCH_UP_SECONDS = 2.0
# Times a run may be filtered by (epoch seconds): the years 1 to 9999.
EPOCH = Annotated[int | None, Query(ge=-62_135_596_800, le=253_402_300_798)]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]


def _database(db_id: Text = None, table: Text = None) -> None:
    """Agno's ``db_id`` and ``table``: signoff has one database (``/config`` names it)."""
    if table is not None and db_id is None:
        raise ProblemError(400, "The db_id query parameter is required when passing a table")
    if db_id is not None and db_id != wire.DB_ID:
        raise ProblemError(404, f"No database found with id '{db_id}'")
    if table is not None and table != wire.SESSIONS_TABLE:
        raise ProblemError(404, f"No database with id '{db_id}' has table '{table}'")


DB = [Depends(_database)]
_NOT_APPLIED = "the change is recorded; the sessions read model has not applied it yet"


def _view(c: Container, response: Response | None = None, position: int | None = None,
          ) -> ViewMixin:
    """The sessions view, once it has applied the log as it is now, or a write's
    ``position`` (a write whose event is not applied in time is 503)."""
    view = c.projections.views[model.SessionsProjection.name]
    target = c.store.head() if position is None else position
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while (behind := view.position() < target) and time.monotonic() < deadline:
        c.projections.prompt()
        time.sleep(0.005)
    if behind and position is not None:
        raise ProblemError(503, _NOT_APPLIED)
    if response is not None and (behind or view.rebuilding()):
        response.headers["Signoff-Complete"] = "false"
    return view


def _session(view: ViewMixin, caller: Identity, session_id: str, missing: str, *,
             user_id: str | None = None, session_type: str | None = "agent") -> Json:
    """The session, if the caller may see it (and it is ``user_id``'s); else 404
    ``missing``. signoff's sessions are all agent sessions."""
    filters = wire.scope(caller, user_id)
    with view.read() as cur:
        row = model.get_session(cur, session_id)
    if row is None or not wire.sees(filters, row) or session_type not in (None, "agent"):
        raise ProblemError(404, missing)
    return row


def _run_ids(view: ViewMixin, caller: Identity, session_id: str, **filters: Any,
             ) -> list[str]:
    """The session's runs the caller may see (and ``filters`` keep), in start order."""
    scope = wire.scope(caller)
    with view.read() as cur:
        rows = model.session_runs(cur, session_id, user_id=scope["user_id"],
                                  agents=scope.get("agents"), **filters)
    return [row["run_id"] for row in rows]


def _runs(c: Container, view: ViewMixin, caller: Identity, session_id: str,
          **filters: Any) -> list[Run]:
    """Those runs, read from the log."""
    return [c.store.get_run(i) for i in _run_ids(view, caller, session_id, **filters)]


def _detail(c: Container, view: ViewMixin, caller: Identity, row: Json, *,
            nulls: bool) -> Json:
    runs = _runs(c, view, caller, row["session_id"])
    agent = None
    if runs and row["agent_id"] in c.agent_loop.agents:
        agent = wire.agent_data(c.agent_loop.agents[row["agent_id"]], c.agent_loop.default_model)
    return wire.session_detail(row, runs, agent, nulls=nulls)


def _page_meta(page: int, limit: int, total: int, started: float) -> Json:
    return {"page": page, "limit": limit, "total_pages": -(-total // limit),
            "total_count": total,
            "search_time_ms": round((time.perf_counter() - started) * 1000, 2)}


@router.get("/sessions", dependencies=DB, responses=problem_responses(400, 403, 404))
def get_sessions(
    c: ContainerDep, response: Response, caller: Annotated[Identity, allow(C, R, A)],
    session_type: Annotated[SessionType | None, Query(alias="type")] = None,
    component_id: Text = None, user_id: Text = None, session_name: Text = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 20,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    sort_by: Literal["created_at", "updated_at", "session_id", "session_name", "user_id",
                     "agent_id"] = "created_at",
    sort_order: Literal["asc", "desc"] = "desc",
) -> Json:
    """The sessions the caller may see, a page at a time (Agno's ``get_sessions``): a
    client its own, a reviewer limited to some agents theirs. ``session_name`` matches a
    part of the name, in any case; ``component_id`` is the agent. signoff has agent
    sessions only: ``type=team`` or ``workflow`` lists none."""
    started = time.perf_counter()
    rows: list[Json] = []
    total = 0
    if session_type in (None, "agent"):
        scope = wire.scope(caller, user_id)
        with _view(c, response).read() as cur:
            rows, total = model.list_sessions(
                cur, user_id=scope["user_id"], agents=scope.get("agents"),
                agent_id=component_id, name=session_name, sort_by=sort_by,
                descending=sort_order == "desc", limit=limit, page=page)
    return {"data": [wire.session_item(r) for r in rows],
            "meta": _page_meta(page, limit, total, started)}


def _not_too_deep(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and depth(value) > MAX_DEPTH:
        raise ValueError(f"nests values more than {MAX_DEPTH} levels deep")
    return value


JsonObject = Annotated[dict[str, Any] | None, AfterValidator(_not_too_deep)]


class NewSession(Body):
    """Agno's ``CreateSessionRequest``."""

    session_id: str | None = Field(None, min_length=1, max_length=200)
    session_name: str | None = Field(None, max_length=10_000)
    session_state: JsonObject = None
    metadata: JsonObject = None
    user_id: str | None = Field(None, max_length=200)
    agent_id: str | None = Field(None, max_length=200)
    team_id: str | None = Field(None, max_length=200)
    workflow_id: str | None = Field(None, max_length=200)


class SessionChange(Body):
    """Agno's ``UpdateSessionRequest``: the fields to change (the others stay)."""

    session_name: str | None = Field(None, max_length=10_000)
    session_state: JsonObject = None
    metadata: JsonObject = None
    summary: JsonObject = None


class Rename(Body):
    session_name: str = Field(max_length=10_000)


@router.post("/sessions", status_code=201, dependencies=DB,
             responses=problem_responses(400, 403, 404, 409, 422))
def create_session(
    body: NewSession, c: ContainerDep, caller: Annotated[Identity, allow(C)],
    session_type: Annotated[SessionType, Query(alias="type")] = "agent",
) -> JSONBody:
    """Create a session before any run (Agno's ``create_session``): 201 with the session.
    Its user is the caller (with authentication). An id that lists already is 409."""
    if session_type != "agent" or body.team_id is not None or body.workflow_id is not None:
        raise ProblemError(422, "signoff serves agent sessions only (no teams, no workflows)")
    if body.agent_id is not None:
        c.agent_loop.agent(body.agent_id)  # 404 for an agent signoff does not serve
    user_id = acting_as(caller, body.user_id)
    session_id = body.session_id or str(uuid4())
    with _view(c).read() as cur:
        existing = model.get_session(cur, session_id)
    if existing is not None:
        if wire.sees(wire.scope(caller), existing):
            raise ProblemError(409, f"Session with id '{session_id}' already exists. Use "
                               f"PATCH /sessions/{session_id} to update it.")
        raise ProblemError(409, wire.TAKEN)
    position = record(c.store, session_id, lambda s: s.define(
        user_id=user_id, agent_id=body.agent_id, session_name=body.session_name,
        session_state=body.session_state, metadata=body.metadata, by=actor(caller, user_id)))
    row = _session(_view(c, position=position), caller, session_id, _NOT_APPLIED)
    return JSONBody(wire.session_detail(row, [], None, nulls=False), status_code=201)


@router.get("/sessions/{session_id}", dependencies=DB, responses=problem_responses(400, 403, 404))
def get_session(session_id: str, c: ContainerDep, response: Response,
                caller: Annotated[Identity, allow(C, R, A)],
                session_type: Annotated[SessionType | None, Query(alias="type")] = None,
                user_id: Text = None) -> Json:
    """One session with its chat history (Agno's ``get_session``)."""
    missing = (f"Session with id '{session_id}' not found" if session_type is None else
               f"{session_type.title()} Session with id '{session_id}' not found")
    view = _view(c, response)
    row = _session(view, caller, session_id, missing, user_id=user_id,
                   session_type=session_type)
    return _detail(c, view, caller, row, nulls=False)


def _change(c: Container, caller: Identity, session_id: str, user_id: str | None,
            session_type: str | None, **fields: Any) -> Json:
    missing = f"Session with id '{session_id}' not found"
    view = _view(c)
    _session(view, caller, session_id, missing, user_id=user_id, session_type=session_type)
    if any(v is not None for v in fields.values()):
        position = record(c.store, session_id, lambda s: s.update(
            by=actor(caller, user_id), **fields))
        view = _view(c, position=position)
    row = _session(view, caller, session_id, missing)
    return _detail(c, view, caller, row, nulls=True)


@router.post("/sessions/{session_id}/rename", dependencies=DB,
             responses=problem_responses(400, 403, 404, 422))
def rename_session(session_id: str, body: Rename, c: ContainerDep,
                   caller: Annotated[Identity, allow(C)],
                   session_type: Annotated[SessionType | None, Query(alias="type")] = None,
                   user_id: Text = None) -> Json:
    """Rename the session (Agno's ``rename_session``): recorded as ``Session.Updated``."""
    return _change(c, caller, session_id, user_id, session_type,
                   session_name=body.session_name)


@router.patch("/sessions/{session_id}", dependencies=DB,
              responses=problem_responses(400, 403, 404, 422))
def update_session(session_id: str, body: SessionChange, c: ContainerDep,
                   caller: Annotated[Identity, allow(C)],
                   session_type: Annotated[SessionType | None, Query(alias="type")] = None,
                   user_id: Text = None) -> Json:
    """Change the session's name, state, metadata or summary (Agno's
    ``update_session``): the fields given; recorded as ``Session.Updated``."""
    return _change(c, caller, session_id, user_id, session_type,
                   session_name=body.session_name, session_state=body.session_state,
                   metadata=body.metadata, summary=body.summary)


def _delete(c: Container, caller: Identity, session_ids: list[str],
            user_id: str | None) -> None:
    """Record ``Session.Deleted`` for each of the sessions the caller may see (and that
    are ``user_id``'s); the others are left as they are, as if they did not exist."""
    filters = wire.scope(caller, user_id)
    with _view(c).read() as cur:
        rows = [model.get_session(cur, i) for i in dict.fromkeys(session_ids)]
    by = actor(caller, user_id)
    for row in rows:
        if row is not None and wire.sees(filters, row):
            record(c.store, row["session_id"], lambda s: s.delete(by=by))


@router.delete("/sessions/{session_id}", status_code=204, dependencies=DB,
               responses=problem_responses(400, 403, 404))
def delete_session(session_id: str, c: ContainerDep, caller: Annotated[Identity, allow(C)],
                   user_id: Text = None, delete_media: bool = False) -> Response:
    """Delete the session (Agno's ``delete_session``): 204, also for an id that does not
    list. Its runs stay in the log; the session no longer lists. ``delete_media``: signoff
    keeps no media."""
    _delete(c, caller, [session_id], user_id)
    return Response(status_code=204)


class Deletion(Body):
    """Agno's ``DeleteSessionRequest``."""

    session_ids: list[Annotated[str, Field(max_length=200)]] = Field(
        min_length=1, max_length=1000)
    session_types: list[SessionType] = Field(min_length=1, max_length=1000)


@router.delete("/sessions", status_code=204, dependencies=DB,
               responses=problem_responses(400, 403, 404, 422))
def delete_sessions(body: Deletion, c: ContainerDep, caller: Annotated[Identity, allow(C)],
                    user_id: Text = None, delete_media: bool = False) -> Response:
    """Delete several sessions (Agno's ``delete_sessions``): as ``DELETE
    /sessions/{session_id}`` for each agent session named."""
    if len(body.session_ids) != len(body.session_types):
        raise ProblemError(400, "Session IDs and session types must have the same length")
    _delete(c, caller, [i for i, t in zip(body.session_ids, body.session_types, strict=True)
                        if t == "agent"], user_id)
    return Response(status_code=204)


def _session_runs(c: Container, caller: Identity, session_id: str, session_type: str | None,
                  user_id: str | None, created_after: int | None, created_before: int | None,
                  status: list[str] | None, response: Response) -> list[Run]:
    statuses = wire.statuses(status)
    view = _view(c, response)
    _session(view, caller, session_id, f"Session with ID {session_id} not found",
             user_id=user_id, session_type=session_type)
    return _runs(c, view, caller, session_id, statuses=statuses,
                 created_after=wire.epoch(created_after),
                 created_before=wire.epoch(None if created_before is None
                                           else created_before + 1))


Status = Annotated[list[Annotated[str, Field(max_length=20)]] | None, Query(max_length=10)]


@router.get("/sessions/{session_id}/runs", dependencies=DB,
            responses=problem_responses(400, 403, 404))
def get_session_runs(session_id: str, c: ContainerDep, response: Response,
                     caller: Annotated[Identity, allow(C, R, A)],
                     session_type: Annotated[SessionType | None, Query(alias="type")] = None,
                     user_id: Text = None, created_after: EPOCH = None,
                     created_before: EPOCH = None, status: Status = None) -> list[Json]:
    """The session's runs as Agno's ``RunSchema`` (``get_session_runs``), in the order
    they started. ``created_after`` / ``created_before``: epoch seconds, inclusive;
    ``status``: repeatable, in any case."""
    runs = _session_runs(c, caller, session_id, session_type, user_id, created_after,
                         created_before, status, response)
    return [wire.run_schema(r, nulls=False) for r in runs]


@router.get("/sessions/{session_id}/run-previews", dependencies=DB,
            responses=problem_responses(400, 403, 404))
def get_session_run_previews(
    session_id: str, c: ContainerDep, response: Response,
    caller: Annotated[Identity, allow(C, R, A)],
    session_type: Annotated[SessionType | None, Query(alias="type")] = None,
    user_id: Text = None, created_after: EPOCH = None, created_before: EPOCH = None,
    status: Status = None,
) -> list[Json]:
    """The session's runs in short (Agno's ``get_session_run_previews``): ids, status,
    start, and input and content cut to 280 characters. Filters as ``/runs``."""
    runs = _session_runs(c, caller, session_id, session_type, user_id, created_after,
                         created_before, status, response)
    return [wire.run_preview(r) for r in runs]


@router.get("/sessions/{session_id}/runs/{run_id}", dependencies=DB,
            responses=problem_responses(400, 403, 404))
def get_session_run(session_id: str, run_id: str, c: ContainerDep, response: Response,
                    caller: Annotated[Identity, allow(C, R, A)],
                    session_type: Annotated[SessionType | None, Query(alias="type")] = None,
                    user_id: Text = None) -> Json:
    """One run of the session as Agno's ``RunSchema``, its null fields included."""
    view = _view(c, response)
    _session(view, caller, session_id, f"Session with ID {session_id} not found",
             user_id=user_id, session_type=session_type)
    run_ids = _run_ids(view, caller, session_id)
    if not run_ids:
        raise ProblemError(404, f"Session with ID {session_id} has no runs")
    if run_id not in run_ids:
        raise ProblemError(404, f"Run with ID {run_id} not found in session {session_id}")
    return wire.run_schema(c.store.get_run(run_id), nulls=True)


@router.get("/agents/{agent_id}/runs", tags=["Agno-compatible"],
            responses=problem_responses(403, 404, 422))
def list_agent_runs(agent_id: str, c: ContainerDep, response: Response,
                    caller: Annotated[Identity, allow(C, R, A)],
                    session_id: Annotated[str, Query(max_length=200)],
                    status: Annotated[str | None, Query(max_length=20)] = None) -> list[Json]:
    """The agent's runs in a session, as Agno's ``RunSchema`` with its null fields;
    ``status`` compared exactly, as Agno does (``PAUSED``, not ``paused``)."""
    c.agent_loop.agent(agent_id)  # 404 for an agent signoff does not serve
    view = _view(c, response)
    row = _session(view, caller, session_id, "Session not found")
    if row["agent_id"] != agent_id:
        raise ProblemError(404, "Session not found")
    runs = _runs(c, view, caller, session_id, agent_id=agent_id,
                 statuses=None if status is None else [status])
    return [wire.run_schema(r, nulls=True) for r in runs]
