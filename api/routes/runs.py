"""signoff's own run routes: state, history, cancel."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from api.auth import A, C, R, allow
from api.deps import Container, ContainerDep
from api.errors import ProblemError, problem_responses
from api.wire import Body, IsoTime
from service.access import check_owner, check_run, read_for
from service.auth import Identity
from service.views import event_view, run_view

log = logging.getLogger("signoff.api")

router = APIRouter(tags=["Runs"])

# Event versions are stored as 64-bit integers (SQLite INTEGER, PostgreSQL bigint): a
# larger number cannot be sent to the database (an OverflowError, i.e. a 500, before).
MAX_VERSION = 2**63 - 1


class CancelRequest(Body):
    reason: str | None = Field(None, max_length=10_000)
    actor: str | None = Field(None, max_length=200)


@router.get("/runs/{run_id}", responses=problem_responses(404, 422))
def get_run(run_id: str, c: ContainerDep, caller: Annotated[Identity, allow(C, R, A)],
            at_version: int | None = Query(None, ge=1, le=MAX_VERSION),
            as_of: IsoTime | None = None) -> dict[str, Any]:
    """The run's state: status, pending calls, decisions, version.

    ``at_version=N`` shows the run as it was after its first N events; ``as_of=TIME``
    as it was at that time (a time without a zone is UTC). 404 when the run did not
    exist yet then, or has fewer events. The run as it is now is settled first if a
    crashed process left it behind (``RUNNING`` past its deadline: in doubt, or run
    again).
    """
    if at_version is not None and as_of is not None:
        raise ProblemError(422, "give at_version or as_of, not both")
    if at_version is None and as_of is None:
        return run_view(c.runs.get(caller, run_id))
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    run = read_for(caller, c.store, run_id,
                   lambda: c.store.get_run_at(run_id, version=at_version, as_of=as_of))
    check_run(caller, run)
    return run_view(run)


@router.get("/runs/{run_id}/events", responses=problem_responses(404))
def get_run_events(run_id: str, c: ContainerDep,
                   caller: Annotated[Identity, allow(C, R, A)]) -> list[dict[str, Any]]:
    """The run's history: every event in order, with its type, version, time and payload."""
    events = read_for(caller, c.store, run_id, lambda: c.store.run_events(run_id))
    started = events[0]
    check_owner(caller, run_id, getattr(started, "user_id", None),
                getattr(started, "agent_id", ""))
    return [event_view(e) for e in events]


@router.post("/runs/{run_id}/cancel", responses=problem_responses(400, 403, 404, 409, 422))
def cancel_run(run_id: str, c: ContainerDep, caller: Annotated[Identity, allow(C, R)],
               body: CancelRequest | None = None) -> dict[str, Any]:
    """Cancel a run that has not ended: its undecided calls are cancelled with it; a
    tool already running finishes, and its outcome is recorded. The caller must be one
    who may decide every call the run leaves open (a client: its own run). With
    authentication the actor is the caller (an ``actor`` naming anyone else is
    refused); without, the ``actor`` given, or ``anonymous``."""
    body = body or CancelRequest()
    return run_view(c.runs.cancel(caller, run_id, named=body.actor, reason=body.reason))


@router.get("/health", tags=["Operations"], dependencies=[allow()])
def health(c: ContainerDep) -> dict[str, Any]:
    """Alive, and the event store answers. ``HEAD`` answers the same, without the body."""
    return {"status": "ok", "log_head": c.store.head()}


# HEAD (what uptime checks and load balancers often send) is GET's twin: the server sends
# the headers only. Not a route of its own in the OpenAPI document.
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False,
                     dependencies=[allow()])


# Readiness checks run here, bounded in time: a store that does not answer must give a
# quick 503, not a probe left hanging until the connection pool gives up (30 s).
_READY_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="signoff-ready")
READY_TIMEOUT = 2.0


@router.get("/ready", tags=["Operations"], responses=problem_responses(503),
            dependencies=[allow()])
def ready(c: ContainerDep) -> dict[str, Any]:
    """Ready for traffic: the event store answers, and every projection is reachable and at
    most ``SIGNOFF_READY_MAX_LAG`` events behind the log (within 2 s). Otherwise 503, a
    problem saying what is not ready."""
    future = _READY_CHECKS.submit(_readiness, c)
    try:
        return future.result(timeout=READY_TIMEOUT)
    except FuturesTimeout:
        log.warning("not ready: the store did not answer within %g s", READY_TIMEOUT)
        raise ProblemError(503, f"the store did not answer within {READY_TIMEOUT:g} s") \
            from None


def _readiness(c: Container) -> dict[str, Any]:
    try:
        head = c.store.head()
    except Exception as e:
        log.warning("not ready: the event store does not answer (%s)", e)
        raise ProblemError(503, f"the event store does not answer ({type(e).__name__})") \
            from None
    try:
        statuses = c.projections.status()
    except Exception as e:
        log.warning("not ready: the projections are not reachable (%s)", e)
        raise ProblemError(503, f"the projections are not reachable ({type(e).__name__})") \
            from None
    projections = [{"name": s.name, "position": s.position, "lag": s.lag} for s in statuses]
    max_lag = c.settings.ready_max_lag
    behind = [s.name for s in statuses if s.lag > max_lag]
    if behind:
        raise ProblemError(503, f"projections more than {max_lag} events behind the log: "
                           f"{', '.join(behind)}", projections=projections)
    return {"status": "ready", "log_head": head, "max_lag": max_lag,
            "projections": projections}
