"""Webhook subscriptions: who is told of what. Each subscription is an aggregate in the
same event store as the runs (like API keys), so creating and deleting one is recorded,
hash-chained and anchored like everything else.

A subscription names a URL and the event types it wants (``EVENT_TYPES``, or ``*``).
Its secret is not in its events: the log is exported to auditors, and whoever holds the
secret can forge deliveries. The secret is kept beside the deliveries (see
projections/webhooks.py); the events only carry its first characters (``hint``).

What is signed, and how (``signature``): ``Signoff-Signature: t=<unix seconds>,v1=<hex>``
where the hex is HMAC-SHA256, keyed with the secret, of ``"<t>.<raw body>"`` (as Stripe
does): a receiver recomputes it, compares in constant time, and refuses an old ``t``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from domain.chain import Chained
from domain.run import Run
from domain.values import TimeoutAction

# What a subscriber may ask for, and the events of a run that make each one.
EVENT_TYPES = ("run.paused", "decision.made", "decision.escalated", "run.completed",
               "run.failed", "run.cancelled")
ALL = "*"
PREFIX = "whsec_"  # the start of a secret signoff makes
EVENT_OF: dict[type, str] = {
    Run.RunPaused: "run.paused",
    Run.ToolConfirmed: "decision.made",
    Run.ToolRejected: "decision.made",
    Run.ExternalResultProvided: "decision.made",
    Run.UserInputProvided: "decision.made",
    Run.DecisionExpired: "decision.made",
    Run.RunCompleted: "run.completed",
    Run.RunFailed: "run.failed",
    Run.RunCancelled: "run.cancelled",
}


def event_type(event: object) -> str | None:
    """The webhook event type a run's event makes, if any. An expiry that escalates the
    call decides nothing: it is ``decision.escalated``."""
    if isinstance(event, Run.DecisionExpired) and event.action == TimeoutAction.ESCALATE:
        return "decision.escalated"
    return EVENT_OF.get(type(event))


class WebhookError(Exception):
    """A command the subscription does not allow."""


class WebhookDeleted(WebhookError):
    """The subscription is already deleted."""


class UnknownEventType(WebhookError):
    """A subscription asked for an event type that does not exist."""


def check_event_types(event_types: Iterable[str]) -> list[str]:
    """The event types as given (order kept, duplicates dropped), or ``UnknownEventType``."""
    out: list[str] = []
    for t in event_types:
        if t != ALL and t not in EVENT_TYPES:
            raise UnknownEventType(f"no event type {t!r} (there are: {', '.join(EVENT_TYPES)},"
                                   f" or {ALL} for all)")
        if t not in out:
            out.append(t)
    if not out:
        raise UnknownEventType("name at least one event type (or * for all)")
    return out


def wants(event_types: Iterable[str], event_type: str) -> bool:
    return any(t in (ALL, event_type) for t in event_types)


class Webhook(Chained):
    class Created(Chained.Created):
        url: str
        event_types: list[str]
        hint: str  # the secret's first characters, to tell which secret a receiver has
        created_by: str

    class Deleted(Chained.Event):
        deleted_by: str

        def apply(self, webhook: Webhook) -> None:
            webhook.deleted = True

    def __init__(self, url: str, event_types: list[str], hint: str, created_by: str) -> None:
        self.url = url
        self.event_types = event_types
        self.hint = hint
        self.created_by = created_by
        self.deleted = False

    @classmethod
    def subscribe(cls, url: str, event_types: Iterable[str], *, secret: str,
                  created_by: str) -> Webhook:
        webhook: Webhook = cls._create(cls.Created, url=url,
                                       event_types=check_event_types(event_types),
                                       hint=hint(secret), created_by=created_by)
        return webhook

    def delete(self, *, deleted_by: str) -> None:
        if self.deleted:
            raise WebhookDeleted(f"webhook {self.id} is already deleted")
        self.trigger_event(self.Deleted, deleted_by=deleted_by)


def hint(secret: str) -> str:
    """What a list shows of a secret: signoff's prefix and 4 characters (4 of a secret
    given by the caller)."""
    return secret[:len(PREFIX) + 4] if secret.startswith(PREFIX) else secret[:4]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Signoff-Signature`` header of a delivery of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def backoff(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): ``base * 2**(n-1)``,
    at most ``cap``, scaled by ``jitter`` (a number in [0.5, 1], drawn by the caller), so
    that many deliveries failing together do not all come back at once."""
    return float(min(cap, base * 2 ** (attempt - 1)) * jitter)
