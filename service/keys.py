"""Issuing, listing and revoking API keys (``signoff keys ...``, ``/keys``)."""

from __future__ import annotations

import secrets
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import get_topic

from domain.keys import PREFIX, ApiKey, Role
from service.runs import RunService

KEY_CREATED = get_topic(ApiKey.Created)


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class KeyNotFound(Exception):
    """No key has this id or hint."""


def create_key(app: RunService, *, name: str, role: Role, created_by: str,
               agents: list[str] | None = None, tools: list[str] | None = None,
               groups: list[str] | None = None) -> tuple[str, ApiKey]:
    """A new key: its secret (shown once, never stored) and the key."""
    secret = new_secret()
    key = ApiKey.issue(secret, name=name, role=role, created_by=created_by,
                       agents=agents or None, tools=tools or None, groups=groups or None)
    app.save(key)
    return secret, key


def key_view(key: ApiKey) -> dict[str, Any]:
    return {"id": str(key.id), "name": key.name, "role": str(key.role), "hint": key.hint,
            "agents": key.agents, "tools": key.tools,
            "groups": getattr(key, "groups", None),  # None for a key loaded from a snapshot
            "created_by": key.created_by,
            "created_at": key.created_on, "revoked": key.revoked}


def list_keys(app: RunService) -> list[ApiKey]:
    """Every key ever issued, oldest first (a scan of the log for keys' first events)."""
    ids = [e.originator_id for _, e in app.log(topics=[KEY_CREATED])]
    return [app.repository.get(i) for i in ids]


def find_key(app: RunService, id_or_hint: str) -> ApiKey:
    """The key with this id, or else the one live key with this hint or name. An id names
    an aggregate of any kind (the store holds runs and webhooks too): only a key is one."""
    try:
        key_id = UUID(id_or_hint)
    except ValueError:
        pass
    else:
        try:
            key: Any = app.repository.get(key_id)
        except AggregateNotFoundError:
            key = None
        if not isinstance(key, ApiKey):
            raise KeyNotFound(f"no key {id_or_hint!r}")
        return key
    found = [k for k in list_keys(app) if k.hint == id_or_hint or k.name == id_or_hint]
    live = [k for k in found if not k.revoked] or found
    if len(live) != 1:
        raise KeyNotFound(f"no key {id_or_hint!r}" if not live else
                          f"{len(live)} keys match {id_or_hint!r}: give its id")
    return live[0]


def revoke_key(app: RunService, id_or_hint: str, *, revoked_by: str) -> ApiKey:
    key = find_key(app, id_or_hint)
    key.revoke(revoked_by=revoked_by)
    app.save(key)
    return key


def index_key_events(app: RunService) -> None:
    """A partial index over the events table holding only keys' first events: ``any_key``
    is then one index probe, not a scan of every run's events (1-2 s at 8.8M events on
    PostgreSQL). Run events never enter it, so it costs their inserts nothing."""
    table = getattr(app.recorder, "events_table_name", None)
    datastore = getattr(app.recorder, "datastore", None)
    if table is None or datastore is None:  # the in-memory store
        return
    with datastore.transaction(commit=True) as c:
        c.execute(f"CREATE INDEX IF NOT EXISTS {table}_key_created ON {table} "
                  f"(topic) WHERE topic = '{KEY_CREATED}'")


def any_key(app: RunService) -> bool:
    """Whether any key was ever issued (then the service requires authentication)."""
    table = getattr(app.recorder, "events_table_name", None)
    datastore = getattr(app.recorder, "datastore", None)
    if table is None or datastore is None:
        return any(True for _ in app.log(limit=1, topics=[KEY_CREATED]))
    with datastore.transaction(commit=False) as c:
        # The topic as a literal, so that the planner proves the partial index applies.
        c.execute(f"SELECT 1 FROM {table} WHERE topic = '{KEY_CREATED}' LIMIT 1")
        return c.fetchone() is not None
