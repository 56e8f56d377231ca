"""Analytics for analysts and auditors: decisions per tool, agent, reviewer or day, on one
declared clock, and the age of what waits in the queue. docs/analytics.md says what each
figure counts and gives the SQL that computes the same figures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.auth import A, allow
from api.deps import ContainerDep
from api.errors import ProblemError
from api.routes.reviews import _completeness
from api.wire import IsoTime
from projections import analytics, audit, queue

router = APIRouter(tags=["Review"])

_COMPLETE = ("False while the read model is being rebuilt (`signoff project rebuild`): the "
             "answer is then partial, and the header `Signoff-Complete: false` says so too.")
_GROUP = ("The group's key: one value, or a list of values (one per key of `group_by`, "
          "in its order).")
GroupKey = str | None | list[str | None]


class Acceptance(BaseModel):
    accepted: int = Field(description="confirmed (confirmation), given their result "
                          "(external_execution) or their input (user_input)")
    rejected: int
    rate: float | None = Field(description="accepted / (accepted + rejected); null when "
                               "neither happened")


class AcceptanceByKind(BaseModel):
    confirmation: Acceptance
    external_execution: Acceptance
    user_input: Acceptance


class DecisionGroup(BaseModel):
    group: GroupKey = Field(description=_GROUP)
    requested: int | None = Field(description="calls asked for a decision in the window "
                                  "(`by=requested`; null with `by=decided` and per actor)")
    confirmed: int
    rejected: int
    external_result: int
    user_input: int
    allowed: int = Field(description="let through by a policy")
    expired: int
    cancelled: int
    approval_rate: float | None = Field(description="`acceptance.confirmation.rate`: "
                                        "confirmed / (confirmed + rejected), of the calls "
                                        "that wait for a confirmation")
    acceptance: AcceptanceByKind = Field(description="per kind of call (what it waits for); "
                                         "a call that went in doubt is in none")
    time_to_decision_p50_ms: float | None
    time_to_decision_p90_ms: float | None
    time_to_decision_p99_ms: float | None


class DecisionAnalytics(BaseModel):
    group_by: str
    by: Literal["requested", "decided"] = Field(description="the clock of the window and "
                                                "of the days")
    tz: str = Field(description="the time zone of the days, and of a window's bounds "
                    "given without one")
    since: datetime | None
    until: datetime | None
    groups: list[DecisionGroup]
    complete: bool = Field(True, description=_COMPLETE)


class QueueGroup(BaseModel):
    group: GroupKey = Field(description=_GROUP + " `group` is null for calls not escalated.")
    waiting: int
    oldest_requested_at: datetime
    age_oldest_ms: float
    age_p50_ms: float
    age_p90_ms: float


class QueueAnalytics(BaseModel):
    group_by: str
    at: datetime = Field(description="the time the ages are measured at")
    groups: list[QueueGroup]
    complete: bool = Field(True, description=_COMPLETE)


def _keys(group_by: str, allowed: tuple[str, ...]) -> None:
    try:
        analytics.group_keys(group_by, allowed)
    except ValueError as e:
        raise ProblemError(422, str(e), errors=[
            {"loc": ["query", "group_by"], "msg": str(e), "type": "value_error"}]) from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        message = f"not a time zone: {name!r} (an IANA name, e.g. Europe/Paris)"
        raise ProblemError(422, message, errors=[
            {"loc": ["query", "tz"], "msg": message, "type": "value_error"}]) from None


@router.get("/analytics/decisions", response_model=DecisionAnalytics,
            dependencies=[allow(A)])
def get_analytics(
    c: ContainerDep,
    response: Response,
    group_by: Annotated[str, Query(
        max_length=40, pattern=r"^[a-z]+(,[a-z]+)*$",
        description="`tool`, `agent`, `actor`, `day`, or several, comma-separated "
        "(`actor,tool`: each reviewer's decisions per tool)")] = "tool",
    by: Annotated[Literal["requested", "decided"], Query(
        description="the clock: a decision is in the window, and in a day, by when its "
        "call was asked (`requested`) or by when it was made (`decided`)")] = "requested",
    tz: Annotated[str, Query(max_length=64, description="the time zone of the days (an "
                             "IANA name); also of `since` and `until` without one")] = "UTC",
    since: IsoTime | None = None,
    until: IsoTime | None = None,
) -> dict[str, Any]:
    """Per group: calls requested, decisions of each kind, acceptance per kind of call
    (confirmation, external result, user input; `approval_rate` is the confirmations'),
    time to decision p50 / p90 / p99 (ms, nearest rank, decisions by people).

    The window (`since` inclusive, `until` exclusive) and the days read one clock, `by`.
    docs/analytics.md gives the SQL of every figure."""
    _keys(group_by, analytics.DECISION_KEYS)
    zone = _zone(tz)
    since, until = _in(since, zone), _in(until, zone)  # echoed as applied: with a zone
    view = c.projections.views[audit.AuditProjection.name]
    with view.read() as cur:
        groups = analytics.analytics(cur, group_by, by=by, tz=zone, since=since,
                                     until=until)
    return _completeness({"group_by": group_by, "by": by, "tz": tz, "since": since,
                          "until": until, "groups": groups}, view, response)


@router.get("/analytics/queue", response_model=QueueAnalytics, dependencies=[allow(A)])
def get_queue_analytics(
    c: ContainerDep,
    response: Response,
    group_by: Annotated[str, Query(
        max_length=40, pattern=r"^[a-z]+(,[a-z]+)*$",
        description="`tool`, `agent`, `kind`, `group` (the group of reviewers an escalated "
        "call waits for), or several, comma-separated")] = "tool",
) -> dict[str, Any]:
    """What waits in the queue, per group: how many calls, since when the oldest waits,
    and the ages (ms) of the oldest, the median and the 90th percentile (nearest rank),
    measured now (`at`) from when each call was asked (or went in doubt)."""
    _keys(group_by, analytics.QUEUE_KEYS)
    view = c.projections.views[queue.QueueProjection.name]
    with view.read() as cur:
        at = datetime.now(UTC)
        groups = analytics.queue_age(cur, group_by, at=at)
    return _completeness({"group_by": group_by, "at": at, "groups": groups}, view, response)


def _in(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """A time without a zone is in ``zone``."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value
