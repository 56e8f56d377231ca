"""Recording what a client changes about a session (domain/sessions.py): load the
session's aggregate (or open one), record the change, save it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.sessions import Session, session_key
from service.runs import RunService

ATTEMPTS = 3


def load_session(app: RunService, session_id: str) -> Session:
    """The session's aggregate, or a new one (not saved) when nothing was recorded yet."""
    try:
        session: Any = app.repository.get(session_key(session_id))
    except AggregateNotFoundError:
        return Session.open(session_id)
    if not isinstance(session, Session):  # pragma: no cover - a uuid5 of our namespace
        raise TypeError(f"{session_key(session_id)} is not a session")
    return session


def record(app: RunService, session_id: str, change: Callable[[Session], None]) -> int:
    """Record ``change`` on the session and save it; the log position of its last event.

    A change holds no condition on what was recorded before it, so when another request
    saved the session first (``IntegrityError``) it is recorded again after that one."""
    for attempt in range(1, ATTEMPTS + 1):
        session = load_session(app, session_id)
        change(session)
        try:
            recordings = app.save(session)
        except IntegrityError:
            if attempt == ATTEMPTS:
                raise
            continue
        return int(recordings[-1].notification.id)
    raise AssertionError("unreachable")  # pragma: no cover
