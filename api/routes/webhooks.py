"""Webhook subscriptions over HTTP (the admin role): create, list, delete, and every
delivery with its attempts (docs/webhooks.md)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, HttpUrl, field_validator

from api.auth import ADMIN, allow
from api.deps import Container, ContainerDep
from api.errors import ProblemError, problem_responses
from api.wire import Body
from domain.webhooks import ALL, EVENT_TYPES, UnknownEventType, WebhookDeleted
from projections import webhooks as view
from service.auth import Identity
from service.webhooks import (
    HostNotAllowed,
    WebhookNotFound,
    allowed_hosts,
    check_host,
    create_webhook,
    delete_webhook,
    find_webhook,
    webhook_view,
)

router = APIRouter(tags=["Webhooks"])

EventType = Literal["run.paused", "decision.made", "decision.escalated", "run.completed",
                    "run.failed", "run.cancelled", "*"]
assert set(EventType.__args__) == {*EVENT_TYPES, ALL}  # type: ignore[attr-defined]


class WebhookOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    hint: str = Field(description="the secret's first characters")
    created_by: str
    created_at: datetime
    deleted: bool


class NewWebhook(Body):
    url: HttpUrl = Field(description="http or https URL deliveries are POSTed to")
    event_types: list[EventType] = Field(
        default_factory=lambda: [ALL], min_length=1, max_length=len(EVENT_TYPES) + 1,
        description="what to be told of (* for all)")
    secret: str | None = Field(
        None, min_length=16, max_length=200, pattern=r"^[\x21-\x7e]+$",
        description="the secret deliveries are signed with; signoff makes one when absent")

    @field_validator("url")
    @classmethod
    def _short(cls, v: HttpUrl) -> HttpUrl:
        if len(str(v)) > 2000:
            raise ValueError("at most 2000 characters")
        return v


class CreatedWebhook(BaseModel):
    secret: str = Field(description="shown this once: verify deliveries' signatures with it")
    webhook: WebhookOut


class Attempt(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None = Field(description="the subscriber's answer (none: no answer)")
    error: str | None = Field(description="why there was no answer (timeout, refused...)")


class Delivery(BaseModel):
    id: str = Field(description="the Signoff-Delivery header; the same on every attempt")
    webhook_id: str
    event_type: str
    position: int = Field(description="the event's position in the log")
    run_id: str
    version: int = Field(description="the event's version in its run")
    occurred_at: datetime
    status: Literal["pending", "delivered", "failed", "cancelled"]
    next_attempt_at: datetime | None
    body: str | None = Field(description="the JSON body sent (none before the first attempt)")
    attempts: list[Attempt]


def _settle(c: Container, position: int, timeout: float = 5.0) -> None:
    """Until the webhooks projection has applied ``position`` (so that a list read next
    shows it), or ``timeout``: with SIGNOFF_PROJECTIONS=off another process applies it."""
    deadline = time.monotonic() + timeout
    v = c.projections.views[view.WebhooksProjection.name]
    while v.position() < position and time.monotonic() < deadline:
        c.projections.prompt()
        time.sleep(0.005)


def _known(c: Container, webhook_id: str) -> Any:
    try:
        return find_webhook(c.store, webhook_id)
    except WebhookNotFound as e:
        raise ProblemError(404, str(e)) from None


@router.get("/webhooks", response_model=list[WebhookOut], dependencies=[allow(ADMIN)])
def get_webhooks(c: ContainerDep) -> list[dict[str, Any]]:
    """Every subscription ever made, oldest first (never the secrets)."""
    with c.projections.views[view.WebhooksProjection.name].read(snapshot=False) as cur:
        return view.read_webhooks(cur)


@router.post("/webhooks", status_code=201, response_model=CreatedWebhook,
             responses=problem_responses(400, 422))
def post_webhook(body: NewWebhook, c: ContainerDep,
                 caller: Annotated[Identity, allow(ADMIN)]) -> CreatedWebhook:
    """Subscribe a URL to events. Its secret is in this answer only. It is told of every
    wanted event recorded after this one."""
    url = str(body.url)
    try:
        check_host(url, allowed_hosts(c.settings.webhook_hosts))
    except HostNotAllowed as e:
        raise ProblemError(422, str(e)) from None
    v = c.projections.views[view.WebhooksProjection.name]

    def keep(webhook_id: str, secret: str) -> None:
        with v.write_transaction() as cur:
            view.keep_secret(cur, webhook_id, secret)

    try:
        secret, webhook, position = create_webhook(
            c.store, url=url, event_types=list(body.event_types), secret=body.secret,
            created_by=caller.name or "anonymous", keep_secret=keep)
    except UnknownEventType as e:  # pragma: no cover - the body's Literal already refuses
        raise ProblemError(422, str(e)) from None
    _settle(c, position)
    return CreatedWebhook(secret=secret, webhook=WebhookOut.model_validate(webhook_view(webhook)))


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut,
            responses=problem_responses(404), dependencies=[allow(ADMIN)])
def get_webhook(webhook_id: str, c: ContainerDep) -> dict[str, Any]:
    """One subscription."""
    return webhook_view(_known(c, webhook_id))


@router.delete("/webhooks/{webhook_id}", response_model=WebhookOut,
               responses=problem_responses(404, 409))
def remove_webhook(webhook_id: str, c: ContainerDep,
                   caller: Annotated[Identity, allow(ADMIN)]) -> dict[str, Any]:
    """Delete a subscription: nothing more is sent to it, pending retries included. Its
    deliveries stay visible."""
    _known(c, webhook_id)
    try:
        webhook, position = delete_webhook(c.store, webhook_id,
                                           deleted_by=caller.name or "anonymous")
    except WebhookDeleted as e:
        raise ProblemError(409, str(e)) from None
    _settle(c, position)
    return webhook_view(webhook)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[Delivery],
            responses=problem_responses(404, 422), dependencies=[allow(ADMIN)])
def get_deliveries(
    webhook_id: str, c: ContainerDep,
    status: Annotated[Literal["pending", "delivered", "failed", "cancelled"] | None,
                      Query(description="only deliveries in this state")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only events before "
                                        "this log position (the next page: the last "
                                        "one's)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest event first, each with every attempt made."""
    _known(c, webhook_id)
    with c.projections.views[view.WebhooksProjection.name].read() as cur:
        return view.read_deliveries(cur, webhook_id, status=status, before=before,
                                    limit=limit)
