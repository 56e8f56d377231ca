"""Read models written in the events' own transaction: the inline lifecycle.

The store's recorder is eventsourcing's (SQLite or PostgreSQL), extended at the one
point where an insert transaction knows its events' positions and has not yet
committed: there it hands the saved domain events, with their positions, to the read
models that are written inline (``ReadModelsPort``, the projections' side), on the
same cursor. One commit then carries a decision and the rows that show it: the queue
never lags its own writes, and no other transaction is opened, read back or decoded.

The read models decide what they can apply (``apply``): each one whose tracked position
is just before these events (nothing committed in between: ``gap_free``) is written and
its position moved; one that is behind (being rebuilt, or another process wrote without
it) is left to its follower. What they write goes under a savepoint: if it fails, the
savepoint is rolled back, the events still commit, and the follower applies them later.
A save never fails for a read model's sake. Once the transaction has committed,
``committed`` is told what was applied (to wake whoever waits on the read models).

An insert that carries no ``InlineBatch`` (an import, a save made without the group
store) is recorded as eventsourcing records it; its read models follow later.
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


class ReadModelsPort(Protocol):
    """What the recorder needs of the read models written inline."""

    def apply(self, cursor: Any, events: Sequence[tuple[int, Any]], gap_free: GapFree,
              ) -> Any:
        """Write what ``events`` ((position, domain event), in log order) change, on
        ``cursor``, inside the insert transaction. Returns what was applied (passed to
        ``committed``), or None. Never raises for a read model's fault."""

    def committed(self, applied: Any) -> None:
        """The transaction that applied ``applied`` committed."""


@dataclass
class InlineBatch:
    """The domain events of one insert, in the order of its stored events; what the read
    models applied, once they have."""

    events: Sequence[Any]
    applied: Any = None


class _InlineRecorder:
    read_models: ReadModelsPort | None = None

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any,
                      ) -> Sequence[int] | None:
        # A mixin: the recorder's own insert follows it in the method order.
        ids: Sequence[int] | None = super().insert_events(  # type: ignore[misc]
            stored_events, **kwargs)
        batch: InlineBatch | None = kwargs.get("inline")
        if batch is not None and batch.applied is not None and self.read_models is not None:
            self.read_models.committed(batch.applied)
        return ids

    def _apply(self, cursor: Any, ids: Sequence[int] | None, kwargs: dict[str, Any],
               gap_free: GapFree) -> None:
        batch: InlineBatch | None = kwargs.get("inline")
        batch_applied = None
        if batch is not None and ids and self.read_models is not None:
            batch_applied = self.read_models.apply(
                cursor, list(zip(ids, batch.events, strict=True)), gap_free)
        if batch is not None:
            batch.applied = batch_applied  # a retried insert forgets an earlier attempt


class InlineSQLiteRecorder(_InlineRecorder, SQLiteApplicationRecorder):
    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)

        def gap_free(after: int, before: int) -> bool:
            c.execute(f"SELECT 1 FROM {self.events_table_name} "
                      "WHERE rowid > ? AND rowid < ? LIMIT 1", (after, before))
            return c.fetchone() is None

        self._apply(c, ids, kwargs, gap_free)
        return ids


class InlinePostgresRecorder(_InlineRecorder, PostgresApplicationRecorder):
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

        self._apply(cursor, ids, kwargs, gap_free)
        return ids
