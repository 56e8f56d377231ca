"""Read models for reviewers and auditors: the paused-run queue, the decision audit trail
(with streamed CSV / JSON Lines export), and where each projection is in the log (the
analytics are in ``analytics.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api import wire
from api.auth import ADMIN, A, R, allow
from api.deps import ContainerDep
from api.errors import ProblemError
from api.wire import IsoTime
from projections import audit, queue, queuepages
from projections.csvfile import decisions_csv
from projections.store import ViewMixin
from service.auth import Identity

router = APIRouter(tags=["Review"])

Kind = Literal["confirmation", "external_execution", "user_input", "in_doubt"]
Decision = Literal["confirmed", "rejected", "external_result", "user_input", "allowed",
                   "expired", "cancelled"]
# PostgreSQL text cannot hold NUL: refused here (422) rather than failing in the database.
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]

_TOTAL = ("How many match the filters, on every page. Without filters: exact (a counter "
          "the projection keeps). With filters: counted up to {cap}; beyond that, "
          "`total` is {cap} and `total_exact` is false.")
_TOTAL_EXACT = "False when more than `total` match (a filtered count stopped at its cap)."


class WaitingCall(BaseModel):
    tool_call_id: str
    tool_name: str
    tool_args: Any
    kind: Kind
    confirmation_message: str | None
    requested_at: datetime
    expires_at: datetime | None = Field(
        None, description="When the decision expires (the tool's decision_timeout); "
        "null: it may wait for ever.")
    escalated_to: str | None = Field(
        None, description="The group of reviewers an expired decision was escalated to.")


class QueueItem(BaseModel):
    run_id: str
    agent_id: str
    user_id: str | None
    session_id: str
    started_at: datetime
    paused_since: datetime
    waiting_for: list[WaitingCall]


_COMPLETE = ("False while the read model is being rebuilt (`signoff project rebuild`): the "
             "answer is then partial, `total_exact` is false, and the header "
             "`Signoff-Complete: false` says so too.")


class QueuePage(BaseModel):
    items: list[QueueItem]
    total: int = Field(description=_TOTAL.format(cap=f"{queuepages.TOTAL_CAP:,}"))
    total_exact: bool = Field(description=_TOTAL_EXACT)
    complete: bool = Field(True, description=_COMPLETE)
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; "
                                    "null on the last page.")


class DecisionRow(BaseModel):
    position: int
    run_id: str
    tool_call_id: str
    agent_id: str
    user_id: str | None
    session_id: str
    tool_name: str
    args_requested: Any
    args_approved: Any
    decision: Decision
    actor: str
    note: str | None
    details: Any
    requested_at: datetime
    decided_at: datetime
    time_to_decision_ms: float


class DecisionPage(BaseModel):
    items: list[DecisionRow]
    total: int = Field(description=_TOTAL.format(cap=f"{audit.TOTAL_CAP:,}"))
    total_exact: bool = Field(description=_TOTAL_EXACT)
    complete: bool = Field(True, description=_COMPLETE)
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; "
                                    "null on the last page.")


@router.get("/queue", response_model=QueuePage)
def get_queue(
    c: ContainerDep,
    response: Response,
    caller: Annotated[Identity, allow(R, A)],
    agent_id: Text = None,
    user_id: Text = None,
    tool: Text = None,
    kind: Kind | None = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    group: Annotated[str | None, Query(
        max_length=200, pattern=r"^[^\x00]*$", description="only runs with a call whose "
        "decision expired and was escalated to this group")] = None,
) -> dict[str, Any]:
    """Paused runs waiting for a decision, oldest first, with the calls each waits for.

    ``total`` counts the runs matching the filters: exactly without filters; with
    filters up to 1,000 (``total_exact`` false beyond). Pass ``next_cursor`` back as
    ``cursor`` for the next page.
    """
    if cursor is not None:
        _check_cursor(queuepages.cursor_decode, cursor)
    agent_id = _in_scope(caller.agents, agent_id, "agent_id", "agents")
    tool = _in_scope(caller.tools, tool, "tool", "tools")
    view = c.projections.views[queue.QueueProjection.name]
    with view.read(snapshot=False) as cur:  # one statement
        page = queuepages.list_queue(cur, agent_id=agent_id, user_id=user_id, tool_name=tool,
                                kind=kind, after=cursor, limit=limit, group=group)
    return _completeness(page, view, response)


def _in_scope(scope: frozenset[str] | None, value: str | None, param: str,
              what: str) -> str | None:
    """A reviewer limited to some agents (tools) sees the queue of those only: the filter
    defaults to its one agent, must name one of several, and may not name another."""
    if scope is None:
        return value
    if value is None:
        if len(scope) == 1:
            return next(iter(scope))
        raise ProblemError(422, f"give {param}: you review the {what} "
                           f"{', '.join(sorted(scope))}")
    if value not in scope:
        raise ProblemError(403, f"{value!r} is not one of the {what} you review")
    return value


def _check_cursor(decode: Any, cursor: str) -> None:
    """A cursor this service did not hand out is a 422 (checked before any query runs, so
    that no other ``ValueError`` passes for a bad cursor)."""
    try:
        decode(cursor)
    except ValueError as e:
        raise ProblemError(422, f"invalid cursor: {e}", errors=[
            {"loc": ["query", "cursor"], "msg": str(e), "type": "value_error"}]) from None


@router.get("/audit/decisions", response_model=DecisionPage, dependencies=[allow(A)],
            responses={200: {"content": {
    "text/csv": {}, "application/x-ndjson": {}}}})
async def get_decisions(
    c: ContainerDep,
    response: Response,
    run_id: Text = None,
    actor: Text = None,
    tool: Text = None,
    decision: Decision | None = None,
    since: IsoTime | None = None,
    until: IsoTime | None = None,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Literal["json", "csv", "jsonl"] = "json",
) -> Any:
    """Every decision: who decided what on which call, when, why, and how long after it
    was asked. ``format=csv`` or ``jsonl`` streams every matching decision (no paging,
    constant memory).

    Pages: pass ``next_cursor`` back as ``cursor``. A cursor is a log position (the
    page continues after every decision at it), or ``position:tool_call_id``.
    ``total`` counts the decisions matching the filters: exactly without filters; with
    filters up to 1,000 (``total_exact`` false beyond).
    """
    if cursor is not None:
        _check_cursor(audit.cursor_decode, cursor)
    view = c.projections.views[audit.AuditProjection.name]
    filters: dict[str, Any] = {"run_id": run_id, "actor": actor, "tool_name": tool,
                               "decision": decision, "since": _aware(since),
                               "until": _aware(until)}
    if format == "json":
        def page() -> dict[str, Any]:
            with view.read(snapshot=False) as cur:  # one statement
                found = audit.list_decisions(cur, after=cursor, limit=limit, **filters)
            return _completeness(found, view, response)
        return await run_in_threadpool(page)
    if await run_in_threadpool(view.rebuilding):
        raise ProblemError(503, "the audit trail is being rebuilt: an export now would be "
                           "partial; try again once GET /projections shows it caught up")
    rows = audit.iter_decisions(view.read, **filters)
    if format == "jsonl":
        body: Iterator[str] = (wire.dumps(r) + "\n" for r in rows)
        media = "application/x-ndjson"
    else:
        body = decisions_csv(rows)
        media = "text/csv"
    return StreamingResponse(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="decisions.{format}"'})


def _completeness(answer: dict[str, Any], view: ViewMixin, response: Response,
                  ) -> dict[str, Any]:
    """Mark an answer read from ``view``: partial while the view is being rebuilt."""
    partial = view.rebuilding()
    answer["complete"] = not partial
    if partial:
        if "total_exact" in answer:
            answer["total_exact"] = False
        response.headers["Signoff-Complete"] = "false"
    return answer


@router.get("/projections", tags=["Operations"], dependencies=[allow(A, ADMIN)])
def get_projections(c: ContainerDep) -> list[dict[str, Any]]:
    """Each projection's position in the log, the log's head, and the lag between them."""
    return [{"name": s.name, "position": s.position, "head": s.head, "lag": s.lag}
            for s in c.projections.status()]


def _aware(value: datetime | None) -> datetime | None:
    """Times without a zone are taken as UTC."""
    if value is not None and value.tzinfo is None:
        from datetime import UTC

        return value.replace(tzinfo=UTC)
    return value
