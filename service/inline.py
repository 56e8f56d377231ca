"""Read models written in the events' own transaction: the inline lifecycle.

The store's recorder is eventsourcing's (SQLite or PostgreSQL), extended at the one
point where an insert transaction knows its events' positions and has not yet
committed: there it hands the saved domain events, with their positions, to the read
models that are written inline (``ReadModelsPort``, the projections' side), on the
same connection. One commit then carries a decision and the rows that show it: the
queue never lags its own writes, and no other transaction is opened, read back or
decoded.

The read models decide what they can apply (``apply``): each one whose tracked position
is just before these events is written and its position moved; one a little behind
(another process wrote without it, or its follower held it a moment) is first given
the events it missed, read in the same transaction (``between``: while the insert holds
the log's write lock, every event before its own is committed); one far behind (being
rebuilt) is left to its follower. Once the transaction has committed, ``committed`` is told
what was applied (to wake whoever waits on the read models).

A save never fails for a read model's sake. When a read model fails, ``apply`` raises
``ReadModelsFailed``: the whole transaction is rolled back (a ``BaseException``, so that
eventsourcing's insert, which catches ``Exception`` and goes on to commit, lets it
through), and the events are inserted again at once, without the read models; their
follower applies them, meets the fault and logs it. On PostgreSQL the connection is
closed first (psycopg's cache of prepared statements cannot be trusted after a pipeline
broke off in the middle), and the pool opens another.

An insert that carries no ``InlineBatch`` (an import, a copy) is recorded as
eventsourcing records it; its read models follow later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

log = logging.getLogger("signoff.inline")

# (after, before, limit): the events stored strictly between two positions, in log order
# (at most ``limit``).
Between = Callable[[int, int, int], Sequence[Notification]]


class ReadModelsFailed(BaseException):
    """A read model failed inside the insert transaction. ``applied``: what to tell
    ``committed`` once the events are inserted without them."""

    def __init__(self, applied: Any) -> None:
        super().__init__("the read models written inline failed")
        self.applied = applied


class ReadModelsPort(Protocol):
    """What the recorder needs of the read models written inline."""

    def claim(self, cursor: Any) -> Any:
        """Ask, on ``cursor``, for what ``apply`` reads first (where the read models
        are), as soon as the events' insert is sent: on PostgreSQL the question goes in
        the insert's own round trip. Returns what ``apply`` is given."""

    def apply(self, claim: Any, events: Sequence[tuple[int, Any]], between: Between,
              ) -> Any:
        """Write what ``events`` ((position, domain event), in log order) change, on
        the cursor that ``claim`` asked on, inside the insert transaction. Returns
        what was applied (passed to ``committed``), or None; ``ReadModelsFailed`` when a
        read model fails."""

    def committed(self, applied: Any) -> None:
        """The transaction that applied ``applied`` committed."""


@dataclass
class InlineBatch:
    """The domain events of one insert, in the order of its stored events; what the read
    models applied, once they have."""

    events: Sequence[Any]
    applied: Any = None
    cursor: Any = None  # the cursor the read models were claimed on
    claim: Any = None  # what their claim returned, for ``apply``
    failed: bool = False  # a read model failed: insert without them


class _InlineRecorder:
    read_models: ReadModelsPort | None = None

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any,
                      ) -> Sequence[int] | None:
        batch: InlineBatch | None = kwargs.get("inline")
        try:
            # A mixin: the recorder's own insert follows it in the method order.
            ids: Sequence[int] | None = super().insert_events(  # type: ignore[misc]
                stored_events, **kwargs)
        except BaseException:
            if batch is None or not batch.failed:
                raise
            log.exception("the read models written with the events failed; the events "
                          "are written without them, and their follower applies them")
            ids = super().insert_events(  # type: ignore[misc]  # the mixin, as above
                stored_events, **kwargs)
        if batch is not None and batch.applied is not None and self.read_models is not None:
            self.read_models.committed(batch.applied)
        return ids

    def _claim(self, cursor: Any, kwargs: dict[str, Any]) -> None:
        batch: InlineBatch | None = kwargs.get("inline")
        if batch is not None and not batch.failed:
            batch.applied = batch.cursor = None  # a retried insert forgets an earlier try
            if self.read_models is not None:
                batch.claim = self.read_models.claim(cursor)
                batch.cursor = cursor

    def _apply(self, ids: Sequence[int] | None, kwargs: dict[str, Any],
               between: Between) -> None:
        batch: InlineBatch | None = kwargs.get("inline")
        if batch is None or batch.cursor is None or not ids or self.read_models is None:
            return
        try:
            batch.applied = self.read_models.apply(
                batch.claim, list(zip(ids, batch.events, strict=True)), between)
        except ReadModelsFailed as failed:
            cursor = batch.cursor
            batch.failed, batch.applied, batch.cursor = True, failed.applied, None
            self._abandon(cursor, failed)

    def _abandon(self, cursor: Any, failed: ReadModelsFailed) -> None:
        """Roll the transaction back (raising through eventsourcing's insert)."""
        raise failed


class InlineSQLiteRecorder(_InlineRecorder, SQLiteApplicationRecorder):
    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)

        def between(after: int, before: int, limit: int) -> list[Notification]:
            c.execute(f"SELECT rowid, originator_id, originator_version, topic, state "
                      f"FROM {self.events_table_name} WHERE rowid > ? AND rowid < ? "
                      "ORDER BY rowid LIMIT ?", (after, before, limit))
            return [Notification(id=r["rowid"], originator_id=self.convert_originator_id(
                r["originator_id"]), originator_version=r["originator_version"],
                topic=r["topic"], state=r["state"]) for r in c.fetchall()]

        self._claim(c, kwargs)
        self._apply(ids, kwargs, between)
        return ids


class InlinePostgresRecorder(_InlineRecorder, PostgresApplicationRecorder):
    """The claim is sent in the insert's pipeline, before eventsourcing waits for the
    insert's answer: the read models cost the events table's lock one round trip more
    (their writes), not two. (A claim is one statement that cannot wait for a lock.)"""

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        super()._insert_stored_events(curs, stored_events, **kwargs)
        self._claim(curs.connection.cursor(), kwargs)

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        cursor = curs.connection.cursor()
        select = SQL("SELECT * FROM {}.{} WHERE notification_id > %s AND notification_id < %s "
                     "ORDER BY notification_id LIMIT %s").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name))

        def between(after: int, before: int, limit: int) -> list[Notification]:
            cursor.execute(select, (after, before, limit))
            return [Notification(id=r["notification_id"], originator_id=r["originator_id"],
                                 originator_version=r["originator_version"], topic=r["topic"],
                                 state=bytes(r["state"])) for r in cursor.fetchall()]

        self._apply(ids, kwargs, between)
        return ids

    def _abandon(self, cursor: Any, failed: ReadModelsFailed) -> None:
        cursor.connection.close()  # rolled back by the server; the pool replaces it
        raise failed
