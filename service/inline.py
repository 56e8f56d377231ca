"""Read models written in the events' own transaction: the inline lifecycle.

The store's recorder is eventsourcing's (SQLite or PostgreSQL), extended at the one
point where an insert transaction knows its events' positions and has not yet
committed: there it hands the saved domain events, with their positions, to the read
models that are written inline (``ReadModelsPort``, the projections' side), on the
same connection. One commit then carries a decision and the rows that show it: the
queue never lags its own writes, and no other transaction is opened, read back or
decoded.

The read models decide what they can apply (``apply``): each one whose tracked position
is just before these events (nothing committed in between: ``gap_free``) is written and
its position moved; one that is behind (being rebuilt, or another process wrote without
it) is left to its follower. Once the transaction has committed, ``committed`` is told
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

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

log = logging.getLogger("signoff.inline")

# (after, before): whether no event is stored at a position strictly between them.
GapFree = Callable[[int, int], bool]


class ReadModelsFailed(BaseException):
    """A read model failed inside the insert transaction. ``applied``: what to tell
    ``committed`` once the events are inserted without them."""

    def __init__(self, applied: Any) -> None:
        super().__init__("the read models written inline failed")
        self.applied = applied


class ReadModelsPort(Protocol):
    """What the recorder needs of the read models written inline."""

    def claim(self, cursor: Any) -> None:
        """Ask, on ``cursor``, for what ``apply`` reads first (where the read models
        are), as soon as the events' insert is sent: on PostgreSQL the question goes in
        the insert's own round trip."""

    def apply(self, cursor: Any, events: Sequence[tuple[int, Any]], gap_free: GapFree,
              ) -> Any:
        """Write what ``events`` ((position, domain event), in log order) change, on
        the ``cursor`` that ``claim`` asked on, inside the insert transaction. Returns
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
            batch.cursor = None  # a retried insert forgets an earlier try
            if self.read_models is not None:
                self.read_models.claim(cursor)
                batch.cursor = cursor

    def _apply(self, ids: Sequence[int] | None, kwargs: dict[str, Any],
               gap_free: GapFree) -> None:
        batch: InlineBatch | None = kwargs.get("inline")
        if batch is None or batch.cursor is None or not ids or self.read_models is None:
            return
        try:
            batch.applied = self.read_models.apply(
                batch.cursor, list(zip(ids, batch.events, strict=True)), gap_free)
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

        def gap_free(after: int, before: int) -> bool:
            c.execute(f"SELECT 1 FROM {self.events_table_name} "
                      "WHERE rowid > ? AND rowid < ? LIMIT 1", (after, before))
            return c.fetchone() is None

        self._claim(c, kwargs)
        self._apply(ids, kwargs, gap_free)
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
        between = SQL("SELECT 1 FROM {}.{} WHERE notification_id > %s AND "
                      "notification_id < %s LIMIT 1").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name))

        def gap_free(after: int, before: int) -> bool:
            cursor.execute(between, (after, before))
            return cursor.fetchone() is None

        self._apply(ids, kwargs, gap_free)
        return ids

    def _abandon(self, cursor: Any, failed: ReadModelsFailed) -> None:
        cursor.connection.close()  # rolled back by the server; the pool replaces it
        raise failed
