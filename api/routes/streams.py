"""``GET /runs/{run_id}/stream`` and ``GET /queue/stream``: server-sent events that resume
with ``Last-Event-ID`` (api/streams.py). Each wakes when the log's head moves, or every
``WAIT_SECONDS``, and ends once its caller is no longer let in (api/auth.py:
``StillAllowed``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.utils import get_topic
from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from api.auth import A, C, R, StillAllowed, allow
from api.deps import ContainerDep
from api.errors import problem_responses
from api.streams import MAX_POSITION, last_event_id, watcher
from api.wire import dumps
from domain.run import Run
from service.access import check_run, read_for
from service.auth import Identity
from service.runs import RunDamaged, RunNotFound
from service.views import event_view

router = APIRouter(tags=["Streams"])

_SSE = {200: {"description": "server-sent events", "content": {"text/event-stream": {}}}}
_ENDS = (Run.RunCompleted, Run.RunFailed, Run.RunCancelled)
WAIT_SECONDS = 15.0


@router.get("/runs/{run_id}/stream", responses={**_SSE, **problem_responses(404, 422)})
async def stream_run(
    run_id: str, request: Request, c: ContainerDep,
    caller: Annotated[Identity, allow(C, R, A)],
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description=(
        "send the events after this version (0: the whole history)"))] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID",
                                                       max_length=40)] = None,
) -> EventSourceResponse:
    """The run's events as they are recorded: each message's ``event`` is the event's
    type, ``id`` its version, ``data`` as in ``GET /runs/{run_id}/events``. Ends after
    the run's last event (completed, failed, cancelled). Reconnecting with
    ``Last-Event-ID`` resumes after that version."""
    run: Run = await run_in_threadpool(read_for, caller, c.store, run_id,
                                       lambda: c.store.get_run(run_id))
    check_run(caller, run)
    version = last_event_id(last_event_id_header, after) or 0
    watch = watcher(request.app, c.store)
    store = c.store.repository.event_store
    allowed = StillAllowed(request)

    def read(after_version: int) -> list[Any]:
        return list(store.get(run.id, gt=after_version))

    async def messages() -> AsyncIterator[dict[str, Any]]:
        nonlocal version
        ended = run.status.is_final and run.version <= version
        while not ended and await allowed():
            head = watch.head
            events = await run_in_threadpool(read, version)
            for e in events:
                yield {"id": str(e.originator_version), "event": type(e).__name__,
                       "data": dumps(event_view(e))}
                version = e.originator_version
                ended = ended or isinstance(e, _ENDS)
            if not ended:
                await watch.wait(head, WAIT_SECONDS)

    return EventSourceResponse(messages(), sep="\n", ping=15)


_QUEUE_TOPICS = {get_topic(Run.RunPaused): "paused", get_topic(Run.RunContinued): "left",
                 get_topic(Run.RunCancelled): "left", get_topic(Run.RunFailed): "left"}


@router.get("/queue/stream", responses={**_SSE, **problem_responses(422)})
async def stream_queue(
    request: Request, c: ContainerDep, caller: Annotated[Identity, allow(R, A)],
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description=(
        "send the changes after this log position (default: from now on)"))] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID",
                                                       max_length=40)] = None,
) -> EventSourceResponse:
    """Tells reviewers when a run pauses (``event: paused``) or is no longer paused
    (``event: left``: continued, cancelled or failed). ``data``: ``run_id``,
    ``agent_id``, ``type``, ``position``, ``timestamp``; ``id``: the log position, for
    ``Last-Event-ID``. A reviewer limited to some agents hears of those only."""
    resume = last_event_id(last_event_id_header, after)
    position = resume if resume is not None else await run_in_threadpool(c.store.head)
    watch = watcher(request.app, c.store)
    allowed = StillAllowed(request)
    agents: OrderedDict[UUID, str] = OrderedDict()

    def agent_of(run_id: UUID) -> str:
        if run_id not in agents:
            try:
                agents[run_id] = c.store.started_by(run_id)[1]
            except (RunDamaged, RunNotFound):  # whose it is cannot be read: no agent's
                agents[run_id] = ""
            if len(agents) > 10_000:
                agents.popitem(last=False)
        return agents[run_id]

    def page(start: int) -> list[tuple[int, str, dict[str, Any]]]:
        out = []
        for n in c.store.recorder.select_notifications(start + 1, 500,
                                                     topics=list(_QUEUE_TOPICS)):
            e = c.store.mapper.to_domain_event(n)
            agent = agent_of(e.originator_id)
            if caller.agents is not None and agent not in caller.agents:
                out.append((n.id, "", {}))
                continue
            out.append((n.id, _QUEUE_TOPICS[n.topic], {
                "run_id": str(e.originator_id), "agent_id": agent,
                "type": type(e).__name__, "position": n.id, "timestamp": e.timestamp}))
        return out

    async def messages() -> AsyncIterator[dict[str, Any]]:
        nonlocal position
        while await allowed():
            head = watch.head
            changes = await run_in_threadpool(page, position)
            for pos, name, data in changes:
                position = pos
                if name:
                    yield {"id": str(pos), "event": name, "data": dumps(data)}
            if len(changes) < 500:
                await watch.wait(max(head, position), WAIT_SECONDS)

    return EventSourceResponse(messages(), sep="\n", ping=15)
