"""Issuing, listing and revoking API keys (``signoff keys ...``, ``/keys``).

A key's name is its holder's identity: the actor recorded for what the holder does, and,
for a client, whose runs are its own (``service/access.py`` compares names). So a name
is held by one live key at a time (revoking a key frees its name), and the names
signoff records for itself (``SYSTEM``, an expired decision) and for a caller without
authentication (``ANONYMOUS``) are never a key's.

Two issues of one name at the same time (two admins, two workers) may both find it free
before either saves. So each checks again once its key is in the log, whose order is
the order of commits: a key is kept only if no live key of the same name comes before
it. The later one always sees the earlier, revokes its own key and answers
``KeyNameTaken``; its secret is never shown. Between that save and that revocation (a
few milliseconds, or for good if its process dies in them) the name has a second live
key, which nobody holds.
"""

from __future__ import annotations

import secrets
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.errors import KeyRevoked
from domain.keys import KEY_CREATED, PREFIX, ApiKey, Role
from domain.values import SYSTEM
from service.auth import ANONYMOUS, reserved
from service.runs import RunService


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class KeyNotFound(Exception):
    """No key has this id or hint."""


class KeyNameTaken(Exception):
    """A live key already has this name (409)."""


class KeyRefused(ValueError):
    """A key that cannot be issued as asked: a reserved name, or an empty scope (422)."""


def create_key(app: RunService, *, name: str, role: Role, created_by: str,
               agents: list[str] | None = None, tools: list[str] | None = None,
               groups: list[str] | None = None) -> tuple[str, ApiKey]:
    """A new key: its secret (shown once, never stored) and the key. ``agents`` and
    ``tools`` limit a reviewer (None: all; an empty list is ``KeyRefused``, as it would
    leave the reviewer nothing); ``groups`` are the reviewer's (None or empty: none)."""
    check_name(name)
    for scope, given in (("agents", agents), ("tools", tools)):
        if given is not None and not given:
            raise KeyRefused(empty_scope(scope))
    if live_keys_named(app, name):
        raise KeyNameTaken(name_taken(name))
    secret = new_secret()
    key = ApiKey.issue(secret, name=name, role=role, created_by=created_by,
                       agents=agents, tools=tools, groups=groups or None)
    app.save(key)
    first = live_keys_named(app, name)[:1]
    if first and first[0].id != key.id:  # another issue of this name came first
        _withdraw(app, key.id, by=created_by)
        raise KeyNameTaken(name_taken(name))
    return secret, key


def check_name(name: str) -> None:
    """``KeyRefused`` for a name signoff keeps for its own actors (in any case)."""
    if reserved(name):
        raise KeyRefused(f"the name {name!r} is reserved: signoff records {SYSTEM!r} for "
                         f"what it does itself (an expired decision) and {ANONYMOUS!r} "
                         "for a caller without authentication")


def name_taken(name: str) -> str:
    return (f"a live key is already named {name!r}: a name is who the key's holder is "
            "(the actor recorded, the user whose runs a client reads); choose another, "
            "or revoke that key first")


def empty_scope(scope: str) -> str:
    return (f"an empty list of {scope} would limit the reviewer to none: leave {scope} "
            "out (or null) for all of them, or name at least one")


def live_keys_named(app: RunService, name: str) -> list[ApiKey]:
    """The keys named ``name`` not revoked, in the order they were issued."""
    ids = [e.originator_id for _, e in app.log(topics=[KEY_CREATED])
           if getattr(e, "name", None) == name]
    keys: list[ApiKey] = [app.repository.get(i) for i in ids]
    return [k for k in keys if not k.revoked]


def _withdraw(app: RunService, key_id: UUID, *, by: str) -> None:
    """Revoke a key just issued whose name turned out to be taken (unless revoked already)."""
    key: ApiKey = app.repository.get(key_id)
    try:
        key.revoke(revoked_by=by)
        app.save(key)
    except (KeyRevoked, IntegrityError):  # revoked meanwhile (by an admin): it is
        pass


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
