"""Agno AgentOS-compatible routes: a client written for AgentOS's HITL endpoints works
unchanged (``../shared/notes/agno-wire.md``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from agent.loop import Observer
from api.agno import agent_info, decisions_from_tools, parse_tools, run_output, stream_events
from api.auth import CallerDep, check_escalated, check_run, user_for
from api.deps import ContainerDep
from api.errors import ProblemError, problem_responses
from api.lean import LeanRoute
from api.wire import JSONBody, dumps, form_fields, loads
from domain.errors import ToolCallNotPending
from domain.run import Run

router = APIRouter(tags=["Agno-compatible"])
# The two routes of a HITL cycle: answered without per-request dependency solving.
hot = APIRouter(tags=["Agno-compatible"], route_class=LeanRoute)

_FORM = ("application/x-www-form-urlencoded", "multipart/form-data")


class StartRunForm(BaseModel):
    """``POST /agents/{agent_id}/runs``: form fields (or the same keys as JSON)."""

    model_config = ConfigDict(extra="ignore")

    message: str = Field(min_length=1, max_length=100_000)
    stream: bool = True
    session_id: str | None = Field(None, max_length=200)
    user_id: str | None = Field(None, max_length=200)
    background: bool = False


class ContinueRunForm(BaseModel):
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
        if ctype == _FORM[0]:
            data = form_fields(await request.body())
        elif ctype in _FORM:
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


@router.get("/agents")
def list_agents(c: ContainerDep) -> list[dict[str, Any]]:
    """The agents this service runs."""
    return [agent_info(a, c.loop.default_model) for a in c.loop.agents.values()]


@router.get("/agents/{agent_id}", responses=problem_responses(404))
def get_agent(agent_id: str, c: ContainerDep) -> dict[str, Any]:
    """One agent: its model and tools (with their confirmation settings)."""
    return agent_info(c.loop.agent(agent_id), c.loop.default_model)


@hot.post("/agents/{agent_id}/runs", openapi_extra=_body_doc(StartRunForm),
             responses={200: {"content": {"text/event-stream": {}}},
                        **problem_responses(400, 404, 415, 422)})
async def create_agent_run(agent_id: str, request: Request, c: ContainerDep,
                           caller: CallerDep) -> Any:
    """Start a run. ``stream`` defaults to true (server-sent events), as in Agno.

    With authentication, the run's user is the caller (a ``user_id`` naming anyone else
    is refused)."""
    form: StartRunForm = await _read(request, StartRunForm)
    user_id = user_for(caller, form.user_id)
    if form.background:
        raise ProblemError(422, "background runs are not supported; use stream=false")
    c.loop.agent(agent_id)  # 404 before anything is recorded
    c.loop.limits.check_message(form.message)  # 413 before a stream's 200 is sent

    def work(observer: Observer | None) -> Run:
        return c.loop.start(agent_id, form.message, user_id=user_id,
                            session_id=form.session_id, observer=observer)

    if form.stream:
        return _sse(work)
    run = await run_in_threadpool(work, None)
    return JSONBody(run_output(run))


@hot.post("/agents/{agent_id}/runs/{run_id}/continue",
             openapi_extra=_body_doc(ContinueRunForm),
             responses={200: {"content": {"text/event-stream": {}}},
                        **problem_responses(400, 404, 409, 415, 422)})
async def continue_agent_run(
    agent_id: str,
    run_id: str,
    request: Request,
    c: ContainerDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Continue a paused run with the decisions filled into its ``tools``.

    Decisions may come one at a time; the run continues when none is left pending.
    A decision on a call that is no longer pending gets 409 with the decision that
    stands, unless the request repeats one that is already recorded alongside a new one,
    or carries the ``Idempotency-Key`` of the request that made it.
    """
    form: ContinueRunForm = await _read(request, ContinueRunForm)
    tools = parse_tools(form.tools)
    named = user_for(caller, form.user_id)

    def decide(observer: Observer | None, drive: bool = False) -> tuple[Run, bool]:
        run = c.loop.recover(run_id)
        if run.agent_id != agent_id:
            raise ProblemError(404, f"agent {agent_id!r} has no run {run_id!r}")
        check_run(caller, run)
        if idempotency_key and _decided_with(run, idempotency_key):
            return run, True
        decisions, repeats = decisions_from_tools(run, tools)
        check_run(caller, run, tools=[run.calls[d.tool_call_id]["tool_name"]
                                      for d in decisions])
        check_escalated(caller, run, [d.tool_call_id for d in decisions])
        if not decisions:
            _refuse_without_decisions(run, repeats)
        # The actor is the authenticated caller; without authentication, as in Agno.
        actor = named or run.user_id or "anonymous"
        try:
            return c.loop.decide(run_id, decisions, actor=actor, request_key=idempotency_key,
                                 run=run, observer=observer, drive=drive), False
        except ToolCallNotPending:
            if idempotency_key:  # decided by an earlier attempt of this same request?
                latest = c.loop.app.get_run(run_id)
                if _decided_with(latest, idempotency_key):
                    return latest, True
            raise

    if not form.stream:
        run, _ = await run_in_threadpool(decide, None, True)
        return JSONBody(run_output(run))
    first: list[tuple[str, dict[str, Any]]] = []
    run, replayed = await run_in_threadpool(
        decide, lambda r, evs: first.extend(stream_events(r, evs)))
    if replayed:
        events = c.loop.app.run_events(run.id)
        since = _first_version_with(run, idempotency_key or "")
        return _sse(lambda _obs: run, first=stream_events(
            run, [e for e in events if e.originator_version >= since]))
    return _sse(lambda observer: c.loop.drive(run, observer), first=first)


def _decided_with(run: Run, key: str) -> bool:
    return any((c["decision"] or {}).get("request_key") == key for c in run.calls.values())


def _first_version_with(run: Run, key: str) -> int:
    versions = [c["decision"]["version"] for c in run.calls.values()
                if (c["decision"] or {}).get("request_key") == key]
    return min(versions, default=run.version)


def _refuse_without_decisions(run: Run, repeats: list[dict[str, Any]]) -> None:
    if repeats:
        call = run.calls[repeats[0]["tool_call_id"]]
        raise ToolCallNotPending(
            f"call {call['tool_call_id']!r} was already decided", decision=call["decision"])
    if run.status.is_final:
        raise ProblemError(409, f"the run is {run.status}; there is nothing to continue")
    if not run.pending_calls():
        raise ProblemError(409, f"the run is {run.status} and waits for no decision")
    raise ProblemError(422, "'tools' carries no decision for any pending call "
                       "(set confirmed, result or user_input_schema values)")


@router.get("/agents/{agent_id}/runs/{run_id}", responses=problem_responses(404))
def get_agent_run(agent_id: str, run_id: str, c: ContainerDep,
                  caller: CallerDep) -> dict[str, Any]:
    """The run as Agno's ``RunOutput``."""
    run = c.loop.app.get_run(run_id)
    if run.agent_id != agent_id:
        raise ProblemError(404, f"agent {agent_id!r} has no run {run_id!r}")
    check_run(caller, run)
    if caller.open or caller.role != "auditor":  # an auditor only reads
        run = c.loop.recover(run_id)
    return run_output(run)


@router.post("/agents/{agent_id}/runs/{run_id}/cancel", responses=problem_responses(404, 409))
def cancel_agent_run(agent_id: str, run_id: str, c: ContainerDep,
                     caller: CallerDep) -> dict[str, Any]:
    run = c.loop.app.get_run(run_id)
    if run.agent_id != agent_id:
        raise ProblemError(404, f"agent {agent_id!r} has no run {run_id!r}")
    check_run(caller, run)
    actor = run.user_id if caller.open else caller.name
    run = c.loop.cancel(run_id, actor=actor or "anonymous")
    return run_output(run)
