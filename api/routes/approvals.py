"""Agno's approvals API (``/approvals``), in Agno 3.1's shapes, served from signoff's
read models: an approval is a call that waits for a person's confirmation (the queue),
or one that did (the audit trail; ``projections/approvals.py``).

Resolving one is a decision like any other, through the run lifecycle: the actor is the
authenticated caller (``resolved_by`` names the actor only without authentication, as
Agno takes a JWT's subject over it), exactly one resolve wins (another gets 409 with the
decision that stands), the decision is in the audit trail, and the run goes on at once
when it waits for nothing else. A client that then continues the run as Agno's do (with
``tools=[]``) gets the run as that decision left it.

Lists are read from the read models once they have applied the log as it was when the
request came (``_caught_up``); one approval (``GET /approvals/{approval_id}``, its
``/status``, a resolve) is answered from the run itself.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ConfigDict, Field

from api.approvals import (
    MAX_WINDOW,
    ApprovalCount,
    ApprovalOut,
    ApprovalPage,
    ApprovalStatus,
    Status,
    approval_body,
    epoch,
)
from api.auth import A, C, R, allow
from api.deps import Container, ContainerDep
from api.errors import ProblemError, problem, problem_responses
from api.wire import Body
from domain.calls import ToolCall
from domain.errors import InvalidRunTransition, ToolCallNotPending
from domain.keys import Role
from domain.run import Run
from domain.values import Reply
from projections import approvals
from projections.approvals import AUDIT_CALLS, QUEUE_CALLS, Approval, Filters
from projections.audit import AuditProjection
from projections.queue import QueueProjection
from service.access import acting_as, check_owner
from service.auth import Identity
from service.runs import RunDamaged, RunNotFound

router = APIRouter(tags=["Approvals"])

# PostgreSQL text cannot hold NUL: refused here (422) rather than failing in the database.
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
NOT_FOUND = "Approval not found"
CATCH_UP_SECONDS = 2.0


class ResolutionData(Body):
    """What is recorded with the decision: its note. Other keys are refused (422):
    signoff records what it is given, or says it does not."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=10_000, description="The confirmation's "
                             "note, or the rejection's reason (the model is told it).")


class ApprovalResolve(Body):
    """Agno's ``ApprovalResolve``."""

    status: Literal["approved", "rejected"]
    resolved_by: str | None = Field(
        None, max_length=255, pattern=r"^[^\x00]*$",
        description="Who decides, without authentication (else `anonymous`). With "
        "authentication the caller decides, and this field is ignored.")
    resolution_data: ResolutionData | None = None


@router.get("/approvals", response_model=ApprovalPage,
            responses=problem_responses(403, 422))
def list_approvals(
    c: ContainerDep,
    response: Response,
    caller: Annotated[Identity, allow(C, R, A)],
    status: Status | None = None,
    agent_id: Text = None,
    user_id: Text = None,
    run_id: Text = None,
    approval_type: Literal["required", "audit"] | None = None,
    source_type: Text = None,
    pause_type: Text = None,
    team_id: Text = None,
    workflow_id: Text = None,
    schedule_id: Text = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page: Annotated[int, Query(ge=1, le=MAX_WINDOW)] = 1,
) -> dict[str, Any]:
    """Approvals, newest first: the calls that wait for a confirmation (``pending``), and
    those resolved (``approved``, ``rejected``, ``expired``, ``cancelled``).

    A client sees its own runs' (a ``user_id`` naming another user is 403), a reviewer
    those of its agents and tools. Every approval is of an agent's run, for a
    confirmation, ``required``: the filters ``source_type``, ``pause_type`` and
    ``approval_type`` other than ``agent``, ``confirmation`` and ``required``, and
    ``team_id``, ``workflow_id`` and ``schedule_id``, match none. ``page`` x ``limit``
    reaches at most 10,000 approvals (narrow the list with filters beyond).
    """
    began = time.perf_counter()
    if page * limit > MAX_WINDOW:
        raise ProblemError(422, f"page x limit is at most {MAX_WINDOW:,}: narrow the list "
                           "with filters (status, agent_id, user_id, run_id)")
    f = _filters(caller, agent_id, user_id, run_id)
    none = (approval_type not in (None, "required") or source_type not in (None, "agent")
            or pause_type not in (None, "confirmation")
            or any(v is not None for v in (team_id, workflow_id, schedule_id)))
    items: list[Approval] = []
    total, exact = 0, True
    if not none:
        _caught_up(c, response, QueueProjection.name, AuditProjection.name)
        items, total, exact = _read_page(c, f, status, (page - 1) * limit, limit)
    return {"data": [_agno(c, a) for a in items], "meta": {
        "page": page, "limit": limit, "total_pages": -(-total // limit),
        "total_count": total, "total_exact": exact,
        "search_time_ms": round((time.perf_counter() - began) * 1000, 3)}}


@router.get("/approvals/count", response_model=ApprovalCount,
            responses=problem_responses(403, 422))
def count_approvals(c: ContainerDep, response: Response,
                    caller: Annotated[Identity, allow(C, R, A)],
                    user_id: Text = None) -> dict[str, int]:
    """How many approvals are pending (those the caller may see)."""
    f = _filters(caller, None, user_id, None)
    _caught_up(c, response, QueueProjection.name)
    with c.projections.views[QueueProjection.name].read() as cur:
        return {"count": approvals.count_pending(cur, f)}


@router.get("/approvals/{approval_id}/status", response_model=ApprovalStatus,
            responses=problem_responses(403, 404))
def get_approval_status(approval_id: str, c: ContainerDep,
                        caller: Annotated[Identity, allow(C, R, A)]) -> dict[str, Any]:
    """Where one approval is: its status, and who resolved it when."""
    a = _one(c, caller, approval_id)
    return {"approval_id": a.id, "status": a.status, "run_id": a.run_id,
            "resolved_at": epoch(a.resolved_at), "resolved_by": a.resolved_by}


@router.get("/approvals/{approval_id}", response_model=ApprovalOut,
            responses=problem_responses(403, 404))
def get_approval(approval_id: str, c: ContainerDep,
                 caller: Annotated[Identity, allow(C, R, A)]) -> dict[str, Any]:
    """One approval, as its run holds it now."""
    return _agno(c, _one(c, caller, approval_id))


@router.post("/approvals/{approval_id}/resolve", response_model=ApprovalOut,
             responses=problem_responses(400, 403, 404, 409, 422))
def resolve_approval(
    approval_id: str,
    body: ApprovalResolve,
    c: ContainerDep,
    caller: Annotated[Identity, allow(R)],
    idempotency_key: Annotated[str | None, Header(max_length=200, description=(
        "sent again with the same request by the same caller: the approval as it now "
        "is, instead of 409; with another request or by another caller: 422"))] = None,
) -> dict[str, Any]:
    """Approve (confirm) or reject the call: a decision recorded like any other, then
    the run goes on when it waits for nothing else (answered once it pauses again or
    ends: ``run_status``).

    Exactly once: a resolve of an approval that is not pending, or that another resolve
    (or a ``continue``) decided first, gets 409 (``"Approval is already 'approved' and
    cannot be resolved"``) with the ``decision`` that stands. With authentication the
    actor is the caller, whatever ``resolved_by`` says; without, ``resolved_by`` (or
    ``anonymous``). ``resolution_data.note`` is recorded as the confirmation's note or
    the rejection's reason.

    ``Idempotency-Key``, as on ``continue``: bound to the caller and to what the request
    asks (its status and note). The same request again with its key gets the approval
    as it now is (200, nothing recorded); another request with that key, 422.
    """
    run, call = _approval_call(c, caller, approval_id)
    if not call.waiting and idempotency_key is None:
        raise _already(c, run, call)
    note = body.resolution_data.note if body.resolution_data else None
    reply = Reply(call.tool_call_id, confirmed=body.status == "approved", note=note)
    try:
        decided = c.runs.decide(caller, run.run_id, [reply], drive=True, key=idempotency_key,
                                named=body.resolved_by if caller.open else None)
    except (ToolCallNotPending, InvalidRunTransition):
        run = c.store.get_run(run.run_id)  # decided meanwhile, or the run ended
        call = run.calls[call.tool_call_id]
        if call.waiting:
            raise
        raise _already(c, run, call) from None
    return _agno(c, _from_run(c, decided.run, decided.run.calls[call.tool_call_id]))


# Agno's DELETE /approvals/{approval_id}: refused, and said why. Public (the answer
# holds no data, and names no approval) and out of the OpenAPI document: signoff has no
# such operation.
NEVER_DELETED = ("signoff never deletes an approval: it is the record of a decision (or "
                 "of a call that waits for one), part of its run's hash-chained history. "
                 "Resolve it (POST /approvals/{approval_id}/resolve) or cancel its run "
                 "(POST /runs/{run_id}/cancel)")


@router.delete("/approvals/{approval_id}", include_in_schema=False, response_model=None,
               dependencies=[allow()])
def delete_approval(approval_id: str, request: Request) -> Response:
    """405 with ``Allow: GET``, as a problem: an approval is never deleted."""
    answer = problem(request, 405, NEVER_DELETED)
    answer.headers["Allow"] = "GET"
    return answer


# ------------------------------------------------------------------ reading

def _filters(caller: Identity, agent_id: str | None, user_id: str | None,
             run_id: str | None) -> Filters:
    """The request's filters within the caller's reach: a client's own runs, a
    reviewer's agents and tools."""
    if caller.role == Role.CLIENT:
        user_id = acting_as(caller, user_id)
    return Filters(agent_id=agent_id, user_id=user_id, run_id=run_id, agents=caller.agents,
                   tools=caller.tools)


def _read_page(c: Container, f: Filters, status: str | None, offset: int, limit: int,
               ) -> tuple[list[Approval], int, bool]:
    """One page, its total and whether that is exact. Pending approvals are the
    queue's, resolved ones the audit trail's; a list of both reads each up to the end of
    the page and merges them."""
    queue_view = c.projections.views[QueueProjection.name]
    audit_view = c.projections.views[AuditProjection.name]
    both = status is None
    found: list[list[Approval]] = []
    total, exact = 0, True
    if status in (None, "pending"):
        with queue_view.read() as cur:
            found.append(approvals.pending(cur, f, limit=offset + limit if both else limit,
                                           offset=0 if both else offset))
            total += approvals.count_pending(cur, f)
    if status != "pending":
        with audit_view.read() as cur:
            found.append(approvals.resolved(cur, f, status=status,
                                            limit=offset + limit if both else limit,
                                            offset=0 if both else offset))
            n, exact = approvals.count_resolved(cur, f, status=status, cap=MAX_WINDOW)
            total += n
    items = approvals.newest_first(*found)
    if both:
        items = items[offset:offset + limit]
    return _with_run_status(c, items), total, exact


def _with_run_status(c: Container, items: list[Approval]) -> list[Approval]:
    """Each resolved approval with its run's status now: the queue's for a run that has
    not ended, the run's own (read from the store) for one that has."""
    wanted = {a.run_id for a in items if a.run_status is None}
    if not wanted:
        return items
    with c.projections.views[QueueProjection.name].read() as cur:
        states = approvals.run_states(cur, wanted)
    for run_id in wanted - set(states):
        try:
            states[run_id] = str(c.store.get_run(run_id).status)
        except (RunNotFound, RunDamaged):
            continue
    return [a if a.run_status is not None else replace(a, run_status=states.get(a.run_id))
            for a in items]


def _caught_up(c: Container, response: Response | None, *names: str) -> None:
    """Wait (up to ``CATCH_UP_SECONDS``) until the read models ``names`` have applied the
    log as it was when the request came: a run that paused before it is listed, as in
    Agno. One that stays behind (its projector away, or being rebuilt) answers what it
    has, with the header ``Signoff-Complete: false``."""
    views = [c.projections.views[name] for name in names]
    target = c.store.head()
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while (behind := any(v.position() < target for v in views)) \
            and time.monotonic() < deadline:
        c.projections.prompt()
        time.sleep(0.005)
    if response is not None and (behind or any(v.rebuilding() for v in views)):
        response.headers["Signoff-Complete"] = "false"


def _locate(c: Container, approval_id: str) -> tuple[str, str]:
    """(run id, call id) of the approval: from the queue (applied first), else from the
    audit trail; 404 when neither knows it."""
    _caught_up(c, None, QueueProjection.name, AuditProjection.name)
    for name, table in ((QueueProjection.name, QUEUE_CALLS),
                        (AuditProjection.name, AUDIT_CALLS)):
        with c.projections.views[name].read(snapshot=False) as cur:
            found = approvals.locate(cur, table, approval_id)
        if found is not None:
            return found
    raise ProblemError(404, NOT_FOUND)


def _approval_call(c: Container, caller: Identity, approval_id: str) -> tuple[Run, ToolCall]:
    """The run and the call of an approval the caller may see (404 otherwise, as for an
    approval that does not exist; 403 for a reviewer outside its agents and tools)."""
    run_id, call_id = _locate(c, approval_id)
    try:
        run = c.runs.get(caller, run_id)
    except RunNotFound:
        raise ProblemError(404, NOT_FOUND) from None
    call = run.calls.get(call_id)
    if call is None or not approvals.is_approval(call):
        raise ProblemError(404, NOT_FOUND)
    check_owner(caller, run.run_id, run.user_id, run.agent_id, [call.tool_name])
    return run, call


def _one(c: Container, caller: Identity, approval_id: str) -> Approval:
    run, call = _approval_call(c, caller, approval_id)
    return _from_run(c, run, call)


def _from_run(c: Container, run: Run, call: ToolCall) -> Approval:
    ended_at = None
    if call.decision is None and run.status.is_final:  # ended with its run, undecided
        ended_at = next((e.timestamp for e in reversed(c.store.run_events(run.run_id))
                         if isinstance(e, Run.RunCancelled | Run.RunFailed)), None)
    found = approvals.from_call(run, call, ended_at)
    if found is None:  # pragma: no cover - checked by _approval_call
        raise ProblemError(404, NOT_FOUND)
    return found


def _already(c: Container, run: Run, call: ToolCall) -> ProblemError:
    """Agno's 409 for an approval that is no longer pending, with the decision that
    stands (none for one cancelled with its run)."""
    status = _from_run(c, run, call).status
    extra = {"decision": call.decision.as_dict()} if call.decision is not None else {}
    return ProblemError(409, f"Approval is already '{status}' and cannot be resolved",
                        **extra)


def _agno(c: Container, a: Approval) -> dict[str, Any]:
    agent = c.agent_loop.agents.get(a.agent_id)
    return approval_body(a, agent.name if agent is not None else a.agent_id)
