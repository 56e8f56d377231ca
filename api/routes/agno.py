"""Agno AgentOS-compatible routes: a client written for AgentOS's HITL endpoints works
unchanged (docs/migrating-from-agno.md)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from api.agno import (
    agent_info,
    parse_tools,
    run_output,
)
from api.agno_stream import LAST, Cursor, Message, Position, follow, resume_point
from api.auth import EVERY_ROLE, A, C, R, StillAllowed, allow
from api.deps import Container, ContainerDep
from api.errors import ProblemError, problem_responses
from api.sessions import refuse_anothers
from api.streams import LiveTurns, live_turns, watcher
from api.wire import Body, JSONBody, loads
from domain.run import Run
from service.auth import Identity
from service.lifecycle import Decided, Observer

router = APIRouter(tags=["Agno-compatible"])
log = logging.getLogger("signoff.streams")

_FORM = ("application/x-www-form-urlencoded", "multipart/form-data")


class StartRunForm(Body):
    """``POST /agents/{agent_id}/runs``: form fields (or the same keys as JSON)."""

    model_config = ConfigDict(extra="ignore")

    # Its longest is a setting (SIGNOFF_MAX_MESSAGE_CHARS): longer is 413, from the run.
    message: str = Field(min_length=1)
    stream: bool = True
    session_id: str | None = Field(None, max_length=200)
    user_id: str | None = Field(None, max_length=200)
    background: bool = False


class ContinueRunForm(Body):
    """``POST /agents/{agent_id}/runs/{run_id}/continue``: ``tools`` is a JSON string."""

    model_config = ConfigDict(extra="ignore")

    tools: str = Field(max_length=1_000_000)
    stream: bool = True
    session_id: str | None = Field(None, max_length=200)
    user_id: str | None = Field(None, max_length=200)


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": schema},
        "multipart/form-data": {"schema": schema},
        "application/json": {"schema": schema},
    }}}


async def _read(request: Request, model: type[BaseModel]) -> Any:
    """Read a form or JSON body into ``model`` (Agno clients send forms)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: Any
    try:
        if ctype in _FORM:
            form = await request.form()
            data = {k: v for k, v in form.items() if isinstance(v, str)}
            if any(not isinstance(v, str) for v in form.values()):
                raise ProblemError(422, "file uploads are not supported")
        elif ctype == "application/json":
            data = loads(await request.body())
        else:
            raise ProblemError(415, "send a form (urlencoded or multipart) or JSON")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProblemError(400, "the body could not be parsed") from None
    if not isinstance(data, dict):
        raise ProblemError(422, "the body must be an object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
                  for err in e.errors()]
        raise ProblemError(422, "the request is not valid", errors=errors) from None


def _stream(request: Request, c: Container, run_id: str, after: Position,
            drive: Callable[[LiveTurns], Run] | None = None) -> EventSourceResponse:
    """The run as Agno stream events after ``after`` (api/agno_stream.py), each sent as
    soon as it is committed; with ``drive``, while it drives the run in a thread (which
    goes on if the client goes away), telling ``LiveTurns`` of what it does. The stream
    ends, the drive going on, once the caller is no longer let in (``StillAllowed``)."""
    turns = live_turns(request.app)
    watch = watcher(request.app, c.store)
    model = _model(c, request.path_params["agent_id"])
    store = c.store.repository.event_store
    allowed = StillAllowed(request)
    future: asyncio.Future[Run] | None = None
    if drive is not None:
        future = asyncio.get_running_loop().run_in_executor(
            None, contextvars.copy_context().run, drive, turns)

        def over(f: asyncio.Future[Run]) -> None:
            turns.ended(run_id)
            if not f.cancelled() and (err := f.exception()) is not None:
                log.error("driving run %s failed", run_id, exc_info=err)

        future.add_done_callback(over)

    def load() -> Run | None:
        upto = after.version if after.part == LAST else after.version - 1  # V: part sent
        return c.store.get_run(run_id, version=upto) if upto > 0 else None

    def read(version: int) -> list[Any]:
        return list(store.get(UUID(run_id), gt=version))

    async def messages() -> AsyncIterator[Message]:
        with turns.follow(run_id) as follower:
            cursor = Cursor(run_id, await run_in_threadpool(load), after, model)
            async for m in follow(cursor, read, watch, follower, future, allowed):
                yield m

    return EventSourceResponse(messages(), sep="\n", ping=15)


def _drive(c: Container, run: Run, turns: LiveTurns) -> Run:
    """Drive the run on, telling ``turns`` of each commit and of each model turn."""
    return c.runs.drive(run, lambda *_: turns.committed(run.run_id), turns.live(run.run_id))


def _model(c: Container, agent_id: str) -> dict[str, str] | None:
    """The agent's model, as ``RunStarted`` names it (none for an agent not served)."""
    if not c.agent_loop.serves(agent_id):
        return None
    model = c.agent_loop.model_for(c.agent_loop.agent(agent_id))
    return {"model": model.name, "model_provider": model.provider}


_LAST_EVENT_ID = Header(alias="Last-Event-ID", max_length=100, description=(
    "resume a stream this route sent after this id (api.md, \"Streams\")"))


@router.get("/agents", dependencies=[allow(*EVERY_ROLE)])
def list_agents(c: ContainerDep) -> list[dict[str, Any]]:
    """The agents this service runs."""
    return [agent_info(a, c.agent_loop.default_model) for a in c.agent_loop.agents.values()]


@router.get("/agents/{agent_id}", responses=problem_responses(404),
            dependencies=[allow(*EVERY_ROLE)])
def get_agent(agent_id: str, c: ContainerDep) -> dict[str, Any]:
    """One agent: its model and tools (with their confirmation settings)."""
    return agent_info(c.agent_loop.agent(agent_id), c.agent_loop.default_model)


@router.post("/agents/{agent_id}/runs", openapi_extra=_body_doc(StartRunForm),
             responses={200: {"content": {"text/event-stream": {}}},
                        **problem_responses(400, 403, 404, 413, 415, 422)})
async def create_agent_run(
    agent_id: str, request: Request, c: ContainerDep, caller: Annotated[Identity, allow(C)],
    last_event_id: Annotated[str | None, _LAST_EVENT_ID] = None,
) -> Any:
    """Start a run. ``stream`` defaults to true (server-sent events), as in Agno.

    With authentication, the run's user is the caller (a ``user_id`` naming anyone else
    is refused). A streamed request with ``Last-Event-ID`` starts nothing: it resumes
    the stream of the run that id names."""
    form: StartRunForm = await _read(request, StartRunForm)
    if form.background:
        raise ProblemError(422, "background runs are not supported; use stream=false")
    if form.stream and (resume := resume_point(last_event_id)) is not None:
        run_id, after = resume
        await run_in_threadpool(c.runs.get, caller, run_id, agent_id=agent_id)  # may see it
        return _stream(request, c, run_id, after)
    run = c.runs.open_run(caller, agent_id, form.message, user_id=form.user_id,
                          session_id=form.session_id)  # refused before a stream's 200
    if form.session_id is not None and not caller.open:  # not into another user's session
        await run_in_threadpool(refuse_anothers, c.projections.views, caller,
                                form.session_id)
    if form.stream:
        return _stream(request, c, run.run_id, Position(0), functools.partial(_drive, c, run))
    return JSONBody(run_output(await run_in_threadpool(c.runs.drive, run)))


@router.post("/agents/{agent_id}/runs/{run_id}/continue",
             openapi_extra=_body_doc(ContinueRunForm),
             responses={200: {"content": {"text/event-stream": {}}},
                        **problem_responses(400, 403, 404, 409, 413, 415, 422)})
async def continue_agent_run(
    agent_id: str,
    run_id: str,
    request: Request,
    c: ContainerDep,
    caller: Annotated[Identity, allow(C, R)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    last_event_id: Annotated[str | None, _LAST_EVENT_ID] = None,
) -> Any:
    """Continue a paused run with the decisions filled into its ``tools``.

    Decisions may come one at a time; the run continues when none is left pending.
    A decision on a call that is no longer pending gets 409 with the decision that
    stands. A request sent again with its ``Idempotency-Key`` gets the run as the first
    one left it; the same key with another request, or from another caller, gets 422.
    A streamed request with ``Last-Event-ID`` decides nothing: it resumes the stream.
    """
    form: ContinueRunForm = await _read(request, ContinueRunForm)
    replies = parse_tools(form.tools)
    if form.stream and (resume := resume_point(last_event_id)) is not None:
        resumed, after = resume
        run = await run_in_threadpool(c.runs.get, caller, run_id, agent_id=agent_id)
        if resumed != run.run_id:
            raise ProblemError(422, "Last-Event-ID names another run's stream")
        return _stream(request, c, run.run_id, after)

    def decide(observer: Observer | None, drive: bool) -> Decided:
        return c.runs.decide(caller, run_id, replies, agent_id=agent_id, named=form.user_id,
                             key=idempotency_key, drive=drive, observer=observer)

    if not form.stream:
        decided = await run_in_threadpool(decide, None, True)
        return JSONBody(run_output(decided.run))
    saved: list[int] = []  # the version of the first event the decisions committed
    decided = await run_in_threadpool(
        decide, lambda _, events: saved.append(events[0].originator_version), False)
    run = decided.run
    if decided.replayed_from is not None:  # stream again what the first request caused
        return _stream(request, c, run.run_id, Position(decided.replayed_from - 1))
    after = Position(saved[0] - 1 if saved else run.version)
    return _stream(request, c, run.run_id, after, functools.partial(_drive, c, run))


@router.get("/agents/{agent_id}/runs/{run_id}", responses=problem_responses(404))
def get_agent_run(agent_id: str, run_id: str, c: ContainerDep,
                  caller: Annotated[Identity, allow(C, R, A)]) -> dict[str, Any]:
    """The run as Agno's ``RunOutput``."""
    return run_output(c.runs.get(caller, run_id, agent_id=agent_id))


@router.post("/agents/{agent_id}/runs/{run_id}/cancel",
             responses=problem_responses(403, 404, 409))
def cancel_agent_run(agent_id: str, run_id: str, c: ContainerDep,
                     caller: Annotated[Identity, allow(C, R)]) -> dict[str, Any]:
    """Cancel a run that has not ended (see ``POST /runs/{run_id}/cancel``)."""
    return run_output(c.runs.cancel(caller, run_id, agent_id=agent_id))
