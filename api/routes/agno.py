"""Agno AgentOS-compatible routes: a client written for AgentOS's HITL endpoints works
unchanged (docs/migrating-from-agno.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from api.agno import (
    agent_info,
    parse_tools,
    run_output,
    stream_events,
)
from api.auth import EVERY_ROLE, A, C, R, allow
from api.deps import ContainerDep
from api.errors import ProblemError, problem_responses
from api.wire import Body, JSONBody, dumps, loads
from domain.run import Run
from service.auth import Identity
from service.lifecycle import Decided, Observer

router = APIRouter(tags=["Agno-compatible"])

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


def _sse(work: Callable[[Observer], Run], first: list[tuple[str, dict[str, Any]]] | None = None,
         ) -> EventSourceResponse:
    """Stream a run's events as Agno stream events while ``work`` drives it in a thread.

    Only committed events are streamed: each batch is sent after its save.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
    for item in first or []:
        queue.put_nowait(item)

    def observer(run: Run, events: list[Any]) -> None:
        for item in stream_events(run, events):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    async def generate() -> AsyncIterator[dict[str, str]]:
        future = loop.run_in_executor(None, work, observer)
        future.add_done_callback(lambda _: queue.put_nowait(None))
        while (item := await queue.get()) is not None:
            name, data = item
            yield {"event": name, "data": dumps(data)}
        if future.exception() is not None:
            err = future.exception()
            yield {"event": "RunError", "data": dumps(
                {"event": "RunError", "content": f"{type(err).__name__}: {err}"})}

    return EventSourceResponse(generate(), sep="\n", ping=15)


@router.get("/agents", dependencies=[allow(*EVERY_ROLE)])
def list_agents(c: ContainerDep) -> list[dict[str, Any]]:
    """The agents this service runs."""
    return [agent_info(a, c.loop.default_model) for a in c.loop.agents.values()]


@router.get("/agents/{agent_id}", responses=problem_responses(404),
            dependencies=[allow(*EVERY_ROLE)])
def get_agent(agent_id: str, c: ContainerDep) -> dict[str, Any]:
    """One agent: its model and tools (with their confirmation settings)."""
    return agent_info(c.loop.agent(agent_id), c.loop.default_model)


@router.post("/agents/{agent_id}/runs", openapi_extra=_body_doc(StartRunForm),
             responses={200: {"content": {"text/event-stream": {}}},
                        **problem_responses(400, 403, 404, 413, 415, 422)})
async def create_agent_run(agent_id: str, request: Request, c: ContainerDep,
                           caller: Annotated[Identity, allow(C)]) -> Any:
    """Start a run. ``stream`` defaults to true (server-sent events), as in Agno.

    With authentication, the run's user is the caller (a ``user_id`` naming anyone else
    is refused)."""
    form: StartRunForm = await _read(request, StartRunForm)
    if form.background:
        raise ProblemError(422, "background runs are not supported; use stream=false")
    run = c.runs.open_run(caller, agent_id, form.message, user_id=form.user_id,
                          session_id=form.session_id)  # refused before a stream's 200
    if form.stream:
        return _sse(lambda observer: c.runs.drive(run, observer))
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
) -> Any:
    """Continue a paused run with the decisions filled into its ``tools``.

    Decisions may come one at a time; the run continues when none is left pending.
    A decision on a call that is no longer pending gets 409 with the decision that
    stands. A request sent again with its ``Idempotency-Key`` gets the run as the first
    one left it; the same key with another request, or from another caller, gets 422.
    """
    form: ContinueRunForm = await _read(request, ContinueRunForm)
    replies = parse_tools(form.tools)

    def decide(observer: Observer | None, drive: bool) -> Decided:
        return c.runs.decide(caller, run_id, replies, agent_id=agent_id, named=form.user_id,
                             key=idempotency_key, drive=drive, observer=observer)

    if not form.stream:
        decided = await run_in_threadpool(decide, None, True)
        return JSONBody(run_output(decided.run))
    first: list[tuple[str, dict[str, Any]]] = []
    decided = await run_in_threadpool(
        decide, lambda run, events: first.extend(stream_events(run, events)), False)
    run = decided.run
    if decided.replayed_from is not None:  # stream again what the first request caused
        events = await run_in_threadpool(c.app.run_events, run.id)
        again = [e for e in events if e.originator_version >= decided.replayed_from]
        return _sse(lambda _: run, first=stream_events(run, again))
    return _sse(lambda observer: c.runs.drive(run, observer), first=first)


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
