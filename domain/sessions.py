"""Sessions: the runs a client starts with the same ``session_id`` (Agno's sessions).

A session's runs, its user, its agent and its default name come from the runs' own
events (``Run.RunStarted`` carries ``session_id``). What a client changes about the
session itself (creates it before any run, renames it, changes its state or metadata,
deletes it) is recorded on a ``Session`` aggregate of its own, in the same log, keyed by
the session id (``session_key``): nothing is written to a read model alone.

A deleted session's runs stay in the log (the audit trail keeps them); the session no
longer lists, and a run started later with the same id begins a new session
(projections/sessions.py applies the events in log order).

The aggregate holds no rules: each command records what the client asked, and who. The
service checks first that the caller may see the session (api/routes/sessions.py).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from domain.chain import Chained

Json = dict[str, Any]

_NAMESPACE = UUID("0d5b8f1e-3c1a-4f57-9f52-7a2d4c9b6e10")


def session_key(session_id: str) -> UUID:
    """The id of the ``Session`` aggregate of the session ``session_id``."""
    return uuid5(_NAMESPACE, session_id)


class Session(Chained):
    """The changes a client made to one session, hash-chained like every stream."""

    class Opened(Chained.Created):
        """The session's own record begins (its first change follows in the same save)."""

        session_id: str

    class Defined(Chained.Event):
        """Created before any run (``POST /sessions``), or again after a deletion."""

        session_id: str
        user_id: str | None
        agent_id: str | None
        session_name: str | None
        session_state: Json | None
        metadata: Json | None
        defined_by: str

    class Updated(Chained.Event):
        """Renamed, or changed (``PATCH``): the fields given; None leaves one as it is."""

        session_id: str
        session_name: str | None
        session_state: Json | None
        metadata: Json | None
        summary: Json | None
        updated_by: str

    class Deleted(Chained.Event):
        session_id: str
        deleted_by: str

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    @classmethod
    def open(cls, session_id: str) -> Session:
        session: Session = cls._create(cls.Opened, id=session_key(session_id),
                                       session_id=session_id)
        return session

    def define(self, *, user_id: str | None, agent_id: str | None, session_name: str | None,
               session_state: Json | None, metadata: Json | None, by: str) -> None:
        self.trigger_event(self.Defined, session_id=self.session_id, user_id=user_id,
                           agent_id=agent_id, session_name=session_name,
                           session_state=session_state, metadata=metadata, defined_by=by)

    def update(self, *, by: str, session_name: str | None = None,
               session_state: Json | None = None, metadata: Json | None = None,
               summary: Json | None = None) -> None:
        self.trigger_event(self.Updated, session_id=self.session_id,
                           session_name=session_name, session_state=session_state,
                           metadata=metadata, summary=summary, updated_by=by)

    def delete(self, *, by: str) -> None:
        self.trigger_event(self.Deleted, session_id=self.session_id, deleted_by=by)
