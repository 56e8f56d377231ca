"""Webhook subscriptions (``/webhooks``, ``signoff webhooks ...``) and what a delivery
says (``payload``). Sending is the dispatcher's (projections/deliveries.py)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from domain.calls import ToolCall
from domain.chain import plain
from domain.run import Run
from domain.values import TimeoutAction
from domain.webhooks import PREFIX, Webhook
from service.runs import RunService


class WebhookNotFound(Exception):
    """No subscription has this id."""


class HostNotAllowed(ValueError):
    """The URL names a host that SIGNOFF_WEBHOOK_HOSTS does not list."""


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def allowed_hosts(setting: str) -> list[str]:
    return [h.strip().lower() for h in setting.split(",") if h.strip()]


def check_host(url: str, hosts: list[str]) -> None:
    """``HostNotAllowed`` unless ``hosts`` is empty (any host) or names the URL's host,
    exactly or as ``*.example.com`` (any name under example.com)."""
    if not hosts:
        return
    host = (urlsplit(url).hostname or "").lower()
    for allowed in hosts:
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return
    raise HostNotAllowed(f"webhooks may not call {host!r}: SIGNOFF_WEBHOOK_HOSTS allows "
                         f"{', '.join(hosts)}")


def create_webhook(app: RunService, *, url: str, event_types: list[str], created_by: str,
                   keep_secret: Callable[[str, str], None], secret: str | None = None,
                   ) -> tuple[str, Webhook, int]:
    """A new subscription: its secret (shown once), the subscription, and the log
    position of its creation (it is owed every wanted event after it). The secret is
    kept (``keep_secret(id, secret)``) before the subscription is saved, so that no
    delivery is ever due without it."""
    secret = secret or new_secret()
    webhook = Webhook.subscribe(url, event_types, secret=secret, created_by=created_by)
    keep_secret(str(webhook.id), secret)
    recordings = app.save(webhook)
    return secret, webhook, recordings[-1].notification.id


def find_webhook(app: RunService, webhook_id: str) -> Webhook:
    try:
        webhook: Any = app.repository.get(UUID(webhook_id))
    except (ValueError, AggregateNotFoundError):
        raise WebhookNotFound(f"no webhook {webhook_id!r}") from None
    if not isinstance(webhook, Webhook):
        raise WebhookNotFound(f"no webhook {webhook_id!r}")
    return webhook


def delete_webhook(app: RunService, webhook_id: str, *, deleted_by: str,
                   ) -> tuple[Webhook, int]:
    """Delete a subscription: nothing more is sent to it, pending deliveries included."""
    webhook = find_webhook(app, webhook_id)
    webhook.delete(deleted_by=deleted_by)
    recordings = app.save(webhook)
    return webhook, recordings[-1].notification.id


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    return {"id": str(webhook.id), "url": webhook.url, "event_types": webhook.event_types,
            "hint": webhook.hint, "created_by": webhook.created_by,
            "created_at": webhook.created_on, "deleted": webhook.deleted}


# ------------------------------------------------------------------ payloads

def _call(call: ToolCall) -> dict[str, Any]:
    return {"tool_call_id": call.tool_call_id, "tool_name": call.tool_name,
            "tool_args": call.tool_args, "requires": str(call.requires) if call.requires else None,
            "confirmation_message": call.confirmation_message,
            "user_input_schema": call.user_input_schema, "editable_args": call.editable_args}


def event_data(event: Any, run: Run) -> dict[str, Any]:
    """What a notification says of ``event``, given ``run`` as that event left it."""
    label = type(event).__name__  # the payload names the event (data, not dispatch)
    if isinstance(event, Run.RunPaused):
        return {"waiting": [_call(run.calls[i]) for i in event.waiting_for if i in run.calls]}
    if isinstance(event, Run.RunCompleted):
        return {"content": event.content}
    if isinstance(event, Run.RunFailed):
        return {"error": event.error}
    if isinstance(event, Run.RunCancelled):
        return {"cancelled_by": event.cancelled_by, "reason": event.reason}
    call = run.calls.get(getattr(event, "tool_call_id", ""))
    about = {"event": label, "tool_call_id": getattr(event, "tool_call_id", None),
             "tool_name": call.tool_name if call else None,
             "tool_args": call.tool_args if call else None}
    if isinstance(event, Run.DecisionExpired) and event.action == TimeoutAction.ESCALATE:
        return {**about, "expired_at": event.expired_at, "escalated_to": event.escalated_to,
                "expires_at": event.expires_at}
    # A decision: the call it decided, and the decision as the run recorded it.
    if call is None or call.decision is None:
        return about
    decision = call.decision.as_dict()
    for header in ("request_key", "request_digest", "version"):
        del decision[header]
    return {**about, "decision": decision.pop("kind"), **decision}


def payload(app: RunService, *, delivery_id: str, event_type: str, position: int) -> bytes:
    """The body of the delivery of the event at ``position``, read back from the log
    (the same bytes whenever it is made)."""
    notifications = app.recorder.select_notifications(position, 1)
    event: Any = app.mapper.to_domain_event(notifications[0])
    run = app.get_run(event.originator_id, version=event.originator_version)
    body = {"id": delivery_id, "type": event_type, "occurred_at": event.timestamp,
            "position": position, "run_id": run.run_id, "agent_id": run.agent_id,
            "user_id": run.user_id, "session_id": run.session_id,
            "version": event.originator_version, "status": str(run.status),
            "data": event_data(event, run)}
    return json.dumps(body, default=plain, sort_keys=True, separators=(",", ":")).encode()
